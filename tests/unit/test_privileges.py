"""Who may ask the control socket what (vswitch.control Rules 1-2), the capabilities kept
after dropping root (vswitch.privileges Rule 2), and the [switch] user/group keys."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from vswitch.config import ConfigError, parse_config
from vswitch.control import READ_ONLY, ControlServer, allowed
from vswitch.privileges import needed_capabilities, plan, writable_by

OWNER, GROUP = 4100, 4200  # no such user or group here


@pytest.mark.parametrize("cmd", sorted(READ_ONLY))
def test_reading_needs_root_the_owner_or_the_group(cmd):
    assert allowed(0, {0}, cmd, OWNER, GROUP) == (True, "")
    assert allowed(OWNER, {OWNER}, cmd, OWNER, GROUP) == (True, "")
    assert allowed(3000, {3000, GROUP}, cmd, OWNER, GROUP) == (True, "")  # a supplementary one
    assert allowed(3000, {GROUP}, cmd, OWNER, GROUP) == (True, "")  # its primary group
    ok, why = allowed(3000, {3000}, cmd, OWNER, GROUP)
    assert not ok
    assert why.startswith(f"{cmd!r} needs root, the daemon's user (")
    assert "gid 4200 (the control socket's); you are uid 3000" in why


def test_reading_without_a_socket_group_is_root_and_the_owner_only():
    ok, why = allowed(3000, {3000, GROUP}, "show", OWNER, None)
    assert not ok and "set as [switch] socket_group (none is)" in why
    assert allowed(OWNER, set(), "show", OWNER, None)[0]


@pytest.mark.parametrize("cmd", ["forward", "something-new"])
def test_changes_need_root_or_the_owner(cmd):
    assert allowed(0, set(), cmd, OWNER, GROUP)[0]
    assert allowed(OWNER, set(), cmd, OWNER, GROUP)[0]
    ok, why = allowed(3000, {GROUP}, cmd, OWNER, GROUP)
    assert not ok
    assert why == (f"{cmd!r} changes the switch: it needs root or the daemon's user "
                   "(uid 4100); you are uid 3000")


def test_top_and_every_reading_command_are_read_only():
    assert READ_ONLY == {"show", "trace", "capture", "explain", "ping"}


async def test_the_server_checks_each_request_against_the_peer(tmp_path):
    """Over a real socket: this process is the peer; as the owner it may do anything, as a
    stranger (the owner set to someone else) it may not change the switch."""
    calls: list[str] = []
    me = os.geteuid()
    stranger_owner = me + 1 if me != 0 else None
    path = str(tmp_path / "c.sock")
    server = ControlServer(path, {"show": lambda r: calls.append("show") or [],
                                  "forward": lambda r: calls.append("forward") or {}},
                           owner=stranger_owner, group=os.getegid() if me != 0 else None)
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"cmd": "show", "what": "ports"}\n{"cmd": "forward"}\n')
        show = json.loads(await reader.readline())
        forward = json.loads(await reader.readline())
        writer.close()
    finally:
        server.close()
    assert show["ok"], show
    if me == 0:  # root may do anything
        assert forward["ok"] and calls == ["show", "forward"]
    else:
        assert not forward["ok"] and calls == ["show"]
        assert forward["error"].startswith("permission denied: 'forward' changes the switch")
    assert not Path(path).exists()


def test_socket_mode_follows_the_group(tmp_path):
    async def mode(group: int | None) -> int:
        path = str(tmp_path / f"{group}.sock")
        server = ControlServer(path, {}, group=group)
        await server.start()
        try:
            return os.stat(path).st_mode & 0o777
        finally:
            server.close()

    assert asyncio.run(mode(None)) == 0o600
    assert asyncio.run(mode(os.getegid())) == 0o660


def test_user_and_groups_resolve_at_load():
    c = parse_config({"switch": {"user": "nobody", "socket_group": "0"}})
    assert c.user == 65534 and c.group == 65534 and c.socket_group == 0  # nobody's own group
    c = parse_config({"switch": {"user": 65534, "group": "nogroup"}})
    assert (c.user, c.group) == (65534, 65534)
    assert parse_config({}).user is None


@pytest.mark.parametrize("switch, message", [
    ({"user": "no-such-user-here"}, "switch.user: no such user 'no-such-user-here' on this host"),
    ({"user": "nobody", "group": "no-such-group"},
     "switch.group: no such group 'no-such-group' on this host"),
    ({"socket_group": "no-such-group"},
     "switch.socket_group: no such group 'no-such-group' on this host"),
    ({"group": "nogroup"}, "switch.group: needs switch.user"),
    ({"user": 4241}, "switch.group: missing; user 4241 has no entry"),
    ({"user": True}, "switch.user: must be a user name or number"),
])
def test_bad_identities_name_their_key(switch, message):
    with pytest.raises(ConfigError) as exc:
        parse_config({"switch": switch})
    assert str(exc.value).startswith(message)


def test_capabilities_kept_are_only_for_what_runs_after_the_drop():
    ports = [{"name": "a", "type": "attach", "interface": "eth1"},
             {"name": "i", "type": "internal"},
             {"name": "t", "type": "tap"},
             {"name": "p", "type": "tap", "persistent": True}]
    c = parse_config({"switch": {"user": "nobody"}, "port": ports, "network": {},
                      "uplink": {"type": "host"},
                      "forward": [{"proto": "tcp", "port": 80, "to": "192.168.122.10:80"}]})
    # packet sockets, the raw ICMP socket and port 80 are opened before: nothing for them
    assert needed_capabilities(c, []) == {}
    # a TAP this run created and must delete at exit: CAP_NET_ADMIN, saying why
    keep = needed_capabilities(c, ["t", "p"])
    assert list(keep) == ["CAP_NET_ADMIN"] and "(t)" in keep["CAP_NET_ADMIN"]


def test_plan_only_as_root_and_only_with_a_user(monkeypatch):
    c = parse_config({"switch": {"user": "nobody"}})
    assert plan(parse_config({}), []) is None
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    assert plan(c, []) is None  # that user already
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match="switch.user: changing to nobody needs root"):
        plan(c, [])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    drop = plan(c, [])
    assert drop is not None and (drop.uid, drop.gid, drop.keep, drop.mask) == (65534, 65534,
                                                                                {}, 0)


def test_writable_by_reads_the_mode_bits(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    st = d.stat()
    d.chmod(0o700)
    assert writable_by(d, st.st_uid, set())
    assert not writable_by(d, st.st_uid + 1, {st.st_gid})
    d.chmod(0o770)
    assert writable_by(d, st.st_uid + 1, {st.st_gid})
    assert not writable_by(d, st.st_uid + 1, set())
    d.chmod(0o1777)
    assert writable_by(d, st.st_uid + 1, set())


def test_a_ping_group_the_new_group_is_not_in_is_warned(monkeypatch, caplog):
    from vswitch import privileges
    from vswitch.privileges import Drop, warn_ping

    class Range:
        def __init__(self, _path: str) -> None:
            pass

        def read_text(self) -> str:
            return text

    monkeypatch.setattr(privileges, "Path", Range)
    c = parse_config({"network": {}, "uplink": {"type": "host"}})
    for text, warned in (("0 0", True), ("0 2147483647", False), ("1 0", False)):
        caplog.clear()
        warn_ping(c, Drop(65534, 65534))
        assert ("guests' ping to the outside will fail" in caplog.text) == warned, text


def test_the_shared_state_dir_is_never_given_away(tmp_path, monkeypatch):
    from vswitch import config as config_module
    from vswitch.privileges import Drop, hand_over

    monkeypatch.setattr(config_module, "state_dir", lambda: tmp_path)
    shared = parse_config({"switch": {"name": "s1"}, "network": {},
                           "dhcp": {"lease_file": str(tmp_path / "s1.leases")}})
    with pytest.raises(SystemExit, match="dhcp.lease_file.*every vswitch shares"):
        hand_over(shared, Drop(os.getuid() + 1, os.getgid() + 1))
    own = parse_config({"switch": {"name": "s1"}, "network": {},
                        "dhcp": {"lease_file": str(tmp_path / "s1" / "leases")}})
    from tests.conftest import require

    require(os.getuid() == 0, "chown needs root")
    hand_over(own, Drop(65534, 65534))
    made = tmp_path / "s1"
    assert made.stat().st_uid == 65534 and made.stat().st_mode & 0o777 == 0o700
    assert tmp_path.stat().st_uid == 0  # the shared parent stays root's
