"""Dropping root once the switch is open: ``[switch] user`` / ``group``.

Run as root, vswitch opens its TAPs, packet sockets, raw ICMP socket and listening sockets
(forwards, metrics, the control socket), then changes to the configured user and keeps only
the capabilities the running daemon still uses.

Rule 1: the drop happens only as root and only with ``[switch] user``; as that user already,
        nothing changes; as anyone else, start-up stops (only root may change user).
Rule 2: a capability is kept only for what the running daemon does after the drop
        (``needed_capabilities``), never for what start-up did:
        - the kernel checks CAP_NET_RAW when a packet or raw socket is *made*; every one is
          made before the drop (ports, raw uplink, the host uplink's shared raw ICMP socket)
          and none is remade, so none is kept for them;
        - reading a device's offloads (``ethtool -k``'s ioctls) needs no capability;
        - CAP_NET_ADMIN is kept only to delete, at exit, the TAPs vswitch created for tap
          ports that are not ``persistent`` (``ip link delete``);
        - CAP_NET_BIND_SERVICE is not kept: forwards in the config are bound before the
          drop; one added at run time below ``net.ipv4.ip_unprivileged_port_start`` is
          refused, saying so.
Rule 3: the order is the kernel's: PR_SET_KEEPCAPS; the bounding set cut to the kept ones
        (needs CAP_SETPCAP, so before the uid changes); setgroups, setresgid, setresuid;
        capset (effective = permitted = inheritable = the kept ones, and ambient too, so the
        ``ip`` that deletes a TAP gets them); PR_SET_NO_NEW_PRIVS.
Rule 4: what the daemon writes after the drop becomes the user's at the drop: the lease file,
        and its directory (the journal's rewrite renames into it) when it is this switch's own
        under the state dir (created 0700 for the user).  The directories every instance
        shares (the state and runtime dirs themselves) are never given away: a lease file
        directly in the state dir stops start-up naming ``dhcp.lease_file``, as does another
        directory the user cannot write; a socket in a directory the user may not write stays
        behind at exit (a warning says so; the next start removes it).
Rule 5: one log line names the user, the group and the capabilities kept, each with why.
"""

from __future__ import annotations

import ctypes
import grp
import logging
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vswitch.config import Config

log = logging.getLogger("vswitch")

#: ``linux/capability.h``
CAPS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
_CAP_VERSION_3 = 0x20080522
#: ``linux/prctl.h``
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


@dataclass(frozen=True, slots=True)
class Drop:
    """Who the daemon becomes and what it keeps (Rule 2: capability name -> why)."""

    uid: int
    gid: int
    keep: dict[str, str] = field(default_factory=dict)

    @property
    def mask(self) -> int:
        return sum(1 << CAPS[name] for name in self.keep)


def needed_capabilities(config: Config, created_taps: list[str]) -> dict[str, str]:
    """Rule 2: the capabilities the running daemon still uses, each with why.
    ``created_taps``: the tap ports' TAPs this run created."""
    keep: dict[str, str] = {}
    doomed = [pc.name for pc in config.ports
              if pc.type == "tap" and not pc.persistent and pc.name in created_taps]
    if doomed:
        keep["CAP_NET_ADMIN"] = (f"to delete the TAPs it created ({', '.join(doomed)}) at "
                                 "exit; persistent = true drops it")
    return keep


