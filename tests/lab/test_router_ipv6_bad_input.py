"""Hostile IPv6 onto the raw uplink's link, from the internet namespace (``raw6_lab``), while a
guest talks IPv6 through NAT66: NDP with options of length 0 and options overrunning the
message, NA and RA with hop limit 64 (one claiming the next hop for another MAC: it must not
redirect traffic, RFC 4861 7.1.2; one with a bogus prefix and MTU: ignored), truncated
ICMPv6, misplaced hop-by-hop and routing type 0 headers, a chain of 9 extension headers, tiny
and overlapping fragments, malformed DHCPv6 replies to the station's port 546, ICMPv6 errors
quoting flows that do not exist, the guest side's own hostile frames (``test_ipv6_bad_input``)
and a flood of solicitations from new sources.  Each kind is counted where ``vswitch show
router`` shows it; the daemon stays up and the guest still reaches the internet."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Reply,
    DHCP6OptClientId,
    DHCP6OptServerId,
)
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from nat.router import ARP_ENTRIES
from tests.lab.test_ipv6_bad_input import EVIL, hostile
from tests.lab.test_router_ipv6 import INET6, UPLINK6, ask, raw6_lab, udp_echo
from tests.support import mac_of
from vswitch.lab import wait_for
from wire.ipv6 import NEIGHBOR_SOLICIT, encode_icmpv6, link_local, nd_option, solicited_node

pytestmark = pytest.mark.privileged

UP_MAC = "52:54:00:94:00:02"  # raw6_lab's [uplink] mac
UP_LL = str(ipaddress.IPv6Address(link_local(bytes.fromhex(UP_MAC.replace(":", "")))))
ROUNDS = 10
#: Sends the hex frames on stdin out of eth0, paced so that none is lost in a socket buffer.
SEND = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for n, line in enumerate(sys.stdin):
    s.send(bytes.fromhex(line))
    if n % 50 == 49:
        time.sleep(0.02)
"""


