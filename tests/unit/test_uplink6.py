"""The raw uplink's IPv6 station (nat.uplink6) against frames scapy builds and reads: DAD and
router solicitation at start, SLAAC from an RA, NS/NA, DAD defence and conflicts, neighbour
resolution holding packets, echo, DHCPv6 through our own server, and what it refuses."""

import random
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    in6_getnsma,
)
from scapy.layers.l2 import Ether
from scapy.utils6 import in6_mactoifaceid

from dhcp.client6 import Dhcp6Client
from dhcp.dhcp6 import Dhcp6Config, Dhcp6Server
from nat.uplink6 import StaticAddress6, UplinkStation6
from wire.ipv6 import encode_icmpv6
from wire.vnet import GSO_TCPV6, NO_OFFLOAD

MAC, OUR_MAC = bytes.fromhex("525400aabbcc"), "52:54:00:aa:bb:cc"
LL = "fe80::5054:ff:feaa:bbcc"
ROUTER_MAC, ROUTER = "52:54:00:00:00:01", "fe80::1"
OTHER_MAC = "52:54:00:00:00:99"
PREFIX = "2001:db8:1::"
#: SLAAC's address: the prefix and the modified EUI-64 of the MAC, as scapy derives it
GLOBAL = str(IPv6Address("2001:db8:1::" + in6_mactoifaceid(OUR_MAC)))


def b(text: str) -> bytes:
    return IPv6Address(text).packed


def frames(out) -> list:
    """Scapy's reading of the station's frames (from handle, start, tick and stop)."""
    return [Ether(frame) for frame in out]


def packets(out) -> list:
    """Scapy's reading of ``resolve``'s packets (each a vnet header + frame)."""
    read = []
    for packet in out:
        assert bytes(packet[:10]) == NO_OFFLOAD, "every packet carries the vnet header"
        read.append(Ether(bytes(packet[10:])))
    return read


def checksum_agrees(frame, layer) -> bool:
    """Scapy recomputes the ICMPv6 checksum and gets the one the station wrote."""
    again = Ether(bytes(frame))
    del again[layer].cksum
    return Ether(bytes(again))[layer].cksum == frame[layer].cksum


def station(mode: str = "slaac", **kw) -> UplinkStation6:
    return UplinkStation6(MAC, mode, rng=random.Random(1), **kw)


def ready(st6: UplinkStation6, now: float = 0.0) -> float:
    """Start, and let link-local DAD pass; the time after."""
    st6.start(now)
    st6.tick(now + 1.0)
    assert st6.ready
    return now + 1.0


def feed(st6: UplinkStation6, packet, now: float, src=ROUTER_MAC, dst=None):
    """One frame from the uplink network: (scapy frames out, consumed)."""
    dst = dst or (OUR_MAC if not IPv6(bytes(packet)).dst.startswith("ff") else
                  "33:33:00:00:00:01")
    out, consumed = st6.handle(bytes(Ether(src=src, dst=dst) / packet), now)
    return frames(out), consumed


def advert(lifetime: int = 1800, prefix: str = PREFIX, valid: int = 86400,
           preferred: int = 14400, managed: bool = False, mtu: int | None = 1400,
           src: str = ROUTER, with_sll: bool = True, flags_a: int = 1):
    ra = IPv6(src=src, dst="ff02::1", hlim=255) / ICMPv6ND_RA(
        routerlifetime=lifetime, M=int(managed), O=0)
    if with_sll:
        ra /= ICMPv6NDOptSrcLLAddr(lladdr=ROUTER_MAC)
    if mtu is not None:
        ra /= ICMPv6NDOptMTU(mtu=mtu)
    return ra / ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=64, L=1, A=flags_a,
                                      validlifetime=valid, preferredlifetime=preferred)


def slaac_up(st6: UplinkStation6, now: float = 0.0) -> float:
    """Ready, an RA, and the SLAAC address past DAD; the time after."""
    now = ready(st6, now)
    feed(st6, advert(), now)
    st6.tick(now + 1.0)
    assert st6.address == b(GLOBAL)
    return now + 1.0


def outgoing(dst: str, src: str = GLOBAL, size: int = 0) -> bytes:
    """A packet the router sends by the uplink (NAT66 done): vnet header + frame, MACs to fill."""
    return NO_OFFLOAD + bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                              / IPv6(src=src, dst=dst) / UDP(sport=4000, dport=53)
                              / bytes(size))


