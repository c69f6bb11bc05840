"""The gateway's IPv6 stack (nat.gateway6) against frames scapy builds and reads: NS/NA, DAD,
RS/RA with its options, echo, unsolicited advertisements, and what it refuses."""

import random

import pytest
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether

from nat.gateway6 import Gateway6
from wire.ipv6 import link_local

GW_MAC, GUEST_MAC = bytes.fromhex("525400000001"), "52:54:00:00:00:10"
PREFIX = bytes.fromhex("fd42000000000001") + bytes(8)
GW = PREFIX[:15] + b"\x01"
GUEST = "fd42:0:0:1::10"


def gateway(**kw) -> Gateway6:
    return Gateway6(GW_MAC, GW, PREFIX, 64, domain="vsw.internal", rng=random.Random(1), **kw)


def send(gw: Gateway6, packet, now: float = 0.0) -> list:
    frames = gw.handle(bytes(Ether(src=GUEST_MAC, dst="33:33:00:00:00:01") / packet), now)
    return [Ether(f) for f in frames]


def test_a_neighbor_solicitation_for_the_gateway_is_answered_and_teaches_the_guest():
    gw = gateway()
    (na,) = send(gw, IPv6(src=GUEST, dst="ff02::1:ff00:1", hlim=255)
                 / ICMPv6ND_NS(tgt="fd42:0:0:1::1") / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC))
    assert na[IPv6].dst == GUEST and na[Ether].dst == GUEST_MAC and na[IPv6].hlim == 255
    assert na[ICMPv6ND_NA].tgt == "fd42:0:0:1::1"
    assert (na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (1, 1, 1)
    again = Ether(bytes(na))  # scapy recomputes the checksum and agrees
    del again[ICMPv6ND_NA].cksum
    assert Ether(bytes(again))[ICMPv6ND_NA].cksum == na[ICMPv6ND_NA].cksum
    assert GW not in gw.neighbours and gw.neighbours[bytes.fromhex(
        "fd420000000000010000000000000010")][0] == bytes.fromhex("525400000010")


def test_dad_for_the_gateway_is_defended_and_for_a_guest_is_left_alone():
    gw = gateway()
    (na,) = send(gw, IPv6(src="::", dst="ff02::1:ff00:1", hlim=255)
                 / ICMPv6ND_NS(tgt="fd42:0:0:1::1"))
    assert na[IPv6].dst == "ff02::1" and na[ICMPv6ND_NA].S == 0
    assert send(gw, IPv6(src="::", dst="ff02::1:ff00:10", hlim=255)
                / ICMPv6ND_NS(tgt=GUEST)) == []


def test_a_router_solicitation_gets_the_whole_advertisement():
    gw = gateway(managed=True)
    (ra,) = send(gw, IPv6(src="fe80::5054:ff:fe00:10", dst="ff02::2", hlim=255)
                 / ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC))
    assert ra[IPv6].src == "fe80::5054:ff:fe00:1" and ra[IPv6].hlim == 255
    assert link_local(GW_MAC).hex() == "fe80000000000000505400fffe000001"
    adv = ra[ICMPv6ND_RA]
    assert (adv.M, adv.O, adv.routerlifetime) == (1, 1, 1800)
    prefix = ra[ICMPv6NDOptPrefixInfo]
    assert (prefix.prefix, prefix.prefixlen, prefix.L, prefix.A) == ("fd42:0:0:1::", 64, 1, 1)
    assert ra[ICMPv6NDOptMTU].mtu == 1500
    assert ra[ICMPv6NDOptRDNSS].dns == ["fd42:0:0:1::1"]
    assert ra[ICMPv6NDOptDNSSL].searchlist == ["vsw.internal."]


def test_an_isolated_network_advertises_no_default_route():
    (ra,) = send(gateway(isolated=True), IPv6(src="::", dst="ff02::2", hlim=255)
                 / ICMPv6ND_RS())
    assert ra[ICMPv6ND_RA].routerlifetime == 0 and ra[IPv6].dst == "ff02::1"


def test_echo_to_the_gateway_is_answered():
    (reply,) = send(gateway(), IPv6(src=GUEST, dst="fd42:0:0:1::1")
                    / ICMPv6EchoRequest(id=7, seq=3, data=b"abc"))
    assert (reply[ICMPv6EchoReply].id, reply[ICMPv6EchoReply].seq,
            reply[ICMPv6EchoReply].data) == (7, 3, b"abc")


@pytest.mark.parametrize("packet, counter", [
    (IPv6(src=GUEST, dst="ff02::1:ff00:1", hlim=64) / ICMPv6ND_NS(tgt="fd42:0:0:1::1"),
     "ndp-hop-limit-not-255"),
    (IPv6(src=GUEST, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt="fd42:0:0:1::1")
     / (b"\x01\x00" + bytes(6)), "malformed6: NDP option of length 0 (RFC 4861 4.6)"),
    (IPv6(src=GUEST, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt="fd42:0:0:1::1",
                                                                   cksum=1),
     "icmpv6-bad-checksum-or-short"),
])
def test_bad_ndp_is_counted_and_dropped(packet, counter):
    gw = gateway()
    assert send(gw, packet) == [] and gw.counters[counter] == 1


def test_unsolicited_advertisements_come_fast_at_first_then_every_200_to_600_s():
    gw = gateway()
    times, now = [], 0.0
    while now < 3000:
        if gw.tick(now):
            times.append(now)
        now += 1.0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g <= 16 for g in gaps[:3]) and all(200 <= g <= 601 for g in gaps[3:])
    assert len(times) >= 7


