"""ICMPv6 errors through the host uplink (nat.egress.v6 Rules 5 and 7): what an IPv6 guest
sends through the host's sockets meets a closed port, routes that refuse it, an nft reject, a
link too small and hop limits running out, and the guest hears of each as it would through a
router.

  guest (SLAAC in PREFIX/64) -- vswitch, running in namespace H
  H: eth0 fd0e:95::2/64 -- veth -- internet namespace I: eth0 fd0e:95::1/64, forwarding, with
     "unreachable" and "prohibit" routes and nft rejects
  I: far fd0e:99::1/64 (MTU 1300) -- veth -- F: eth0 fd0e:99::2/64

(The same namespaces carry test_host_egress's IPv4 addresses, from its helpers.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.lab.test_host_egress import beyond_the_internet, guest_body, internet
from tests.lab.test_ipv6 import PREFIX, take_slaac
from tests.support import Daemon
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

HOST6, INET6, FAR6 = "fd0e:95::2", "fd0e:95::1", "fd0e:99::2"
NO_ROUTE, PROHIBITED = "fd0e:98:0:1::1", "fd0e:98:0:2::1"  # I's unreachable, prohibit routes
NFT_PROHIBITED, NFT_REJECT_ROUTE = "fd0e:99::3", "fd0e:99::4"  # I's nft rejects these
GW6 = f"{PREFIX}1"

NFT = f"""
table inet icmp6lab {{
  chain forward {{
    type filter hook forward priority 0;
    ip6 daddr {NFT_PROHIBITED} reject with icmpv6 type admin-prohibited
    ip6 daddr {NFT_REJECT_ROUTE} reject with icmpv6 type reject-route
  }}
}}
"""

#: In the guest: one UDP datagram of SIZE bytes to TARGET:PORT with hop limit HOPS (0: the
#: default) on a connected socket with IPV6_RECVERR; prints the error the socket has (what
#: recv would raise) and the ICMPv6 error behind it: "ERRNO TYPE/CODE REPORTER INFO".
PROBE = """
import errno, select, socket, struct, sys
target, port, hops, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR: the error, and who sent it
if hops:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
s.connect((target, port))
s.send(bytes(size))
if not select.select([s], [], [], 5)[0]:
    sys.exit("nothing came back")
err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
if not err:
    sys.exit("an answer, not an error")
_, [(level, kind, value)], _, _ = s.recvmsg(2048, 512, socket.MSG_ERRQUEUE)
assert (level, kind) == (socket.IPPROTO_IPV6, 25), (level, kind)
_, origin, icmp_type, code, _, info = struct.unpack_from("=IBBBBI", value)
reporter = socket.inet_ntop(socket.AF_INET6, value[24:40])
print(errno.errorcode[err], f"{icmp_type}/{code}", reporter, info)
"""

#: In the guest: a TCP connect to TARGET:PORT; "ERRNO SECONDS" or "connected".
CONNECT = """
import errno, socket, sys, time
start = time.monotonic()
s = socket.socket(socket.AF_INET6)
s.settimeout(20)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode[exc.errno], f"{time.monotonic() - start:.1f}")
"""


def icmp6_lab(lab, tmp_path: Path, ping_sockets: bool = False) -> tuple[Daemon, str]:
    """vswitch in H (ping sockets allowed there, or not: a raw socket then), the internet and
    the far host with IPv6, and one IPv6 guest with its SLAAC address: (daemon, guest ns)."""
    host = lab.netns("eh")
    inet = internet(lab, host)
    beyond_the_internet(lab, host, inet)
    far = lab.name("ef")  # beyond_the_internet's far namespace
    for ns, dev, address in ((host, "eth0", HOST6), (inet, "eth0", INET6),
                             (inet, "far", "fd0e:99::1"), (far, "eth0", FAR6)):
        lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0"])
        lab.run(ns, ["ip", "-6", "addr", "add", f"{address}/64", "dev", dev, "nodad"])
    for ns in (inet, far):  # every error sent, however fast the test asks
        lab.run(ns, ["sysctl", "-qw", "net.ipv6.icmp.ratelimit=0"])
    lab.run(inet, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    lab.run(inet, ["ip", "link", "set", "far", "mtu", "1300"])
    lab.run(inet, ["ip", "-6", "route", "add", "unreachable", "fd0e:98:0:1::/64"])
    lab.run(inet, ["ip", "-6", "route", "add", "prohibit", "fd0e:98:0:2::/64"])
    lab.run(inet, ["nft", "-f", "-"], input=NFT)
    lab.run(far, ["ip", "-6", "route", "add", "default", "via", "fd0e:99::1"])
    lab.run(host, ["ip", "-6", "route", "add", "default", "via", INET6])
    if ping_sockets:
        lab.run(host, ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"])
    guest = lab.netns("e1")
    dev = lab.name("e1")
    body = guest_body(lab, tmp_path, {"e1": guest}).replace(
        'subnet = "10.96.0.0/24"', f'subnet = "10.96.0.0/24"\nsubnet6 = "{PREFIX}/64"')
    daemon = Daemon(lab, tmp_path, body, ports_up=2, ns=host)
    take_slaac(lab, guest, dev)
    wait_for(lambda: lab.run(guest, ["ping", "-6", "-n", "-c", "1", "-W", "1", FAR6],
                             check=False).returncode == 0, 20, "the far host over IPv6")
    return daemon, guest


def probe(lab, guest: str, target: str, port: int = 9, hops: int = 0, size: int = 5) -> str:
    return lab.run(guest, [sys.executable, "-c", PROBE, target, str(port), str(hops),
                           str(size)], timeout=30).stdout.strip()


def test_udp_errors_reach_an_ipv6_guest_from_the_routers_that_sent_them(lab, tmp_path):
    """Port unreachable, no route, prohibited (a route and nft) and packet too big, each with
    the code and information it had, from the router that sent it."""
    daemon, guest = icmp6_lab(lab, tmp_path)
    assert probe(lab, guest, INET6) == f"ECONNREFUSED 1/4 {INET6} 0"
    assert probe(lab, guest, NO_ROUTE) == f"ENETUNREACH 1/0 {INET6} 0"
    assert probe(lab, guest, PROHIBITED) == f"EACCES 1/1 {INET6} 0"
    assert probe(lab, guest, NFT_PROHIBITED) == f"EACCES 1/1 {INET6} 0"
    assert probe(lab, guest, NFT_REJECT_ROUTE) == f"EACCES 1/6 {INET6} 0", "codes as received"
    # the link to the far host takes 1300 bytes: its router says so, with that MTU
    assert probe(lab, guest, FAR6, size=1400) == f"EMSGSIZE 2/0 {INET6} 1300"
    assert probe(lab, guest, FAR6) == f"ECONNREFUSED 1/4 {FAR6} 0"
    counters = daemon.show("router")
    assert counters["icmp6-1/4-to-guest"] == 2 and counters["icmp6-2/0-to-guest"] == 1, counters


def test_a_udp_traceroute_from_an_ipv6_guest_sees_the_routers_beyond_the_host(lab, tmp_path):
    """Hop limit 1 ends at the gateway, 2 at the internet's router (the host's socket sent it
    on with 1: time exceeded comes back through the host), 3 at the far host's closed port."""
    daemon, guest = icmp6_lab(lab, tmp_path)
    hops = [probe(lab, guest, FAR6, 33434 + hops, hops) for hops in (1, 2, 3)]
    assert hops == [f"EHOSTUNREACH 3/0 {GW6} 0", f"EHOSTUNREACH 3/0 {INET6} 0",
                    f"ECONNREFUSED 1/4 {FAR6} 0"], hops
    assert daemon.show("router")["icmp6-3/0-to-guest"] == 1