def test_start_probes_link_local_then_solicits_routers_three_times_4_s_apart():
    st6 = station()
    (probe,) = frames(st6.start(0.0))
    assert probe[Ether].dst == "33:33:ff:aa:bb:cc" and probe[Ether].src == OUR_MAC
    assert (probe[IPv6].src, probe[IPv6].dst, probe[IPv6].hlim) == (
        "::", str(IPv6Address(in6_getnsma(b(LL)))), 255)
    assert probe[ICMPv6ND_NS].tgt == LL and ICMPv6NDOptSrcLLAddr not in probe
    assert checksum_agrees(probe, ICMPv6ND_NS)
    assert not st6.ready and st6.resolve([outgoing("fe80::9")], 0.5) == []
    assert st6.counters["drop-station-not-ready"] == 1
    assert st6.tick(0.99) == [] and st6.tick(1.0) == []  # DAD passed; the RS waits 0..1 s
    sent, now = [], 1.0
    while now < 60.0:
        deadline = st6.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        sent += [(now, f) for f in frames(st6.tick(now))]
    assert len(sent) == 3, "MAX_RTR_SOLICITATIONS (RFC 4861 6.3.7)"
    times = [t for t, _ in sent]
    assert 1.0 <= times[0] <= 2.0 and times[1] - times[0] == 4.0 == times[2] - times[1]
    rs = sent[0][1]
    assert (rs[IPv6].src, rs[IPv6].dst, rs[IPv6].hlim, rs[Ether].dst) == (
        LL, "ff02::2", 255, "33:33:00:00:00:02")
    assert rs[ICMPv6NDOptSrcLLAddr].lladdr == OUR_MAC and checksum_agrees(rs, ICMPv6ND_RS)
    assert st6.tick(1000.0) == [] and st6.counters["router-solicits"] == 3


def test_an_advertisement_stops_the_solicitations():
    st6 = station()
    now = ready(st6)
    feed(st6, advert(), now)
    assert st6.tick(now + 1.0) == [] and st6.tick(now + 10.0) == []
    assert st6.counters["router-solicits"] == 0


def test_an_advertisement_gives_the_slaac_address_after_dad_and_the_next_hop():
    st6 = station()
    changes = []
    st6.on_change = lambda old, new: changes.append((old, new))
    now = ready(st6)
    (probe,), consumed = feed(st6, advert(), now)
    assert consumed
    assert probe[IPv6].src == "::" and probe[ICMPv6ND_NS].tgt == GLOBAL
    assert GLOBAL == "2001:db8:1:0:5054:ff:feaa:bbcc"
    assert st6.address is None and changes == [], "tentative until DAD passes (RFC 4862 5.4)"
    assert st6.next_hop == b(ROUTER) and st6.mtu == 1400
    assert st6.neighbours.lookup(b(ROUTER), now) == bytes.fromhex("525400000001")
    st6.tick(now + 1.0)
    assert st6.address == b(GLOBAL) and changes == [(None, b(GLOBAL))]
    stats = st6.stats()
    assert stats["address6"] == GLOBAL and stats["next_hop6"] == ROUTER and stats["mtu6"] == 1400
    # router lifetime 0: no longer the default router
    feed(st6, advert(lifetime=0), now + 2.0)
    assert st6.next_hop is None


def test_slaac_lifetimes_keep_the_two_hours_rule_and_the_address_goes_at_its_end():
    st6 = station()
    changes = []
    st6.on_change = lambda old, new: changes.append((old, new))
    now = slaac_up(st6)
    feed(st6, advert(valid=60, preferred=30), now)  # would cut a day to a minute: 2 h instead
    assert st6.next_deadline() is not None
    st6.tick(now + 3600.0)
    assert st6.address == b(GLOBAL)
    st6.tick(now + 7200.0)
    assert st6.address is None and changes[-1] == (b(GLOBAL), None)
    assert st6.counters["slaac-address-expired"] == 1


@pytest.mark.parametrize("prefix_len, preferred, counter", [
    (48, 100, "slaac-prefix-not-64"),
    (64, 90000, "slaac-preferred-above-valid"),
])
def test_prefixes_slaac_cannot_use_are_ignored(prefix_len, preferred, counter):
    st6 = station()
    now = ready(st6)
    ra = IPv6(src=ROUTER, dst="ff02::1", hlim=255) / ICMPv6ND_RA() / ICMPv6NDOptPrefixInfo(
        prefix=PREFIX, prefixlen=prefix_len, L=1, A=1, validlifetime=86400,
        preferredlifetime=preferred)
    assert feed(st6, ra, now) == ([], True)
    assert st6.counters[counter] == 1 and st6.address is None


