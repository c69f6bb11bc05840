"""Hostile IPv6 into a running switch while a guest uses IPv6: bad NDP options, truncated and
mis-summed ICMPv6, misplaced hop-by-hop headers, routing type 0, long extension chains, tiny
and overlapping fragments, malformed DHCPv6 and UDP.  Each is counted and dropped; the daemon
stays up and the guest still reaches the gateway."""

from __future__ import annotations

import socket

import pytest
from scapy.layers.dhcp6 import DUID_LL, DHCP6_Solicit, DHCP6OptClientId
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.support import Daemon
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

PREFIX = "fd42:0:0:8::"
GW = f"{PREFIX}1"
EVIL = "52:54:00:66:66:66"


def hostile(gw_mac: str) -> list[bytes]:
    """One frame per item of docs/testing.md's IPv6 list."""
    to_gw = Ether(src=EVIL, dst=gw_mac)
    multi = Ether(src=EVIL, dst="33:33:ff:00:00:01")
    src = f"{PREFIX}666"
    cid = DHCP6OptClientId(duid=DUID_LL(lladdr=EVIL))
    frames = [
        multi / IPv6(src=src, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=GW)
        / Raw(b"\x01\x00" + bytes(6)),                                 # NDP option length 0
        multi / IPv6(src=src, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=GW)
        / Raw(b"\x01\x04" + bytes(6)),                                 # NDP option overrun
        to_gw / IPv6(src=src, dst=GW, plen=4, nh=58) / Raw(b"\x80\x00\x00\x00"),  # truncated
        to_gw / IPv6(src=src, dst=GW) / ICMPv6EchoRequest(cksum=0x1234),  # bad checksum
        to_gw / IPv6(src=src, dst=GW) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop()
        / ICMPv6EchoRequest(),                                         # hop-by-hop not first
        to_gw / IPv6(src=src, dst=GW) / IPv6ExtHdrRouting(type=0) / ICMPv6EchoRequest(),
        to_gw / IPv6(src=src, dst=GW) / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
        / ICMPv6EchoRequest(),                                         # 9 extension headers
        to_gw / IPv6(src=src, dst=GW) / IPv6ExtHdrFragment(offset=0, m=1, id=9)
        / Raw(bytes(8)),                                               # tiny fragment
        to_gw / IPv6(src=src, dst=GW) / IPv6ExtHdrFragment(offset=0, m=1, id=9)
        / Raw(bytes(16)),                                              # overlapping fragment
        multi / IPv6(src=src, dst="ff02::2", hlim=64) / ICMPv6ND_RS(),  # RS, hop limit 64
        Ether(src=EVIL, dst="33:33:00:01:00:02") / IPv6(src="fe80::666", dst="ff02::1:2")
        / UDP(sport=546, dport=547) / DHCP6_Solicit() / Raw(b"\x00\x03\x00\x20\x00\x00"),
        Ether(src=EVIL, dst="33:33:00:01:00:02") / IPv6(src="fe80::666", dst="ff02::1:2")
        / UDP(sport=546, dport=547) / DHCP6_Solicit() / cid / cid,     # repeated client id
        Ether(src=EVIL, dst="33:33:00:01:00:02") / IPv6(src="fe80::666", dst="ff02::1:2")
        / UDP(sport=546, dport=547) / DHCP6_Solicit() / cid
        / Raw(b"\x00\x03\x00\x06\x00\x00\x00\x01\x00\x05"),            # IA_NA nested truncated
        to_gw / IPv6(src=src, dst=GW) / UDP(sport=5, dport=53, len=200) / Raw(b"x"),  # UDP len
    ]
    out = [bytes(f) for f in frames]
    head = bytes(Ether(src=EVIL, dst=gw_mac, type=0x86DD))
    out.append(head + b"\x60" + bytes(3) + b"\xff\xff" + bytes(30))  # header cut short
    return out


@pytest.fixture
def v6_lab(lab, tmp_path):
    ns, dev = lab.netns("h6"), lab.name("h6")
    body = f"""
[switch]
name = "h{lab.tag}"
[network]
subnet = "10.79.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
requests_per_second = 0  # every malformed message reaches the codec (the budget has its test)
range6 = ["{PREFIX}100", "{PREFIX}1ff"]
[dns]
forwarders = []
[[port]]
name = "{dev}"
type = "internal"
netns = "{ns}"
[[port]]
name = "junk"
type = "dgram"
path = "{tmp_path}/junk.sock"
"""
    daemon = Daemon(lab, tmp_path, body)
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_ra=2",
                 f"net.ipv6.conf.{dev}.disable_ipv6=0"])
    lab.run(ns, ["ip", "link", "set", dev, "up"])
    inject = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    inject.bind(f"{tmp_path}/junk.peer")
    inject.connect(f"{tmp_path}/junk.sock")
    yield daemon, ns, inject
    inject.close()
    daemon.stop()


def ping6(lab, ns: str) -> bool:
    done = lab.run(ns, ["ping", "-6", "-n", "-c", "1", "-W", "2", GW], check=False)
    return done.returncode == 0


def test_hostile_ipv6_is_counted_and_dropped_and_the_guest_goes_on(lab, v6_lab):
    daemon, ns, inject = v6_lab
    wait_for(lambda: ping6(lab, ns), 30, "the guest to reach the gateway over IPv6")
    gw_mac = daemon.show("topology")["gateway"]["mac"]
    for _ in range(20):
        for frame in hostile(gw_mac):
            inject.send(frame)
    wait_for(lambda: sum(v for k, v in daemon.show("router").items()
                         if k.startswith("gateway6-malformed6")) >= 20 * 7, 10,
             "the malformed frames counted")
    counters = daemon.show("router")
    assert counters.get("gateway6-ndp-hop-limit-not-255", 0) >= 20
    assert counters.get("gateway6-icmpv6-bad-checksum-or-short", 0) >= 40
    assert counters.get("gateway6-reassembly-overlap", 0) >= 20  # RFC 5722
    dhcp = daemon.show("dhcp")
    assert sum(v for k, v in dhcp.items() if k.startswith("v6-malformed")) >= 60, dhcp
    assert daemon.alive() and ping6(lab, ns)