def test_ipv6_to_the_outside_gets_no_route_at_once_and_errors_get_nothing():
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import ICMPv6DestUnreach

    gw = gateway()
    outside = IPv6(src=GUEST, dst="2001:db8::80") / TCP(dport=80, flags="S")
    (error,) = [Ether(f) for f in gw.handle(bytes(
        Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / outside), 0.0)]
    assert error[ICMPv6DestUnreach].code == 0 and error[IPv6].dst == GUEST
    assert error[IPv6].src == "fd42:0:0:1::1"
    assert bytes(error[ICMPv6DestUnreach].payload)[:40] == bytes(outside)[:40]
    quoted_error = IPv6(src=GUEST, dst="2001:db8::80") / ICMPv6DestUnreach()
    assert gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / quoted_error),
                     0.0) == []


def test_fragments_to_the_gateway_are_reassembled_overlaps_dropped_late_ones_reported():
    from scapy.layers.inet6 import ICMPv6TimeExceeded, IPv6ExtHdrFragment, fragment6

    gw = gateway()
    big = IPv6(src=GUEST, dst="fd42:0:0:1::1") / IPv6ExtHdrFragment(id=5) / ICMPv6EchoRequest(
        id=9, seq=1, data=bytes(range(256)) * 5)
    pieces = fragment6(big, 700)
    assert len(pieces) >= 2
    answers = [f for p in pieces for f in gw.handle(bytes(Ether(
        src=GUEST_MAC, dst="52:54:00:00:00:01") / p), 0.0)]
    (reply,) = [Ether(f) for f in answers]
    assert reply[ICMPv6EchoReply].data == bytes(range(256)) * 5
    # an atomic fragment is a whole packet (RFC 6946)
    atomic = IPv6(src=GUEST, dst="fd42:0:0:1::1") / IPv6ExtHdrFragment(id=6, m=0, offset=0) \
        / ICMPv6EchoRequest(id=9, seq=2)
    assert len(gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / atomic), 0.0)) == 1
    # an overlap drops the datagram (RFC 5722)
    first = fragment6(IPv6(src=GUEST, dst="fd42:0:0:1::1") / IPv6ExtHdrFragment(id=7)
                      / ICMPv6EchoRequest(data=bytes(2000)), 700)
    overlap = first[1].copy()
    overlap[IPv6ExtHdrFragment].offset -= 1
    for p in (first[0], overlap, first[1], first[2]):
        assert gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / p), 0.0) == []
    assert gw.reassembly.stats["overlap"] == 1
    # the first fragment alone: time exceeded, code 1, once the datagram times out
    lone = fragment6(IPv6(src=GUEST, dst="fd42:0:0:1::1") / IPv6ExtHdrFragment(id=8)
                     / ICMPv6EchoRequest(data=bytes(2000)), 700)[0]
    gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / lone), 0.0)
    late = [Ether(f) for f in gw.tick(100.0) if ICMPv6TimeExceeded in Ether(f)]
    assert len(late) == 1 and late[0][ICMPv6TimeExceeded].code == 1
    assert late[0][IPv6].dst == GUEST


def test_a_source_outside_the_prefix_is_never_answered_for():
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import ICMPv6DestUnreach

    gw = gateway()  # no router behind it: a guest's own packet gets no route, a spoofed none
    for src in ("2001:db8::5", "fe80::5"):
        spoofed = IPv6(src=src, dst="2001:db8::80") / UDP(dport=53)
        assert gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / spoofed),
                         0.0) == []
    assert gw.counters["drop-source-not-in-prefix"] == 2
    ours = IPv6(src=GUEST, dst="2001:db8::80") / UDP(dport=53)
    [answer] = gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / ours), 0.0)
    assert Ether(answer)[ICMPv6DestUnreach].code == 0 and Ether(answer)[IPv6].dst == GUEST


def test_an_unknown_next_header_gets_parameter_problem_pointing_at_it():
    from scapy.layers.inet6 import ICMPv6ParamProblem, IPv6ExtHdrDestOpt

    gw = gateway()
    plain = IPv6(src=GUEST, dst="fd42:0:0:1::1", nh=99) / (b"x" * 8)
    [answer] = gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / plain), 0.0)
    problem = Ether(answer)[ICMPv6ParamProblem]
    assert problem.code == 1 and problem.ptr == 6
    chained = IPv6(src=GUEST, dst="fd42:0:0:1::1") / IPv6ExtHdrDestOpt(nh=99) / (b"y" * 8)
    [answer] = gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / chained), 0.0)
    assert Ether(answer)[ICMPv6ParamProblem].ptr == 40  # the destination options' first byte
    # not for the gateway: nothing; no next header: nothing
    other = IPv6(src=GUEST, dst="fd42:0:0:1::9", nh=99) / b"x"
    assert gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:09") / other), 0.0) == []
    empty = IPv6(src=GUEST, dst="fd42:0:0:1::1", nh=59)
    assert gw.handle(bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / empty), 0.0) == []


def test_icmpv6_errors_are_rate_limited_then_the_budget_refills():
    from scapy.layers.inet6 import ICMPv6ParamProblem

    gw = gateway()
    unknown = bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01")
                    / IPv6(src=GUEST, dst="fd42:0:0:1::1", nh=99) / (b"x" * 8))
    sent = sum(len(gw.handle(unknown, 10.0)) for _ in range(200))
    assert sent == gw.errors.burst == 50
    assert gw.counters["icmp6-errors-rate-limited"] == 150
    [again] = gw.handle(unknown, 10.5)  # half a second later: tokens again
    assert ICMPv6ParamProblem in Ether(again)
