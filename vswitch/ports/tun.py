"""Host plumbing for TAP-based ports: open with offloads, ownership, persistence, link setup.

pytun opens the device; the ioctls it does not wrap (offloads, owner, vnet header size) are
issued on its fd here.  Values from ``linux/if_tun.h``.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import struct
import subprocess
from pathlib import Path

import pytun

TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
#: What we ask the kernel to hand us unsegmented: partial checksums and TCP super-frames.
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN

TAP_FLAGS = pytun.IFF_TAP | pytun.IFF_NO_PI


def open_tap(name: str, vnet: bool) -> pytun.TunTapDevice:
    """Open (creating if needed) TAP ``name``; with ``vnet``, set up the virtio-net header."""
    flags = TAP_FLAGS | (pytun.IFF_VNET_HDR if vnet else 0)
    try:
        dev = pytun.TunTapDevice(name=name, flags=flags)
    except pytun.Error as exc:
        raise OSError(f"cannot open TAP {name!r}: {exc} (needs CAP_NET_ADMIN, or the device is "
                      "held by another process)") from exc
    if vnet:
        fcntl.ioctl(dev.fileno(), TUNSETVNETHDRSZ, struct.pack("i", 10))
        fcntl.ioctl(dev.fileno(), TUNSETOFFLOAD, OFFLOADS)
    return dev


def make_persistent_tap(name: str, owner: int | None, group: int | None) -> bool:
    """Create persistent TAP ``name`` for qemu to open; True if it was created now."""
    existed = Path("/sys/class/net", name).exists()
    dev = open_tap(name, vnet=True)
    try:
        if owner is not None:
            fcntl.ioctl(dev.fileno(), TUNSETOWNER, owner)
        if group is not None:
            fcntl.ioctl(dev.fileno(), TUNSETGROUP, group)
        fcntl.ioctl(dev.fileno(), TUNSETPERSIST, 1)
    finally:
        dev.close()  # qemu must be able to open it: a single-queue TAP takes one reader
    return not existed


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def delete_link(name: str) -> None:
    subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)


def disable_ipv6(name: str) -> None:
    """Turn IPv6 off on host interface ``name`` (no link-local address, no RS/MLD from it)."""
    path = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    if path.exists():
        path.write_text("1")


def link_setup(name: str, mtu: int, ipv6: bool, up: bool = True) -> None:
    """MTU, IPv6 and up state of a host interface vswitch made.

    A TAP is an ordinary host interface: the host would give it an IPv6 link-local address and
    send router solicitations and MLD into the guest network, so IPv6 is off on guest-facing
    devices (its router solicitations would reach every guest).
    """
    if not ipv6:
        disable_ipv6(name)
    cmd = ["ip", "link", "set", "dev", name, "mtu", str(mtu)]
    if up:
        cmd.append("up")
    run_ip(cmd)


def run_ip(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(cmd)}: {done.stderr.strip()}")


def link_is_up(name: str) -> bool:
    """Administratively up (IFF_UP in /sys/class/net/NAME/flags)."""
    try:
        return int(Path(f"/sys/class/net/{name}/flags").read_text(), 16) & 0x1 != 0
    except (OSError, ValueError):
        return False


def has_carrier(name: str) -> bool:
    try:
        return Path(f"/sys/class/net/{name}/carrier").read_text().strip() == "1"
    except OSError:  # reading carrier of a down or missing link fails with EINVAL / ENOENT
        return False


def resolve_user(value: str | int | None) -> int | None:
    """A uid from a uid or a user name (KeyError if there is no such user)."""
    if value is None or isinstance(value, int):
        return value
    return int(value) if value.isdigit() else pwd.getpwnam(value).pw_uid


def resolve_group(value: str | int | None) -> int | None:
    """A gid from a gid or a group name (KeyError if there is no such group)."""
    if value is None or isinstance(value, int):
        return value
    return int(value) if value.isdigit() else grp.getgrnam(value).gr_gid


def set_nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)
