"""Dropping root (vswitch.privileges) and who may use the control socket (vswitch.control).

vswitch starts as root in its "host" namespace with ``[switch] user = "nobody"``, an internal
port (guest p1) and an attach port (a veth end, guest p2), DHCP and DNS, forwards (one below
1024) and the host uplink to an "internet" namespace (tests.lab.test_host_egress).  Once it is
up it must be nobody with no capability left (every socket needing one is open by then:
vswitch.privileges Rule 2), and everything must still work.

The control socket belongs to nobody and to group 4242 (``socket_group``, mode 0660); a
stranger (uid 4241, no passwd entry) and a member of 4242 try it as well as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.lab.test_host_egress import BANNER, HOST, INET, internet, serve
from tests.support import Daemon, ping
from vswitch.control import request

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
UDHCPC_SCRIPT = str(REPO / "tests/peers/udhcpc.script")
GW, ALPHA = "10.96.0.1", "10.96.0.11"
ALPHA_MAC = "52:54:00:60:00:11"
STRANGER, SOCKET_GROUP = "4241", "4242"
VSWITCH = [sys.executable, "-m", "vswitch.cli"]


@pytest.fixture
def public():
    """A directory anyone may read (the socket's path must be reachable by the CLI's users),
    with a state directory for the lease file that nobody may write."""
    where = Path(tempfile.mkdtemp(prefix="vswitch-priv-"))
    try:
        where.chmod(0o755)
        state = where / "state"
        state.mkdir()
        shutil.chown(state, "nobody", "nogroup")
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def lease(lab, ns: str, dev: str, hostname: str) -> str:
    """udhcpc in ``ns`` until bound; the default route via the gateway; the address."""
    done = lab.run(ns, ["udhcpc", "-n", "-q", "-i", dev, "-x", f"hostname:{hostname}", "-s",
                        UDHCPC_SCRIPT, "-t", "5", "-T", "2"], timeout=40)
    bound = [line for line in done.stdout.splitlines() if line.startswith("EVENT bound")]
    assert bound, done.stdout
    lab.run(ns, ["ip", "route", "replace", "default", "via", GW])
    return bound[-1].split()[-1]


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def cli(lab, host: str, socket: str, *args: str, as_: list[str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The CLI in the host namespace, as root or behind ``as_`` (setpriv)."""
    return subprocess.run(["ip", "netns", "exec", host, *(as_ or []), *VSWITCH, *args,
                           "--socket", socket], capture_output=True, text=True, timeout=30,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def stranger(*groups: str) -> list[str]:
    return ["setpriv", f"--reuid={STRANGER}", f"--regid={STRANGER}",
            f"--groups={','.join(groups)}" if groups else "--clear-groups"]


def test_root_dropped_to_nobody_with_nothing_kept_and_everything_works(lab, public):
    host = lab.netns("ph")
    inet = internet(lab, host)
    g1, g2 = lab.netns("p1"), lab.netns("p2")
    inside = lab.name("p1")
    attach = lab.veth(lab.name("pa"), g2, "eth0", outer_ns=host)
    lab.run(g2, ["ip", "link", "set", "eth0", "address", ALPHA_MAC, "up"])
    lab.spawn([sys.executable, "-m", "tests.peers.dns_upstream", INET], ns=inet,
              stdout=subprocess.DEVNULL, cwd=REPO)
    body = f"""
[switch]
name = "p{lab.tag}"
user = "nobody"
group = "nogroup"
socket_group = {SOCKET_GROUP}
[network]
subnet = "10.96.0.0/24"
[dhcp]
lease_file = "{public}/state/leases"
[[dhcp.host]]
mac = "{ALPHA_MAC}"
ip = "{ALPHA}"
name = "alpha"
[dns]
forwarders = ["{INET}"]
[[forward]]
proto = "tcp"
port = 8022
to = "{ALPHA}:22"
[[forward]]
proto = "tcp"
port = 80
to = "{ALPHA}:8080"
[[port]]
name = "{inside}"
type = "internal"
netns = "{g1}"
[[port]]
name = "{lab.name('pat')}"
type = "attach"
interface = "{attach}"
"""
    daemon = Daemon(lab, public, body, ports_up=3, ns=host)
    try:
        # who it is now: nobody, nogroup, no capability at all (Rule 2)
        st = status(daemon.proc.pid)
        assert st["Uid"].split() == ["65534"] * 4, st["Uid"]
        assert st["Gid"].split() == ["65534"] * 4, st["Gid"]
        for caps in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
            assert int(st[caps], 16) == 0, (caps, st[caps])
        assert st["NoNewPrivs"] == "1"
        log = (public / "vswitch.log").read_text()
        assert "running as user nobody (65534), group nogroup (65534); capabilities kept: " \
               "none" in log, log
        sock = Path(daemon.socket).stat()
        assert (sock.st_uid, sock.st_gid, sock.st_mode & 0o777) == (65534, 4242, 0o660)

        # the guests lease, resolve, reach the internet; a forward reaches a guest
        assert lease(lab, g2, "eth0", "alpha") == ALPHA
        lab.run(g1, ["ip", "link", "set", inside, "up"])
        beta = lease(lab, g1, inside, "beta")
        assert lab.run(g1, ["dig", "+short", "+time=3", f"@{GW}", "alpha.vsw.internal"]
                       ).stdout.strip() == ALPHA
        assert lab.run(g2, ["dig", "+short", "+time=3", f"@{GW}", "beta"]).stdout.strip() == beta
        assert lab.run(g2, ["dig", "+short", "+time=3", f"@{GW}", "www.example.test"]
                       ).stdout.strip() == "203.0.113.7"
        assert ping(lab, g1, INET, count=3) == 3  # the raw ICMP socket root opened
        serve(lab, inet, BANNER, INET, "7000", "internet")
        seen = lab.run(g1, ["socat", "-T", "5", "-", f"TCP:{INET}:7000"]).stdout.strip()
        assert seen == f"internet sees {HOST}"
        serve(lab, g2, BANNER, ALPHA, "22", "ssh")
        serve(lab, g2, BANNER, ALPHA, "8080", "web")
        for port, who in (("8022", "ssh"), ("80", "web")):
            got = lab.run(inet, ["socat", "-T", "5", "-", f"TCP:{HOST}:{port}"]).stdout.strip()
            assert got == f"{who} sees {INET}", port
        leases = (public / "state" / "leases").stat()
        assert leases.st_uid == 65534, "the journal stays nobody's to rewrite"

        # the control socket: root may do anything ...
        shown = cli(lab, host, daemon.socket, "show", "ports")
        assert shown.returncode == 0 and inside in shown.stdout, shown.stderr
        added = cli(lab, host, daemon.socket, "forward", "add", "tcp", "8023", f"{ALPHA}:22")
        assert added.returncode == 0, added.stderr
        got = lab.run(inet, ["socat", "-T", "5", "-", f"TCP:{HOST}:8023"]).stdout.strip()
        assert got == f"ssh sees {INET}", "a forward added after the drop works"
        low = cli(lab, host, daemon.socket, "forward", "add", "tcp", "81", f"{ALPHA}:22")
        assert low.returncode != 0 and "CAP_NET_BIND_SERVICE" in low.stderr, low.stderr
        # ... a stranger cannot even connect (mode 0660), and is told who may ...
        refused = cli(lab, host, daemon.socket, "show", "ports", as_=stranger())
        assert refused.returncode != 0, refused.stdout
        assert "permission denied" in refused.stderr and \
               "needs root, the daemon's user (nobody (65534)) or the group gid 4242" \
               in refused.stderr, refused.stderr
        # ... a member of the socket's group may read but not change ...
        member = stranger(SOCKET_GROUP)
        shown = cli(lab, host, daemon.socket, "show", "forwards", as_=member)
        assert shown.returncode == 0 and "8023" in shown.stdout, shown.stderr
        changed = cli(lab, host, daemon.socket, "forward", "del", "tcp", "8023", as_=member)
        assert changed.returncode != 0
        assert "'forward' changes the switch: it needs root or the daemon's user " \
               "(nobody (65534)); you are uid 4241" in changed.stderr, changed.stderr
        assert "8023" in cli(lab, host, daemon.socket, "show", "forwards").stdout
        # ... and with the file opened to all, SO_PEERCRED still keeps a stranger out
        os.chmod(daemon.socket, 0o666)
        refused = cli(lab, host, daemon.socket, "show", "ports", as_=stranger())
        assert "'show' needs root, the daemon's user (nobody (65534)) or the group gid 4242" \
               " (the control socket's); you are uid 4241" in refused.stderr, refused.stderr
    finally:
        code = daemon.stop()
    assert code == 0, (public / "vswitch.log").read_text()
    # root's directory, not vswitch's runtime dir: nobody cannot remove it, and said so
    assert f"{daemon.socket} stays behind at exit: {public} is not writable by nobody" in \
        (public / "vswitch.log").read_text()
    assert (public / "state" / "leases").stat().st_uid == 65534


def test_a_tap_it_created_keeps_net_admin_to_delete_it(lab, public):
    """A non-persistent TAP vswitch created is deleted at exit: CAP_NET_ADMIN alone is kept
    for that, and goes to the ``ip`` that deletes it."""
    host = lab.netns("pt")
    tap = lab.name("ptap")
    body = f"""
[switch]
name = "q{lab.tag}"
user = "nobody"
[[port]]
name = "{tap}"
type = "tap"
"""
    daemon = Daemon(lab, public, body, ns=host)
    try:
        st = status(daemon.proc.pid)
        assert st["Uid"].split() == ["65534"] * 4
        assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == 1 << 12  # CAP_NET_ADMIN
        assert f"CAP_NET_ADMIN (to delete the TAPs it created ({tap}) at exit" in \
            (public / "vswitch.log").read_text()
        assert lab.run(host, ["ip", "link", "show", tap], check=False).returncode == 0
        assert request(daemon.socket, "ping") == "pong"
    finally:
        code = daemon.stop()
    assert code == 0, (public / "vswitch.log").read_text()
    assert lab.run(host, ["ip", "link", "show", tap], check=False).returncode != 0, \
        "the TAP is gone"