def test_a_neighbor_solicitation_for_our_address_gets_na_with_a_good_checksum():
    st6 = station()
    now = slaac_up(st6)
    ns = IPv6(src="fe80::2", dst="ff02::1:ffaa:bbcc", hlim=255) / ICMPv6ND_NS(tgt=GLOBAL) \
        / ICMPv6NDOptSrcLLAddr(lladdr=OTHER_MAC)
    (na,), consumed = feed(st6, ns, now, src=OTHER_MAC, dst="33:33:ff:aa:bb:cc")
    assert consumed
    assert (na[Ether].dst, na[Ether].src) == (OTHER_MAC, OUR_MAC)
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (GLOBAL, "fe80::2", 255)
    assert na[ICMPv6ND_NA].tgt == GLOBAL
    assert (na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (0, 1, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == OUR_MAC
    assert checksum_agrees(na, ICMPv6ND_NA)
    assert st6.neighbours.lookup(b("fe80::2"), now) == bytes.fromhex("525400000099")
    # unicast NUD for the link-local address, no source option: answered to the frame's MAC
    (na,), _ = feed(st6, IPv6(src="fe80::2", dst=LL, hlim=255) / ICMPv6ND_NS(tgt=LL), now,
                    src=OTHER_MAC)
    assert na[Ether].dst == OTHER_MAC and na[ICMPv6ND_NA].tgt == LL
    # someone else's address: no answer, not learned
    ns_other = IPv6(src="fe80::3", dst="ff02::1:ff00:7", hlim=255) \
        / ICMPv6ND_NS(tgt="2001:db8:1::7") / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:00:00:03")
    assert feed(st6, ns_other, now, src="52:54:00:00:00:03", dst="33:33:ff:00:00:07") \
        == ([], True)
    assert st6.neighbours.lookup(b("fe80::3"), now) is None


def test_a_dad_probe_for_our_address_is_defended():
    st6 = station()
    now = slaac_up(st6)
    for target in (LL, GLOBAL):
        group = "ff02::1:ffaa:bbcc"
        (na,), _ = feed(st6, IPv6(src="::", dst=group, hlim=255) / ICMPv6ND_NS(tgt=target),
                        now, src=OTHER_MAC, dst="33:33:ff:aa:bb:cc")
        assert (na[IPv6].dst, na[Ether].dst, na[IPv6].src) == ("ff02::1", "33:33:00:00:00:01",
                                                                target)
        assert (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O, na[ICMPv6ND_NA].R) == (0, 1, 0)
        assert checksum_agrees(na, ICMPv6ND_NA)
    assert st6.counters["dad-defended"] == 2 and st6.address == b(GLOBAL)


def test_a_duplicate_while_tentative_means_the_address_is_never_used():
    st6 = station()
    changes = []
    st6.on_change = lambda old, new: changes.append((old, new))
    now = ready(st6)
    feed(st6, advert(), now)
    na = IPv6(src=GLOBAL, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=GLOBAL, S=0, O=1) \
        / ICMPv6NDOptDstLLAddr(lladdr=OTHER_MAC)
    assert feed(st6, na, now + 0.5, src=OTHER_MAC) == ([], True)
    st6.tick(now + 1.0)
    assert st6.address is None and changes == [] and st6.counters["dad-failed"] == 1
    feed(st6, advert(), now + 2.0)  # the same prefix again: not tried again
    st6.tick(now + 3.0)
    assert st6.address is None
    # another host probing our tentative link-local address: the station stops (5.4.5)
    other = station()
    other.start(0.0)
    probe = IPv6(src="::", dst="ff02::1:ffaa:bbcc", hlim=255) / ICMPv6ND_NS(tgt=LL)
    feed(other, probe, 0.2, src=OTHER_MAC, dst="33:33:ff:aa:bb:cc")
    assert other.tick(5.0) == [] and not other.ready
    assert other.counters["dad-failed-link-local"] == 1


def test_resolve_holds_packets_and_the_na_releases_them():
    st6 = station()
    now = ready(st6)
    feed(st6, advert(with_sll=False), now)  # a router whose MAC is not known yet
    st6.tick(now + 1.0)
    now += 1.0
    first, second = outgoing("2001:db8:99::1"), outgoing("2001:db8:99::2")
    (ns,) = packets(st6.resolve([first], now))
    assert (ns[IPv6].src, ns[IPv6].dst, ns[Ether].dst) == (GLOBAL, "ff02::1:ff00:1",
                                                           "33:33:ff:00:00:01")
    assert ns[ICMPv6ND_NS].tgt == ROUTER and ns[ICMPv6NDOptSrcLLAddr].lladdr == OUR_MAC
    assert checksum_agrees(ns, ICMPv6ND_NS)
    assert st6.resolve([second], now + 0.1) == [], "held; one NS is out already"
    na = IPv6(src=ROUTER, dst=GLOBAL, hlim=255) / ICMPv6ND_NA(tgt=ROUTER, R=1, S=1, O=1) \
        / ICMPv6NDOptDstLLAddr(lladdr=ROUTER_MAC)
    out, consumed = st6.handle(bytes(Ether(src=ROUTER_MAC, dst=OUR_MAC) / na), now + 0.2)
    assert consumed and len(out) == 2, "released as frames, addressed now"
    for frame, sent in zip(out, (first, second), strict=True):
        assert bytes(frame[12:]) == sent[22:]
        assert (Ether(frame).dst, Ether(frame).src) == (ROUTER_MAC, OUR_MAC)
    (direct,) = st6.resolve([outgoing("2001:db8:99::3")], now + 0.3)
    assert bytes(direct[:10]) == NO_OFFLOAD and Ether(bytes(direct[10:])).dst == ROUTER_MAC
    assert bytes(direct[32:]) == outgoing("2001:db8:99::3")[32:] and type(direct) is bytearray
    # on-link (the RA's L prefix): resolved itself, not through the router
    (ns,) = packets(st6.resolve([outgoing("2001:db8:1::42")], now + 0.4))
    assert ns[ICMPv6ND_NS].tgt == "2001:db8:1::42"
    # multicast: its own MAC (RFC 2464 7)
    (mcast,) = st6.resolve([outgoing("ff02::1:2")], now + 0.5)
    assert Ether(bytes(mcast[10:])).dst == "33:33:00:01:00:02"


def test_a_held_tso_packet_is_released_as_segments_with_good_checksums():
    from .test_gso import offload

    st6 = station()
    now = ready(st6)
    feed(st6, advert(with_sll=False), now)
    st6.tick(now + 1.0)
    now += 1.0
    tso = offload(Ether() / IPv6(src=GLOBAL, dst="2001:db8:99::1") / TCP(sport=1, dport=2)
                  / (b"x" * 3000), GSO_TCPV6, 1200)
    assert len(st6.resolve([tso], now)) == 1  # its NS
    na = IPv6(src=ROUTER, dst=GLOBAL, hlim=255) / ICMPv6ND_NA(tgt=ROUTER, R=1, S=1, O=1) \
        / ICMPv6NDOptDstLLAddr(lladdr=ROUTER_MAC)
    out, _ = st6.handle(bytes(Ether(src=ROUTER_MAC, dst=OUR_MAC) / na), now)
    segments = frames(out)
    assert len(segments) == 3 and sum(len(f[TCP].payload) for f in segments) == 3000
    for segment in segments:
        assert segment[Ether].dst == ROUTER_MAC
        again = Ether(bytes(segment))
        del again[TCP].chksum
        assert Ether(bytes(again))[TCP].chksum == segment[TCP].chksum


def test_an_unsolicited_na_for_an_unknown_neighbour_is_not_learned():
    st6 = station()
    now = slaac_up(st6)
    na = IPv6(src="fe80::5", dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt="fe80::5", S=0) \
        / ICMPv6NDOptDstLLAddr(lladdr="52:54:00:00:00:05")
    assert feed(st6, na, now, src="52:54:00:00:00:05") == ([], True)
    assert st6.neighbours.lookup(b("fe80::5"), now) is None
    assert st6.counters["na-unsolicited-ignored"] == 1


def test_unanswered_resolution_gives_up_after_three_solicitations():
    st6 = station()
    now = slaac_up(st6)
    st6.neighbours.cache.clear()
    assert len(st6.resolve([outgoing("2001:db8:99::1")], now)) == 1
    st6.resolve([outgoing("2001:db8:99::1")], now + 0.5)
    solicits = [f for t in (now + 1.0, now + 2.0, now + 3.0, now + 4.0, now + 9.0)
                for f in frames(st6.tick(t)) if ICMPv6ND_NS in f]
    assert len(solicits) == 2, "MAX_MULTICAST_SOLICIT: 3 NS in all, 1 s apart (RFC 4861 7.2.2)"
    assert st6.neighbours.held == {} and st6.neighbours.dropped == 2
    assert st6.counters["unresolved"] == 1
    assert len(st6.resolve([outgoing("2001:db8:99::1")], now + 10.0)) == 1, "asks again"


def test_held_packets_are_bounded_per_address():
    st6 = station()
    now = slaac_up(st6)
    st6.neighbours.cache.clear()
    for i in range(10):
        st6.resolve([outgoing("2001:db8:99::1")], now + i * 0.01)
    assert len(st6.neighbours.held[b(ROUTER)][1]) == 3 and st6.neighbours.dropped == 7


def test_no_router_no_route_and_too_big_is_dropped():
    st6 = station()
    now = ready(st6)
    assert st6.resolve([outgoing("2001:db8:99::1", src=LL)], now) == []
    assert st6.counters["drop-no-route"] == 1
    feed(st6, advert(mtu=1280), now)
    assert st6.resolve([outgoing("2001:db8:99::1", size=1300)], now) == []
    assert st6.counters["drop-too-big"] == 1


def test_echo_to_our_address_is_answered_and_other_traffic_is_the_routers():
    st6 = station()
    now = slaac_up(st6)
    (reply,), consumed = feed(st6, IPv6(src="2001:db8:5::1", dst=GLOBAL)
                              / ICMPv6EchoRequest(id=7, seq=3, data=b"abc"), now)
    assert consumed and reply[IPv6].src == GLOBAL and reply[IPv6].dst == "2001:db8:5::1"
    assert (reply[ICMPv6EchoReply].id, reply[ICMPv6EchoReply].seq,
            reply[ICMPv6EchoReply].data) == (7, 3, b"abc")
    assert reply[Ether].dst == ROUTER_MAC and checksum_agrees(reply, ICMPv6EchoReply)
    for packet in (IPv6(src="2001:db8:5::1", dst=GLOBAL) / TCP(sport=80, dport=40000),
                   IPv6(src="2001:db8:5::1", dst=GLOBAL) / ICMPv6EchoReply(id=7),
                   IPv6(src="2001:db8:5::1", dst=GLOBAL) / UDP(sport=547, dport=546)):
        assert feed(st6, packet, now) == ([], False), "the router translates it (NAT66)"
    arp = bytes(Ether(src=ROUTER_MAC, dst="ff:ff:ff:ff:ff:ff", type=0x0806) / bytes(28))
    assert st6.handle(arp, now) == ([], False)


@pytest.mark.parametrize("packet, counter", [
    (IPv6(src="fe80::2", dst="ff02::1:ffaa:bbcc", hlim=64) / ICMPv6ND_NS(tgt=LL),
     "drop-ndp-hop-limit"),
    (IPv6(src="fe80::2", dst="ff02::1:ffaa:bbcc", hlim=255) / ICMPv6ND_NS(tgt=LL, cksum=1),
     "drop-bad-checksum"),
    (IPv6(src="fe80::2", dst="ff02::1:ffaa:bbcc", hlim=255) / ICMPv6ND_NS(tgt=LL)
     / (b"\x01\x00" + bytes(6)), "drop-malformed-ndp"),  # an option of length 0
    (IPv6(src="fe80::2", dst="ff02::1:ffaa:bbcc", hlim=255) / ICMPv6ND_NS(tgt="ff02::1"),
     "drop-malformed-ndp"),  # a multicast target
    (IPv6(src="::", dst="ff02::1", hlim=255) / ICMPv6ND_NS(tgt=LL), "drop-malformed-ndp"),
    (IPv6(src="2001:db8::1", dst="ff02::1", hlim=255) / ICMPv6ND_RA(), "drop-malformed-ndp"),
    (IPv6(src="fe80::2", dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt="fe80::2", S=1),
     "drop-malformed-ndp"),  # solicited, to a multicast group
    (IPv6(src="fe80::2", dst="ff02::1", hlim=255) / ICMPv6ND_RS(), "rs-ignored"),
])
def test_bad_ndp_is_counted_and_dropped(packet, counter):
    st6 = station()
    now = ready(st6)
    assert feed(st6, packet, now, src=OTHER_MAC) == ([], True)
    assert st6.counters[counter] == 1


def test_truncated_ipv6_and_our_own_frames_are_dropped():
    st6 = station()
    now = ready(st6)
    frame = bytes(Ether(src=OTHER_MAC, dst=OUR_MAC) / IPv6(src="fe80::2", dst=LL, plen=400))
    assert st6.handle(frame, now) == ([], True) and st6.counters["drop-malformed"] == 1
    looped = bytes(Ether(src=OUR_MAC, dst="33:33:ff:aa:bb:cc")
                   / IPv6(src="::", dst="ff02::1:ffaa:bbcc", hlim=255) / ICMPv6ND_NS(tgt=LL))
    assert st6.handle(looped, now) == ([], True) and st6.ready, "our own probe is no duplicate"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([128, 129, 133, 134, 135, 136, 137, 1, 2]), st.binary(max_size=120),
       st.sampled_from(["::", ROUTER, GLOBAL]), st.sampled_from([LL, "ff02::1", GLOBAL]),
       st.integers(0, 200))
def test_handle_never_raises(kind, body, src, dst, cut):
    """ICMPv6 of every kind the station reads, with a good checksum (so the parsers run) and
    any body, whole or cut short: counted or answered, never raised."""
    st6 = station()
    now = slaac_up(st6)
    message = encode_icmpv6(b(src), b(dst), kind, 0, body)
    frame = bytes(Ether(src=OTHER_MAC, dst=OUR_MAC) / IPv6(src=src, dst=dst, nh=58, hlim=255)
                  / message)
    st6.handle(frame, now)
    st6.handle(frame[:14 + cut], now)
    st6.tick(now + 5.0)


def test_a_static_address_is_probed_at_start_and_routes_through_its_gateway():
    static = StaticAddress6(b("2001:db8:7::2"), 64, b("2001:db8:7::1"))
    st6 = station("static", static=static)
    changes = []
    st6.on_change = lambda old, new: changes.append((old, new))
    targets = [f[ICMPv6ND_NS].tgt for f in frames(st6.start(0.0))]
    assert targets == [LL, "2001:db8:7::2"]
    st6.tick(1.0)
    assert st6.address == b("2001:db8:7::2") and changes == [(None, b("2001:db8:7::2"))]
    assert st6.next_deadline() is None, "no RS in static mode"
    (ns,) = packets(st6.resolve([outgoing("2001:db8:99::1", src="2001:db8:7::2")], 2.0))
    assert ns[ICMPv6ND_NS].tgt == "2001:db8:7::1"
    (ns,) = packets(st6.resolve([outgoing("2001:db8:7::9", src="2001:db8:7::2")], 2.0))
    assert ns[ICMPv6ND_NS].tgt == "2001:db8:7::9", "on-link in the static prefix"
    feed(st6, advert(mtu=1400), 3.0)  # an RA only sets the MTU
    assert st6.next_hop == b("2001:db8:7::1") and st6.address == b("2001:db8:7::2")
    assert st6.mtu == 1400


def test_construction_mistakes_are_refused():
    with pytest.raises(ValueError, match="mode"):
        UplinkStation6(MAC, "auto")
    with pytest.raises(ValueError, match="static"):
        UplinkStation6(MAC, "static")
    with pytest.raises(ValueError, match="client"):
        UplinkStation6(MAC, "dhcp")
    with pytest.raises(ValueError, match="unicast"):
        UplinkStation6(bytes.fromhex("33330000aabb"), "slaac")


# -- DHCPv6 through our own server -------------------------------------------------------------

SERVER_MAC = "52:54:00:00:00:02"
SERVER_LL = "fe80::2"


def uplink_server() -> Dhcp6Server:
    first, last = int(IPv6Address("2001:db8:1::100")), int(IPv6Address("2001:db8:1::1ff"))
    return Dhcp6Server(Dhcp6Config(bytes.fromhex("525400000002"), b("2001:db8:1::53"), first,
                                   last, int(IPv6Address(PREFIX)), 64, {}, lease_time=3600))


def serve(server: Dhcp6Server, out, now: float) -> list[bytes]:
    """What the uplink network's DHCPv6 server answers to the station's packets, as frames."""
    answers = []
    for frame in frames(out):
        if UDP not in frame or frame[UDP].dport != 547:
            continue
        assert (frame[IPv6].src, frame[IPv6].dst, frame[UDP].sport) == (LL, "ff02::1:2", 546)
        assert frame[Ether].dst == "33:33:00:01:00:02"
        again = Ether(bytes(frame))
        del again[UDP].chksum
        assert Ether(bytes(again))[UDP].chksum == frame[UDP].chksum
        reply = server.handle(bytes(frame[UDP].payload), MAC, now)
        if reply is not None:
            answers.append(bytes(Ether(src=SERVER_MAC, dst=OUR_MAC)
                                 / IPv6(src=SERVER_LL, dst=LL) / UDP(sport=547, dport=546)
                                 / reply))
    return answers


def test_dhcp_mode_leases_when_the_ra_says_managed_and_releases_on_stop():
    server = uplink_server()
    st6 = station("dhcp", client=Dhcp6Client(MAC, rng=random.Random(2)))
    changes = []
    st6.on_change = lambda old, new: changes.append((old, new))
    now = ready(st6)
    assert st6.stats()["dhcp6"] == "off"
    out, _ = st6.handle(bytes(Ether(src=ROUTER_MAC, dst="33:33:00:00:00:01")
                              / advert(managed=True, flags_a=0)), now)
    assert st6.address is None and st6.stats()["dhcp6"] == "soliciting"
    deadline = st6.next_deadline()
    assert deadline is not None and deadline <= now + 1.0  # the first SOLICIT's random delay
    out = st6.tick(deadline)
    (reply,) = serve(server, out, deadline)  # Rapid Commit: REPLY at once
    probe_out, consumed = st6.handle(reply, deadline)
    assert consumed
    (probe,) = frames(probe_out)
    leased = probe[ICMPv6ND_NS].tgt
    assert probe[IPv6].src == "::" and IPv6Address(leased) in (
        IPv6Address("2001:db8:1::100") + i for i in range(256))
    st6.tick(deadline + 1.0)
    assert st6.address == b(leased) and changes == [(None, b(leased))]
    assert st6.dns == (b("2001:db8:1::53"),) and st6.next_hop == b(ROUTER)
    out = st6.stop(deadline + 2.0)
    serve(server, out, deadline + 2.0)
    assert server.leases() == [], "RELEASE gave it back"
    assert st6.address is None and changes[-1] == (b(leased), None)


def test_a_leased_address_found_in_use_is_declined():
    server = uplink_server()
    client = Dhcp6Client(MAC, rng=random.Random(2))
    st6 = station("dhcp", client=client)
    now = ready(st6)
    st6.handle(bytes(Ether(src=ROUTER_MAC, dst="33:33:00:00:00:01") / advert(managed=True)),
               now)
    deadline = st6.next_deadline()
    (reply,) = serve(server, st6.tick(deadline), deadline)
    (probe,) = frames(st6.handle(reply, deadline)[0])
    leased = probe[ICMPv6ND_NS].tgt
    na = IPv6(src=leased, dst="ff02::1", hlim=255) / ICMPv6ND_NA(tgt=leased, O=1) \
        / ICMPv6NDOptDstLLAddr(lladdr=OTHER_MAC)
    out, _ = st6.handle(bytes(Ether(src=OTHER_MAC, dst="33:33:00:00:00:01") / na),
                        deadline + 0.5)
    (decline,) = [f for f in frames(out) if UDP in f]
    assert bytes(decline[UDP].payload)[0] == 9  # DECLINE
    assert st6.address is None and client.state == "declining"
    serve(server, out, deadline + 0.5)
    assert server.table.by_ip(int(IPv6Address(leased))).state.name == "DECLINED"


def test_dhcpv6_replies_need_a_good_checksum_and_a_running_client():
    st6 = station("dhcp", client=Dhcp6Client(MAC, rng=random.Random(2)))
    now = ready(st6)
    reply = Ether(src=SERVER_MAC, dst=OUR_MAC) / IPv6(src=SERVER_LL, dst=LL) \
        / UDP(sport=547, dport=546) / b"\x07abc"
    assert st6.handle(bytes(reply), now) == ([], True)
    assert st6.counters["dhcp6-not-running"] == 1
    st6.handle(bytes(Ether(src=ROUTER_MAC, dst="33:33:00:00:00:01") / advert(managed=True)),
               now)
    reply[UDP].chksum = 0x1234
    assert st6.handle(bytes(reply), now) == ([], True)
    assert st6.counters["drop-bad-checksum"] == 1