def plan(config: Config, created_taps: list[str]) -> Drop | None:
    """Rule 1: the drop to make, or None."""
    if config.user is None:
        return None
    gid = config.group if config.group is not None else os.getegid()
    if os.geteuid() == config.user:
        return None
    if os.geteuid() != 0:
        raise SystemExit(f"vswitch: switch.user: changing to {user_name(config.user)} needs "
                         "root; run as root, or as that user without [switch] user")
    return Drop(config.user, gid, needed_capabilities(config, created_taps))


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def writable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether ``uid`` with groups ``gids`` may create and rename files in directory
    ``path`` (the mode bits; no ACLs)."""
    st = path.stat()
    if st.st_uid == uid:
        return st.st_mode & 0o300 == 0o300
    if st.st_gid in gids:
        return st.st_mode & 0o030 == 0o030
    return st.st_mode & 0o003 == 0o003


def hand_over(config: Config, drop: Drop) -> None:
    """Rule 4: give the user what it writes after the drop."""
    from vswitch.config import state_dir

    net = config.network
    if net is not None and net.dhcp and net.lease_file:
        lease = Path(net.lease_file)
        if lease.parent == state_dir():  # shared by every instance: never given away
            raise SystemExit(
                f"vswitch: dhcp.lease_file: {lease} is in {state_dir()}, which every vswitch "
                "shares; with switch.user give this switch a directory of its own, e.g. "
                f'lease_file = "{state_dir() / config.name / "leases"}" (vswitch creates it '
                "for that user)")
        if lease.parent.parent == state_dir() and not lease.parent.exists():
            lease.parent.mkdir(mode=0o700)  # this switch's own directory
            os.chown(lease.parent, drop.uid, drop.gid)
        elif not writable_by(lease.parent, drop.uid, {drop.gid}):
            raise SystemExit(f"vswitch: dhcp.lease_file: {lease.parent} is not writable by "
                             f"{user_name(drop.uid)}, which vswitch changes to (switch.user); "
                             "give it that directory or put the lease file elsewhere")
        for kept in lease.parent.glob(f"{lease.name}*"):
            os.chown(kept, drop.uid, drop.gid)
    for path in (config.socket, *(pc.path for pc in config.ports if pc.path)):
        where = Path(path).parent  # the shared runtime directory is never given away either
        if where.is_dir() and not writable_by(where, drop.uid, {drop.gid}):
            log.warning("%s stays behind at exit: %s is not writable by %s", path, where,
                        user_name(drop.uid))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def change_user(drop: Drop) -> None:
    """Rule 3: become ``drop.uid``/``drop.gid`` keeping ``drop.keep`` only."""
    libc = _libc()
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    _check(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        if not drop.mask >> cap & 1:
            _check(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    os.setgroups([drop.gid])
    os.setresgid(drop.gid, drop.gid, drop.gid)
    os.setresuid(drop.uid, drop.uid, drop.uid)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = data[0].inheritable = drop.mask
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT)")
    for name in drop.keep:
        _check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAPS[name], 0, 0),
               f"prctl(PR_CAP_AMBIENT_RAISE, {name})")
    _check(prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def warn_ping(config: Config, drop: Drop) -> None:
    """The host uplink chose ping sockets as root (root's group is in
    ``net.ipv4.ping_group_range``), but the new group may not open them: say so once.  (As
    root without ping sockets it opened its one raw ICMP socket, which keeps working.)"""
    if config.uplink is None or config.uplink.type != "host":
        return
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except (OSError, ValueError):
        return
    if low <= 0 <= high and not low <= drop.gid <= high:
        log.warning("guests' ping to the outside will fail: group %s (%d) is outside "
                    "net.ipv4.ping_group_range %d %d", group_name(drop.gid), drop.gid, low, high)


def drop_privileges(config: Config, created_taps: list[str]) -> Drop | None:
    """Rules 1-5, called by the daemon once everything is open."""
    drop = plan(config, created_taps)
    if drop is None:
        return None
    hand_over(config, drop)
    import vswitch.topology  # noqa: F401  imported lazily; the code may be root's alone
    try:
        change_user(drop)
    except OSError as exc:
        raise SystemExit(f"vswitch: switch.user: cannot change to {user_name(drop.uid)}: "
                         f"{exc}") from exc
    warn_ping(config, drop)
    kept = "; ".join(f"{name} ({why})" for name, why in drop.keep.items()) or "none"
    log.info("running as user %s (%d), group %s (%d); capabilities kept: %s",
             user_name(drop.uid), drop.uid, group_name(drop.gid), drop.gid, kept)
    return drop