def b(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def group_mac(group: str) -> str:
    return "33:33:" + b(group)[12:].hex(":")


def icmpv6_raw(src: str, dst: str, kind: int, body: bytes) -> Raw:
    """An ICMPv6 message scapy would not build as it is (short), with a good checksum."""
    return Raw(encode_icmpv6(b(src), b(dst), kind, 0, body))


def phases(up: str, inet_mac: str, inet_ll: str,
           dhcp_counts: dict[str, int]) -> list[tuple[str, list[bytes], dict[str, int]]]:
    """(what, frames, {counter: at least this much more per round}) for an uplink whose IPv6
    address is ``up``; counters named as in ``show router``: ``uplink6/...`` is the station's
    (``*`` ends a prefix: their sum), ``ipv6-...`` the router's.  The DHCPv6 replies are
    counted by the station or its client: ``dhcp_counts``."""
    to_up = Ether(src=inet_mac, dst=UP_MAC)
    group = str(ipaddress.IPv6Address(solicited_node(b(up))))
    to_group = Ether(src=inet_mac, dst=group_mac(group))
    to_all = Ether(src=inet_mac, dst="33:33:00:00:00:01")
    ndp = IPv6(src=INET6, dst=group, hlim=255)
    quote_udp = IPv6(src=up, dst=INET6) / UDP(sport=4444, dport=9)
    reply = IPv6(src=inet_ll, dst=UP_LL) / UDP(sport=547, dport=546)
    client = DHCP6OptClientId(duid=DUID_LL(lladdr=UP_MAC))
    server = DHCP6OptServerId(duid=DUID_LL(lladdr=inet_mac))
    truncated = struct.pack("!HHIII", 3, 16, 1, 0, 0) + struct.pack("!HH", 5, 24)  # IA_NA
    nested = b""  # whose IAADDR claims 24 bytes it has not; IA_NAs in IA_NAs, 20 deep
    for _ in range(20):
        nested = struct.pack("!HHIII", 3, 12 + len(nested), 1, 0, 0) + nested
    dhcp = [
        to_up / reply / DHCP6_Reply(trid=0x1234) / client / Raw(b"\x00\x02\x00\x20\x00\x00"),
        to_up / reply / DHCP6_Reply(trid=0x1234) / client / server / server / client / client,
        to_up / reply / DHCP6_Reply(trid=0x1234) / client / server / Raw(truncated),
        to_up / reply / DHCP6_Reply(trid=0x1234) / client / server / Raw(nested),
        to_up / IPv6(src=inet_ll, dst=UP_LL) / UDP(sport=547, dport=546, chksum=0x1234)
        / DHCP6_Reply(trid=0x1234) / client / server,
    ]
    nine = IPv6ExtHdrDestOpt()
    for _ in range(8):
        nine = nine / IPv6ExtHdrDestOpt()
    frames: list[tuple[str, list[Any], dict[str, int]]] = [
        ("NDP options of length 0, overrunning, truncated or with a group MAC", [
            to_group / ndp / ICMPv6ND_NS(tgt=up) / Raw(b"\x01\x00" + bytes(6)),
            to_group / ndp / ICMPv6ND_NS(tgt=up) / Raw(b"\x01\x04" + bytes(6)),
            to_group / ndp / ICMPv6ND_NS(tgt=up) / ICMPv6NDOptSrcLLAddr(lladdr="33:33:0:0:0:1"),
            to_group / IPv6(src=INET6, dst=group, hlim=255, nh=58)
            / icmpv6_raw(INET6, group, NEIGHBOR_SOLICIT, bytes(4)),
            to_up / IPv6(src=INET6, dst=up, hlim=255) / ICMPv6ND_NA(tgt=INET6, S=1, O=1)
            / Raw(b"\x02\x00" + bytes(6)),
            to_all / IPv6(src=inet_ll, dst="ff02::1", hlim=255) / ICMPv6ND_RA()
            / ICMPv6NDOptSrcLLAddr(lladdr=inet_mac) / Raw(b"\x03\x10" + bytes(6)),
        ], {"uplink6/drop-malformed-ndp": 6}),
        ("NA and RA with hop limit 64: the next hop for another MAC, a bogus prefix", [
            to_up / IPv6(src=INET6, dst=up, hlim=64) / ICMPv6ND_NA(tgt=INET6, S=1, O=1)
            / ICMPv6NDOptDstLLAddr(lladdr=EVIL),
            to_all / IPv6(src=INET6, dst="ff02::1", hlim=64) / ICMPv6ND_NA(tgt=INET6, O=1)
            / ICMPv6NDOptDstLLAddr(lladdr=EVIL),
            to_all / IPv6(src=inet_ll, dst="ff02::1", hlim=64)
            / ICMPv6ND_RA(routerlifetime=9000, M=1) / ICMPv6NDOptSrcLLAddr(lladdr=EVIL)
            / ICMPv6NDOptMTU(mtu=1280)
            / ICMPv6NDOptPrefixInfo(prefix="2001:db8:bad::", prefixlen=64, L=1, A=1),
        ], {"uplink6/drop-ndp-hop-limit": 3}),
        ("an NA for the next hop without the override flag (RFC 4861 7.2.5)", [
            to_all / IPv6(src=INET6, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=INET6, O=0)
            / ICMPv6NDOptDstLLAddr(lladdr=EVIL),
        ], {"uplink6/na-no-override-ignored": 1}),
        ("truncated ICMPv6", [
            to_up / IPv6(src=INET6, dst=up, plen=4, nh=58) / Raw(b"\x80\x00\x00\x00"),
            to_up / IPv6(src=INET6, dst=up, plen=2, nh=58) / Raw(b"\x80\x00"),
            to_up / IPv6(src=INET6, dst=up, plen=200, nh=58) / Raw(b"\x80" + bytes(7)),
        ], {"uplink6/drop-bad-checksum": 1, "uplink6/drop-malformed": 2}),
        ("hop-by-hop not first, routing type 0, 9 extension headers; hop-by-hop first", [
            to_up / IPv6(src=INET6, dst=up) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop()
            / ICMPv6EchoRequest(),
            to_up / IPv6(src=INET6, dst=up) / IPv6ExtHdrRouting(type=0, addresses=[up])
            / ICMPv6EchoRequest(),
            to_up / IPv6(src=INET6, dst=up) / nine / ICMPv6EchoRequest(),
            to_up / IPv6(src=INET6, dst=up) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(),
        ], {"uplink6/drop-malformed": 3, "uplink6/echo6-replies": 1}),
        ("tiny, overlapping and TCP-at-offset-8 fragments", [
            to_up / IPv6(src=INET6, dst=up) / IPv6ExtHdrFragment(id=77, m=1, nh=17)
            / Raw(bytes(4)),
            to_up / IPv6(src=INET6, dst=up) / IPv6ExtHdrFragment(id=78, m=1, nh=17)
            / UDP(sport=9, dport=4444) / bytes(8),
            to_up / IPv6(src=INET6, dst=up) / IPv6ExtHdrFragment(id=78, offset=1, nh=17)
            / Raw(bytes(16)),
            to_up / IPv6(src=INET6, dst=up) / IPv6ExtHdrFragment(id=79, offset=1, nh=6)
            / Raw(bytes(16)),
        ], {"ipv6-malformed-from-uplink": 2, "ipv6-drop-no-mapping": 2}),
        ("malformed DHCPv6 replies to the station's port 546", dhcp, dhcp_counts),
        ("ICMPv6 errors quoting flows that do not exist, or nothing whole", [
            to_up / IPv6(src=INET6, dst=up) / ICMPv6DestUnreach(code=4) / quote_udp,
            to_up / IPv6(src=INET6, dst=up) / ICMPv6PacketTooBig(mtu=1280)
            / IPv6(src=up, dst=INET6) / TCP(sport=4445, dport=80, flags="S"),
            to_up / IPv6(src=INET6, dst=up) / ICMPv6TimeExceeded()
            / IPv6(src=up, dst=INET6) / ICMPv6EchoRequest(id=0x4242),
            to_up / IPv6(src=INET6, dst=up) / ICMPv6ParamProblem()
            / Raw(bytes(quote_udp)[:20]),
        ], {"ipv6-drop-no-mapping": 3, "ipv6-malformed-from-uplink": 1}),
        ("the guest side's hostile frames, for another network's addresses", [
            Ether(frame) for frame in hostile(UP_MAC)
        ], {"uplink6/drop-malformed-ndp": 2, "uplink6/drop-malformed": 4,
            "uplink6/drop-ndp-hop-limit": 1, "ipv6-drop-not-for-uplink-address": 5}),
    ]
    return [(what, [bytes(f) for f in fs], want) for what, fs, want in frames]


def counter(shown: dict[str, Any], name: str) -> int:
    """One counter of ``show router`` (see ``phases``)."""
    table = shown.get("uplink6", {}) if name.startswith("uplink6/") else shown
    name = name.removeprefix("uplink6/")
    if name.endswith("*"):
        return sum(v for k, v in table.items() if k.startswith(name[:-1]))
    return int(table.get(name, 0))


def solicitation_flood(up: str, count: int) -> list[bytes]:
    """``count`` NSs for the uplink's address, each from a new source address and MAC: each
    teaches the station its sender (RFC 4861 7.2.3)."""
    group = solicited_node(b(up))
    frames = []
    for n in range(count):
        src = b("fd94::")[:12] + struct.pack("!I", 0x10000 + n)
        mac = b"\x52\x54\x01" + struct.pack("!I", n)[1:]
        message = encode_icmpv6(src, group, NEIGHBOR_SOLICIT, 0,
                                bytes(4) + b(up) + nd_option(1, mac))
        frames.append(b"\x33\x33" + group[12:] + mac + b"\x86\xdd"
                      + struct.pack("!IHBB", 6 << 28, len(message), 58, 255) + src + group
                      + message)
    return frames


def advertise(lab, tmp_path) -> Callable[[str], None]:
    def start(inet: str) -> None:  # as test_router_ipv6's DHCPv6 test does
        lab.spawn(["dnsmasq", "-k", "-i", "eth0", "--bind-interfaces", "--port=0",
                   "--enable-ra", "--dhcp-range=fd94::100,fd94::1ff,64,1h",
                   f"--dhcp-leasefile={tmp_path}/inet.leases",
                   f"--pid-file={tmp_path}/inet.pid"],
                  ns=inet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return start


@pytest.mark.parametrize("how", ["static", "dhcp"])
def test_hostile_ipv6_on_the_uplink_is_counted_and_dropped_and_the_guest_goes_on(
        lab, tmp_path, how):
    if how == "static":
        daemon, inet, ns, _ = raw6_lab(lab, tmp_path)
    else:
        daemon, inet, ns, _ = raw6_lab(lab, tmp_path, uplink6='address6 = "dhcp"',
                                       inet_setup=advertise(lab, tmp_path))
    udp_echo(lab, inet, INET6, 7777)

    def address() -> str | None:
        shown = daemon.show("router").get("uplink6", {}).get("address6", "none")
        return None if shown == "none" else shown

    wait_for(lambda: address() is not None, 40, "the uplink's IPv6 address")
    up = address()
    assert up is not None and (how == "dhcp" or up == UPLINK6)
    # the echo resolves the next hop: the hostile NA has an entry to try to change
    wait_for(lambda: ask(lab, ns, INET6, 7777) == f"hello|{up}", 20, "the UDP echo")
    before = daemon.show("router")["uplink6"]
    inet_mac = mac_of(lab, inet, "eth0")
    inet_ll = str(ipaddress.IPv6Address(link_local(bytes.fromhex(inet_mac.replace(":", "")))))

    def send(frames: list[bytes]) -> None:
        lab.run(inet, [sys.executable, "-c", SEND], input="".join(f.hex() + "\n"
                                                                  for f in frames))

    dhcp_counts = ({"uplink6/dhcp6-not-running": 5} if how == "static" else
                   {"uplink6/drop-bad-checksum": 1, "uplink6/dhcp6-client-*": 4})
    for what, frames, want in phases(up, inet_mac, inet_ll, dhcp_counts):
        start = daemon.show("router")
        send(frames * ROUNDS)

        def counted(start: dict[str, Any] = start, want: dict[str, int] = want) -> bool:
            now = daemon.show("router")
            return all(counter(now, k) - counter(start, k) >= n * ROUNDS
                       for k, n in want.items())

        try:
            wait_for(counted, 10, what)
        except TimeoutError:
            now = daemon.show("router")
            rose = {k: counter(now, k) - counter(start, k) for k in want}
            raise AssertionError(f"{what}: {rose} rose, {want} x {ROUNDS} wanted\n{now}") from None
        assert daemon.alive(), what
        # the guest goes on: its packets still reach the next hop's own MAC (RFC 4861 7.1.2)
        assert ask(lab, ns, INET6, 7777) == f"hello|{up}", what
    # a flood of new neighbours: the cache keeps its bound
    send(solicitation_flood(up, ARP_ENTRIES + 200))
    wait_for(lambda: daemon.show("router")["uplink6"].get("neighbor-adverts", 0)
             >= before.get("neighbor-adverts", 0) + ARP_ENTRIES, 30, "the flood answered")
    after = daemon.show("router")["uplink6"]
    assert after["neighbours6"] <= ARP_ENTRIES
    # nothing the hostile frames said was taken: same address, next hop, MTU; no bogus prefix
    assert daemon.alive()
    for key in ("address6", "next_hop6", "mtu6", "link_local6"):
        assert after[key] == before[key], (key, before[key], after[key])
    assert "2001:db8:bad" not in str(daemon.show("router"))
    # and the guest still reaches the internet: the next hop's MAC was not redirected
    assert ask(lab, ns, INET6, 7777) == f"hello|{up}"