@pytest.mark.parametrize("ping_sockets", [False, True], ids=["raw-socket", "ping-sockets"])
def test_ping_errors_reach_an_ipv6_guest(lab, tmp_path, ping_sockets):
    """ping -6 through either kind of host socket: unreachable with the router's reason, and
    time exceeded for a hop limit that runs out beyond the host."""
    daemon, guest = icmp6_lab(lab, tmp_path, ping_sockets)
    assert daemon.show("router")["ping"] == ("ping-socket" if ping_sockets else "raw")

    def ping6(target: str, *args: str) -> str:
        return lab.run(guest, ["ping", "-6", "-n", "-c", "1", "-W", "3", *args, target],
                       check=False, timeout=30).stdout

    assert "1 received" in ping6(FAR6)
    assert f"From {INET6} icmp_seq=1 Destination unreachable: Administratively prohibited" \
        in ping6(PROHIBITED)
    assert f"From {INET6} icmp_seq=1 Destination unreachable: Administratively prohibited" \
        in ping6(NFT_PROHIBITED)
    assert f"From {INET6} icmp_seq=1 Destination unreachable: No route" in ping6(NO_ROUTE)
    assert f"From {INET6} icmp_seq=1 Time exceeded: Hop limit" in ping6(FAR6, "-t", "2")
    assert daemon.show("router")["icmp6-1/1-to-guest"] == 2


def test_a_failed_ipv6_connect_fails_the_guests_connect_at_once(lab, tmp_path):
    """Prohibited, rejected or without a route: the guest's connect fails with the error the
    ICMPv6 unreachable means, at once; a closed port is still refused (a RST)."""
    daemon, guest = icmp6_lab(lab, tmp_path)

    def connect(target: str, port: int = 80) -> tuple[str, float]:
        started = time.monotonic()
        out = lab.run(guest, [sys.executable, "-c", CONNECT, target, str(port)],
                      timeout=60).stdout.split()
        assert time.monotonic() - started < 10, out
        return out[0], float(out[1]) if len(out) > 1 else 0.0

    for target, error in ((PROHIBITED, "EACCES"), (NFT_PROHIBITED, "EACCES"),
                          (NFT_REJECT_ROUTE, "EACCES"), (NO_ROUTE, "ENETUNREACH")):
        failed, seconds = connect(target)
        assert failed == error and seconds < 2, (target, failed, seconds)
    assert connect(INET6, 9)[0] == "ECONNREFUSED"
    counters = daemon.show("router")
    assert counters["icmp6-1/1-to-guest"] == 2 and counters["icmp6-1/6-to-guest"] == 1, counters
    assert counters["icmp6-1/0-to-guest"] == 1 and counters["tcp6-connect-EACCES"] == 3
    assert "icmp6-1/4-to-guest" not in counters, "refused: a RST, not port unreachable"
