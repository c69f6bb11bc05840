"""Hostile IPv6 around the raw uplink, as hypothesis makes it: valid frames of every kind the
uplink's station (nat.uplink6) and the IPv6 router (nat.router6) read -- NS/NA/RA/RS with
options, DHCPv6 replies to port 546, ICMPv6 errors quoting flows, TCP/UDP to the uplink's
address, fragments, extension chains with routing type 0 and a hop-by-hop header not first --
then mutated, cut, grown and summed again, into ``UplinkStation6.handle``,
``Router6.from_uplink``, ``Router6.from_guest`` and ``Router6.to_guests``.

Nothing raises; everything that comes out is a well-formed packet (vnet header, Ethernet to
the right kind of MAC, IPv6 that decodes, from one of our addresses when we made it, with a
good checksum when we made or re-summed it, nothing link-local routed off its link); the
neighbour caches, the packets held for them, the station's routers and prefixes and the
conntrack stay within their bounds, and ``stats()`` is JSON."""

from __future__ import annotations

import json
import random
import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Reply,
    DHCP6OptClientId,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptServerId,
)
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLQuery,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from nat.conntrack import Conntrack
from nat.gateway6 import Gateway6
from nat.router import ARP_ENTRIES, HELD_ADDRESSES, HELD_PER_ADDRESS, Neighbours
from nat.router6 import L3, Router6
from nat.uplink6 import MAX_PREFIXES, MAX_ROUTERS, StaticAddress6, UplinkStation6
from wire.checksum import internet_checksum
from wire.errors import MalformedPacket
from wire.ipv6 import (
    NEIGHBOR_SOLICIT,
    Ipv6,
    decode_ipv6,
    encode_icmpv6,
    link_local,
    multicast_mac,
    nd_option,
    pseudo_header6,
    solicited_node,
)
from wire.vnet import (
    FLAG_NEEDS_CSUM,
    GSO_TCPV6,
    GSO_UDP_L4,
    NO_OFFLOAD,
    encode_header,
    is_gso,
)

UP_MAC, UP = bytes.fromhex("525400940002"), "52:54:00:94:00:02"
NEXT_MAC, NEXT = bytes.fromhex("525400940001"), "52:54:00:94:00:01"
EVIL = "52:54:00:66:66:66"
GW_MAC, GUEST_MAC = bytes.fromhex("525400000001"), bytes.fromhex("525400000010")
PREFIX, GW, GUEST = "fd42:0:0:1::", "fd42:0:0:1::1", "fd42:0:0:1::10"
UPLINK6, NEXT6, OUTSIDE = "2001:db8:9::2", "2001:db8:9::1", "2001:db8:99::80"
UP_LL, NEXT_LL = str(IPv6Address(link_local(UP_MAC))), "fe80::5054:ff:fe94:1"
CT_MAX = 64


def b(text: str) -> bytes:
    return IPv6Address(text).packed


def is_link_local(address: bytes) -> bool:
    return address[0] == 0xFE and address[1] & 0xC0 == 0x80


# -- the rig: a static station, a NAT66 (or route) router, the next hop and a guest known ----


def station() -> UplinkStation6:
    """The raw uplink's station in static mode, past DAD (its address usable)."""
    st6 = UplinkStation6(UP_MAC, "static", StaticAddress6(b(UPLINK6), 64, b(NEXT6)),
                         rng=random.Random(1))
    st6.start(0.0)
    st6.tick(1.0)
    assert st6.ready and st6.address == b(UPLINK6)
    return st6


def rig(mode: str) -> Router6:
    """The router as the daemon builds it for a raw uplink (``build_station6``,
    ``_uplink_address6``), with the guest's flows of ``GUEST_SEEDS[:3]`` open."""
    gateway = Gateway6(GW_MAC, b(GW), b(PREFIX), 64, rng=random.Random(1))
    router = Router6(gateway, mode)
    router.station = st6 = station()
    if mode == "nat":
        router.conntrack = Conntrack(b(UPLINK6), max_entries=CT_MAX)

    def rebind(_old: bytes | None, new: bytes | None) -> None:  # as the daemon does
        if mode == "nat":
            router.conntrack = Conntrack(new, max_entries=CT_MAX) if new is not None else None

    st6.on_change = rebind
    st6.neighbours.learn(b(NEXT6), NEXT_MAC, 1.0)
    router.guests.learn(b(GUEST), GUEST_MAC, 1.0)
    for seed in GUEST_SEEDS[:3]:
        ip = router.routes(seed)
        assert ip is not None
        assert router.from_guest(seed, ip, 1.0).uplink
    return router


# -- seeds: valid packets of every kind ---------------------------------------------------


def guest(ip6, vnet: bytes = NO_OFFLOAD) -> bytes:
    return vnet + bytes(Ether(src="52:54:00:00:00:10", dst="52:54:00:00:00:01") / ip6)


def _fragments(ip6) -> list:
    return list(fragment6(ip6, 1280))


_G = IPv6(src=GUEST, dst=OUTSIDE)
_BIG_G = IPv6(src=GUEST, dst=OUTSIDE) / IPv6ExtHdrFragment(id=7) / UDP(sport=5353, dport=53)
GUEST_SEEDS: list[bytes] = [
    # the flows the rig opens (the uplink seeds answer them)
    guest(_G / UDP(sport=5353, dport=53) / b"query"),
    guest(_G / TCP(sport=40000, dport=80, flags="S")),
    guest(_G / ICMPv6EchoRequest(id=0x1234, seq=1) / b"ping"),
    # more of the same flows, and the ways a guest packet can be odd
    guest(_G / TCP(sport=40000, dport=80, flags="A") / b"GET / HTTP/1.0\r\n\r\n"),
    guest(_G / TCP(sport=40000, dport=80, flags="A") / bytes(4000),
          encode_header(FLAG_NEEDS_CSUM, GSO_TCPV6, 74, 1400, 54, 16)),  # TSO
    guest(_G / UDP(sport=5353, dport=53) / bytes(3000),
          encode_header(FLAG_NEEDS_CSUM, GSO_UDP_L4, 62, 1200, 54, 6)),  # USO
    guest(_G / UDP(sport=5353, dport=53) / b"partial", encode_header(FLAG_NEEDS_CSUM, 0, 0, 0,
                                                                     54, 6)),
    guest(_G / IPv6ExtHdrHopByHop() / UDP(sport=5353, dport=53) / b"hbh"),
    guest(_G / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(sport=5353, dport=53)),
    guest(_G / IPv6ExtHdrRouting(type=0, addresses=[NEXT6]) / UDP(sport=5353, dport=53)),
    guest(_G / IPv6ExtHdrRouting(type=2, addresses=[NEXT6]) / UDP(sport=5353, dport=53)),
    guest(_G / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt())
          / UDP(sport=5353, dport=53)),  # 9 extension headers
    *(guest(f) for f in _fragments(_BIG_G / bytes(3000))),
    guest(_G / IPv6ExtHdrFragment(id=8, m=1, nh=17) / Raw(bytes(8))),  # tiny first fragment
    guest(_G / IPv6ExtHdrFragment(id=8, m=1, offset=1, nh=17) / Raw(bytes(16))),  # overlap
    guest(IPv6(src=GUEST, dst=OUTSIDE, hlim=1) / UDP(sport=5353, dport=53)),
    guest(_G / UDP(sport=5353, dport=53) / bytes(1600)),  # too big for the uplink
    guest(IPv6(src=GUEST, dst="fe80::99") / UDP(sport=5353, dport=53)),  # link-local
    guest(IPv6(src=GUEST, dst=NEXT6) / UDP(sport=5353, dport=53)),  # on the uplink's link
    guest(IPv6(src=GUEST, dst=UPLINK6) / UDP(sport=5353, dport=5353)),  # hairpin
    guest(IPv6(src="2001:db8::66", dst=OUTSIDE) / UDP(sport=5353, dport=53)),  # BCP 38
    guest(_G / ICMPv6DestUnreach(code=4) / IPv6(src=OUTSIDE, dst=GUEST, hlim=60)
          / UDP(sport=53, dport=5353)),  # an error about a reply
    guest(_G / ICMPv6ND_RA() / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:00:00:10")),
]

_TO_UP = Ether(src=NEXT, dst=UP)
_OUT = IPv6(src=OUTSIDE, dst=UPLINK6)
_SENT_UDP = IPv6(src=UPLINK6, dst=OUTSIDE, hlim=63) / UDP(sport=5353, dport=53) / b"query"
_SENT_TCP = IPv6(src=UPLINK6, dst=OUTSIDE, hlim=63) / TCP(sport=40000, dport=80, flags="S")
_SENT_PING = IPv6(src=UPLINK6, dst=OUTSIDE, hlim=63) / ICMPv6EchoRequest(id=0x1234, seq=1)
_BIG_O = _OUT / IPv6ExtHdrFragment(id=9) / UDP(sport=53, dport=5353)
_CLIENT = DUID_LL(lladdr=UP)
_SERVER = DUID_LL(lladdr=NEXT)


def _to_group(group: str):
    return Ether(src=NEXT, dst=multicast_mac(b(group)).hex(":"))


UPLINK_SEEDS: list[bytes] = [bytes(f) for f in [
    # Neighbor Discovery, each with options
    _to_group(str(IPv6Address(solicited_node(b(UPLINK6)))))
    / IPv6(src=NEXT6, dst=str(IPv6Address(solicited_node(b(UPLINK6)))), hlim=255)
    / ICMPv6ND_NS(tgt=UPLINK6) / ICMPv6NDOptSrcLLAddr(lladdr=NEXT),
    _TO_UP / IPv6(src=NEXT_LL, dst=UP_LL, hlim=255) / ICMPv6ND_NS(tgt=UP_LL)
    / ICMPv6NDOptSrcLLAddr(lladdr=NEXT),
    _to_group(str(IPv6Address(solicited_node(b(UPLINK6)))))
    / IPv6(src="::", dst=str(IPv6Address(solicited_node(b(UPLINK6)))), hlim=255)
    / ICMPv6ND_NS(tgt=UPLINK6),  # DAD for our address
    _TO_UP / IPv6(src=NEXT6, dst=UPLINK6, hlim=255) / ICMPv6ND_NA(tgt=NEXT6, R=1, S=1, O=1)
    / ICMPv6NDOptDstLLAddr(lladdr=NEXT),
    _to_group("ff02::1") / IPv6(src=NEXT6, dst="ff02::1", hlim=255)
    / ICMPv6ND_NA(tgt=NEXT6, R=1, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=EVIL),
    _to_group("ff02::1") / IPv6(src=NEXT_LL, dst="ff02::1", hlim=255)
    / ICMPv6ND_RA(routerlifetime=1800, M=1) / ICMPv6NDOptSrcLLAddr(lladdr=NEXT)
    / ICMPv6NDOptMTU(mtu=1400)
    / ICMPv6NDOptPrefixInfo(prefix="2001:db8:77::", prefixlen=64, L=1, A=1)
    / Raw(b"\x99\x01" + bytes(6)),  # an option nobody knows
    _to_group("ff02::2") / IPv6(src=NEXT_LL, dst="ff02::2", hlim=255) / ICMPv6ND_RS()
    / ICMPv6NDOptSrcLLAddr(lladdr=NEXT),
    _TO_UP / IPv6(src=NEXT_LL, dst=UPLINK6, hlim=255)
    / ICMPv6ND_Redirect(tgt=NEXT_LL, dst=OUTSIDE) / ICMPv6NDOptDstLLAddr(lladdr=EVIL),
    _to_group("ff02::1") / IPv6(src=NEXT_LL, dst="ff02::1", hlim=1) / IPv6ExtHdrHopByHop()
    / ICMPv6MLQuery(),
    # echo to the station
    _TO_UP / IPv6(src=NEXT6, dst=UPLINK6) / ICMPv6EchoRequest(id=7, seq=1) / b"are you",
    _TO_UP / IPv6(src=NEXT_LL, dst=UP_LL) / ICMPv6EchoRequest(id=8, seq=1),
    # DHCPv6 to the station's client port (it has no client in static mode)
    _TO_UP / IPv6(src=NEXT_LL, dst=UP_LL) / UDP(sport=547, dport=546)
    / DHCP6_Reply(trid=0x123456) / DHCP6OptClientId(duid=_CLIENT)
    / DHCP6OptServerId(duid=_SERVER) / DHCP6OptServerId(duid=_SERVER)
    / DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr="2001:db8:9::77")]),
    # replies in the guest's flows, and strangers
    _TO_UP / _OUT / UDP(sport=53, dport=5353) / b"answer",
    _TO_UP / _OUT / TCP(sport=80, dport=40000, flags="SA"),
    _TO_UP / _OUT / ICMPv6EchoReply(id=0x1234, seq=1) / b"ping",
    _TO_UP / _OUT / TCP(sport=80, dport=22, flags="S"),
    _TO_UP / _OUT / UDP(sport=53, dport=9999),
    # ICMPv6 errors quoting the flows, and one quoting no flow
    _TO_UP / IPv6(src=NEXT6, dst=UPLINK6) / ICMPv6DestUnreach(code=3) / _SENT_UDP,
    _TO_UP / IPv6(src=NEXT6, dst=UPLINK6) / ICMPv6PacketTooBig(mtu=1280) / _SENT_TCP,
    _TO_UP / IPv6(src=NEXT6, dst=UPLINK6) / ICMPv6TimeExceeded() / _SENT_PING,
    _TO_UP / IPv6(src=NEXT6, dst=UPLINK6) / ICMPv6DestUnreach(code=4)
    / IPv6(src=UPLINK6, dst=OUTSIDE) / UDP(sport=4444, dport=9),
    # fragments and extension chains
    *(_TO_UP / f for f in _fragments(_BIG_O / bytes(3000))),
    _TO_UP / _OUT / IPv6ExtHdrFragment(id=10, m=1, nh=17) / Raw(bytes(8)),  # tiny
    _TO_UP / _OUT / IPv6ExtHdrFragment(id=10, m=1, offset=1, nh=17) / Raw(bytes(16)),
    _TO_UP / _OUT / IPv6ExtHdrHopByHop() / UDP(sport=53, dport=5353) / b"hbh",
    _TO_UP / _OUT / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(sport=53, dport=5353),
    _TO_UP / _OUT / IPv6ExtHdrRouting(type=0, addresses=[UPLINK6]) / UDP(sport=53, dport=5353),
    _TO_UP / _OUT / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                     / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                     / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt())
    / UDP(sport=53, dport=5353),
    # route mode's traffic: to the guest prefix, and from a link-local source
    _TO_UP / IPv6(src=OUTSIDE, dst=GUEST) / UDP(sport=53, dport=5353) / b"routed",
    _TO_UP / IPv6(src=NEXT_LL, dst=GUEST) / UDP(sport=53, dport=5353),
    _TO_UP / IPv6(src=NEXT_LL, dst=UPLINK6) / UDP(sport=53, dport=5353),
]]


# -- mutation -----------------------------------------------------------------------------

KINDS = ("xor", "xor-l4", "set-l4", "cut", "insert", "delete", "append", "plen", "nh", "hlim",
         "src", "dst")
EDIT = st.tuples(st.sampled_from(KINDS), st.integers(0, 1 << 12), st.integers(0, 255),
                 st.binary(max_size=24))
ADDRESSES = [b(a) for a in ("::", "ff02::1", "ff02::1:ff00:2", NEXT_LL, UP_LL, UPLINK6, NEXT6,
                            GUEST, OUTSIDE, "fe80::99", "::1")]
NEXT_HEADERS = (0, 6, 17, 43, 44, 58, 59, 60, 99)


def mutate(frame: bytes, edits: list[tuple[str, int, int, bytes]], first: int = 6) -> bytes:
    """``frame`` edited; nothing before byte ``first`` changes (6: the destination MAC)."""
    buf = bytearray(frame)
    for kind, at, value, data in edits:
        n = len(buf)
        if kind == "xor" and n > first:
            buf[first + at % (n - first)] ^= value or 1
        elif kind in ("xor-l4", "set-l4") and n > 54:
            where = 54 + at % (n - 54)
            buf[where] = buf[where] ^ (value or 1) if kind == "xor-l4" else value
        elif kind == "cut":
            del buf[max(first, at % (n + 1)):]
        elif kind == "insert":
            where = max(first, at % (n + 1))
            buf[where:where] = data
        elif kind == "delete":
            where = max(first, at % (n + 1))
            del buf[where:where + 1 + value % 16]
        elif kind == "append":
            buf += data
        elif n >= 54 and kind == "plen":
            buf[18:20] = struct.pack("!H", (at * 17 + value) & 0xFFFF)
        elif n >= 54 and kind == "nh":
            buf[20] = NEXT_HEADERS[value % len(NEXT_HEADERS)]
        elif n >= 54 and kind == "hlim":
            buf[21] = (0, 1, 2, 64, 254, 255)[value % 6]
        elif n >= 54 and kind in ("src", "dst"):
            where = 22 if kind == "src" else 38
            buf[where:where + 16] = ADDRESSES[value % len(ADDRESSES)]
    return bytes(buf)


def repair(frame: bytes, how: str) -> bytes:
    """``frame`` made consistent again after the edits, so the parsers go deeper: the IPv6
    payload length ("plen"), and then the upper-layer checksum too ("sum")."""
    if how == "none" or len(frame) < 54:
        return frame
    buf = bytearray(frame)
    buf[18:20] = struct.pack("!H", min(len(buf) - 54, 0xFFFF))
    if how != "sum":
        return bytes(buf)
    try:
        ip = decode_ipv6(bytes(buf))
    except MalformedPacket:
        return bytes(buf)
    at = {58: 2, 17: 6, 6: 16}.get(ip.proto)
    if at is None or ip.start + at + 2 > ip.end or (ip.fragment and ip.fragment[1]):
        return bytes(buf)
    buf[ip.start + at:ip.start + at + 2] = b"\0\0"
    check = internet_checksum(pseudo_header6(ip.src, ip.dst, ip.proto, ip.end - ip.start)
                              + bytes(buf[ip.start:ip.end]))
    buf[ip.start + at:ip.start + at + 2] = struct.pack("!H", check or 0xFFFF)
    return bytes(buf)


VNETS = [NO_OFFLOAD, encode_header(FLAG_NEEDS_CSUM, 0, 0, 0, 54, 6),
         encode_header(FLAG_NEEDS_CSUM, 0, 0, 0, 54, 2),
         encode_header(FLAG_NEEDS_CSUM, 0, 0, 0, 54, 16),
         encode_header(FLAG_NEEDS_CSUM, 0, 0, 0, 4000, 16),  # outside the frame
         encode_header(FLAG_NEEDS_CSUM, GSO_TCPV6, 74, 1400, 54, 16),
         encode_header(0, GSO_UDP_L4, 62, 0, 0, 0)]


@st.composite
def from_outside(draw: st.DrawFn) -> bytes:
    """A packet from the uplink network: a seed (or random bytes) mutated, to the uplink's
    MAC or to a group, with the vnet header the kernel gave it (mostly none)."""
    if draw(st.integers(0, 9)) == 0:
        ether = draw(st.sampled_from([UP_MAC, b"\x33\x33\x00\x00\x00\x01", b"\xff" * 6]))
        frame = ether + NEXT_MAC + b"\x86\xdd" + draw(st.binary(max_size=200))
    else:
        frame = UPLINK_SEEDS[draw(st.integers(0, len(UPLINK_SEEDS) - 1))]
    frame = mutate(frame, draw(st.lists(EDIT, max_size=4)))
    frame = repair(frame, draw(st.sampled_from(["none", "plen", "sum", "sum"])))
    vnet = draw(st.sampled_from(VNETS)) if draw(st.integers(0, 7)) == 0 else NO_OFFLOAD
    return vnet + frame


@st.composite
def from_guest(draw: st.DrawFn) -> bytes:
    """A guest's packet to the gateway's MAC: a seed mutated past the MACs (the switch drops
    multicast sources), with the seed's vnet header or another (a guest writes its own)."""
    packet = GUEST_SEEDS[draw(st.integers(0, len(GUEST_SEEDS) - 1))]
    vnet, frame = packet[:10], packet[10:]
    frame = mutate(frame, draw(st.lists(EDIT, max_size=4)), first=12)
    frame = repair(frame, draw(st.sampled_from(["none", "plen", "sum", "sum"])))
    if draw(st.integers(0, 7)) == 0:
        vnet = draw(st.sampled_from(VNETS))
    return vnet + frame


# -- what must hold of everything that comes out ----------------------------------------------


def l4_ok(frame: bytes | bytearray, ip: Ipv6) -> bool:
    """The upper-layer checksum of a whole (unfragmented) packet verifies."""
    at = {58: 2, 17: 6, 6: 16}[ip.proto]
    if ip.proto == 17 and frame[ip.start + at:ip.start + at + 2] == b"\0\0":
        return False
    return internet_checksum(pseudo_header6(ip.src, ip.dst, ip.proto, ip.end - ip.start)
                             + bytes(frame[ip.start:ip.end])) in (0, 0xFFFF)


def well_formed(packet: bytes | bytearray, src_mac: bytes, ours: set[bytes], who: str,
                routed: bool = False) -> Ipv6:
    """One packet out (vnet header + frame): Ethernet from ``src_mac`` to the MAC its IPv6
    destination needs, IPv6 that decodes; what we made (hop limit 255, or from one of
    ``ours`` unless it may be ``routed``, NAT66 giving it our address: ND, errors) is summed
    right and fits the minimum MTU; routed packets keep link-local addresses on their link
    (RFC 4291 2.5.6) and leave with hop limit below 255."""
    assert len(packet) >= L3 + 40, f"{who}: {len(packet)} bytes"
    assert bytes(packet[L3 - 2:L3]) == b"\x86\xdd", who
    assert bytes(packet[16:22]) == src_mac, f"{who}: from {bytes(packet[16:22]).hex(':')}"
    ip = decode_ipv6(bytes(packet), L3)
    dst_mac = bytes(packet[10:16])
    assert ip.src[0] != 0xFF, f"{who}: a multicast source (RFC 4291 2.7)"
    if ip.dst[0] == 0xFF:
        assert dst_mac == multicast_mac(ip.dst), f"{who}: {dst_mac.hex(':')} for a group"
    else:
        assert not dst_mac[0] & 1 and any(dst_mac), f"{who}: unicast to {dst_mac.hex(':')}"
    made = ip.hop_limit == 255 or ip.src in ours and not routed
    if ip.hop_limit == 255:
        assert ip.src in ours or ip.src == bytes(16), f"{who}: hop limit 255 not from us"
    whole = ip.fragment is None and not packet[0] & FLAG_NEEDS_CSUM and not is_gso(packet)
    if made and whole and ip.proto == 58:
        kind = packet[ip.start]
        if kind < 128 or kind in (133, 134, 135, 136):
            assert l4_ok(packet, ip), f"{who}: ICMPv6 type {kind} checksum"
        if kind < 128:
            assert ip.end - L3 <= 1280, f"{who}: an error of {ip.end - L3} bytes"
    if not made:
        assert not is_link_local(ip.src) and not is_link_local(ip.dst), \
            f"{who}: routed with a link-local address"
    return ip


def bounded(router: Router6) -> None:
    st6 = router.station
    assert isinstance(st6, UplinkStation6)
    caches: list[Neighbours] = [st6.neighbours, router.guests]
    for cache in caches:
        assert len(cache.cache) <= ARP_ENTRIES
        assert len(cache.held) <= HELD_ADDRESSES
        assert all(len(queue) <= HELD_PER_ADDRESS for _, queue in cache.held.values())
    assert len(st6._probes) <= HELD_ADDRESSES
    assert len(st6._routers) <= MAX_ROUTERS and len(st6._on_link) <= MAX_PREFIXES
    assert len(st6._tentative) <= 2
    conntrack = router.conntrack
    if conntrack is not None:
        assert len(conntrack) <= CT_MAX
        fragments = conntrack.fragments
        assert len(fragments) <= fragments.max_datagrams
        assert 0 <= fragments.held_bytes <= fragments.max_held_bytes
    json.dumps(router.stats())


def station_ours(st6: UplinkStation6) -> set[bytes]:
    return {st6.link_local} | ({st6.address} if st6.address is not None else set())


def check_uplink(out: list[bytes | bytearray], router: Router6, who: str,
                 routed: bool = False) -> None:
    st6 = router.station
    assert isinstance(st6, UplinkStation6)
    for packet in out:
        ip = well_formed(packet, UP_MAC, station_ours(st6), who, routed)
        if router.mode == "nat" and ip.src not in station_ours(st6):
            raise AssertionError(f"{who}: NAT66 let {IPv6Address(ip.src)} out")


def check_switch(out: list[bytes], router: Router6,
                 who: str) -> list[tuple[bytes, Ipv6]]:
    gateway = router.gateway
    ours = set(gateway.addresses)
    delivered = []
    for packet in out:
        ip = well_formed(packet, GW_MAC, ours, who)
        if ip.src in ours and packet[L3 + 6] == 58 and packet[ip.start] == NEIGHBOR_SOLICIT:
            continue  # the gateway resolving a guest
        dst_mac = bytes(packet[10:16])
        assert router.guests.lookup(ip.dst, 1e9) in (dst_mac, None), f"{who}: wrong guest MAC"
        delivered.append((packet, ip))
    return delivered


# -- the tests ----------------------------------------------------------------------------------


STEPS = st.lists(st.tuples(st.booleans(), st.floats(0.0, 4.0)), min_size=1, max_size=10)


@pytest.mark.parametrize("mode", ["nat", "route"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), steps=STEPS)
def test_the_router_survives_hostile_ipv6_both_ways(mode, data, steps):
    """Each step a guest's packet or one from the uplink network, time going on, the timers
    run between: outputs well-formed, state bounded, checksums that were good stay good."""
    router = rig(mode)
    st6 = router.station
    assert isinstance(st6, UplinkStation6)
    now = 2.0
    for inbound, wait in steps:
        before = len(st6.neighbours.cache), len(router.guests.cache)
        if inbound:
            packet = data.draw(from_outside(), label="from the uplink")
            out = router.from_uplink(packet, now)
            check_uplink(out.uplink, router, "from_uplink -> uplink")
            delivered = check_switch(out.switch, router, "from_uplink -> switch")
            try:
                ip_in = decode_ipv6(packet, L3)
            except MalformedPacket:
                ip_in = None
            if (ip_in is not None and ip_in.fragment is None and ip_in.proto in (6, 17, 58)
                    and not packet[0] & FLAG_NEEDS_CSUM and l4_ok(packet, ip_in)):
                for sent, ip in delivered:  # RFC 1624: updated, a good sum stays good
                    assert l4_ok(sent, ip), "from_uplink -> switch: checksum broken"
            for _, ip in delivered:
                assert router.mode == "route" or ip.dst == b(GUEST)
            if delivered:
                event("delivered to a guest")
        else:
            packet = data.draw(from_guest(), label="from a guest")
            ip = router.routes(packet)
            if ip is None:
                continue  # the gateway's own (its stack is fuzzed elsewhere)
            out = router.from_guest(packet, ip, now)
            check_uplink(out.uplink, router, "from_guest -> uplink", routed=True)
            for sent in out.uplink:  # what the station resolves for a routed packet
                if sent[L3 + 6] == 58 and len(sent) > L3 + 40 \
                        and sent[L3 + 40] == NEIGHBOR_SOLICIT:
                    target = bytes(sent[L3 + 48:L3 + 64])
                    assert not is_link_local(target) or target == st6.next_hop, \
                        "from_guest -> uplink: resolving a link-local destination"
            for _, error in check_switch(out.switch, router, "from_guest -> switch"):
                assert error.src in router.gateway.addresses and error.dst == ip.src
                event("an error to the guest")
            if out.uplink:
                event("routed out")
        after = len(st6.neighbours.cache), len(router.guests.cache)
        assert after[0] <= before[0] + 1 and after[1] <= before[1] + 1
        now += wait
        check_uplink([NO_OFFLOAD + f for f in st6.tick(now)], router, "tick")
        router.expire(now)  # the NAT66 flows too
        bounded(router)
    for key in (*router.counters, *st6.counters):  # --hypothesis-show-statistics
        event(key)


@pytest.mark.parametrize("mode", ["static", "slaac"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), steps=STEPS)
def test_the_station_survives_hostile_frames(mode, data, steps):
    """``UplinkStation6.handle`` alone (SLAAC too: RAs move its state), with ``resolve`` and
    ``tick`` between: well-formed frames, never raised, bounded."""
    if mode == "static":
        st6 = station()
    else:
        st6 = UplinkStation6(UP_MAC, "slaac", rng=random.Random(1))
        st6.start(0.0)
        st6.tick(1.0)
    now = 2.0
    ours = station_ours(st6)
    for resolve, wait in steps:
        packet = data.draw(from_outside(), label="frame")
        frames, taken = st6.handle(packet[10:], now)
        assert isinstance(taken, bool)
        for frame in frames:
            assert isinstance(frame, bytes)
            well_formed(NO_OFFLOAD + frame, UP_MAC, station_ours(st6) | ours, "handle")
        if resolve:
            outgoing = NO_OFFLOAD + bytes(
                Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                / IPv6(src=UPLINK6, dst=data.draw(st.sampled_from(
                    [OUTSIDE, NEXT6, "2001:db8:9::77", "2001:db8:77::5", "ff02::1"])))
                / UDP(sport=5353, dport=53))
            for packet in st6.resolve([outgoing], now):
                well_formed(packet, UP_MAC, station_ours(st6) | ours, "resolve")
        now += wait
        ours |= station_ours(st6)
        for frame in st6.tick(now):
            well_formed(NO_OFFLOAD + frame, UP_MAC, station_ours(st6) | ours, "tick")
        assert len(st6.neighbours.cache) <= ARP_ENTRIES
        assert len(st6.neighbours.held) <= HELD_ADDRESSES
        assert len(st6._routers) <= MAX_ROUTERS and len(st6._on_link) <= MAX_PREFIXES
        json.dumps(st6.stats())
    for key in st6.counters:
        event(key)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from([GUEST, "fd42:0:0:1::11", "fd42:0:0:1::ffff", "fd42:0:0:1:2::3", OUTSIDE,
                     "fe80::10"]),
    st.sampled_from(["tcp", "udp", "icmpv6", "fragment", "hop-by-hop"]),
    st.binary(max_size=64),
    st.sampled_from(VNETS[:2])), min_size=1, max_size=12), st.floats(0.0, 10.0))
def test_to_guests_addresses_or_solicits(packets, later):
    """IPv6 packets for guests (as translation and the host uplink make them): a known
    guest's go to its MAC, untouched past the MACs; an unknown one is asked for once, its
    packets held (a few) until it answers."""
    router = rig("nat")
    now = 2.0
    given_packets = []
    for dst, upper, payload, vnet in packets:
        layer = {"tcp": IPv6(nh=6), "udp": IPv6(nh=17), "icmpv6": IPv6(nh=58),
                 "fragment": IPv6() / IPv6ExtHdrFragment(nh=17, id=5, offset=8),
                 "hop-by-hop": IPv6() / IPv6ExtHdrHopByHop(nh=17)}[upper]
        layer.src, layer.dst = OUTSIDE, dst
        given_packets.append(vnet + bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                                          / layer / payload))
    out = router.to_guests(given_packets, now)
    solicited = set()
    for packet in out.switch:
        ip = well_formed(packet, GW_MAC, set(router.gateway.addresses), "to_guests")
        if ip.src in router.gateway.addresses:
            assert packet[ip.start] == NEIGHBOR_SOLICIT
            target = bytes(packet[ip.start + 8:ip.start + 24])
            assert target not in solicited, "one solicitation per address"
            solicited.add(target)
        else:
            assert bytes(packet[10:16]) == GUEST_MAC and ip.dst == b(GUEST)
    sent = [p for p in out.switch if bytes(p[10:16]) == GUEST_MAC]
    assert [bytes(p[22:]) for p in sent] == [
        p[22:] for p in given_packets if p[L3 + 24:L3 + 40] == b(GUEST)]
    bounded(router)
    router.expire(now + later)
    bounded(router)


# -- floods: the bounds reached ----------------------------------------------------------------


def test_a_flood_of_solicitations_from_new_sources_is_bounded():
    """Every NS for our address teaches its source (RFC 4861 7.2.3): the cache stays at
    ``ARP_ENTRIES``, the oldest forgotten."""
    st6 = station()
    target = b(UPLINK6)
    group = solicited_node(target)
    for n in range(ARP_ENTRIES + 300):
        src = b("2001:db8:9::")[:12] + struct.pack("!I", n + 0x100)
        mac = bytes([0x52, 0x54, 0, 0]) + struct.pack("!H", n)
        message = encode_icmpv6(src, group, NEIGHBOR_SOLICIT, 0,
                                bytes(4) + target + nd_option(1, mac))
        frame = (multicast_mac(group) + mac + b"\x86\xdd"
                 + struct.pack("!IHBB", 6 << 28, len(message), 58, 255) + src + group + message)
        answers, taken = st6.handle(frame, 2.0)
        assert taken and len(answers) == 1
    assert len(st6.neighbours.cache) == ARP_ENTRIES


def test_a_flood_of_unresolvable_next_hops_holds_a_bounded_number_of_packets():
    """Route mode, a guest sending to many addresses on the uplink's own prefix that nobody
    answers for: a few packets held per address, ``HELD_ADDRESSES`` addresses at most, and
    after ``MAX_MULTICAST_SOLICIT`` solicitations nothing is held."""
    router = rig("route")
    st6 = router.station
    assert isinstance(st6, UplinkStation6)
    now = 2.0
    for n in range(HELD_ADDRESSES + 200):
        dst = str(IPv6Address(b(NEXT6)[:12] + struct.pack("!I", n + 0x1000)))
        for _ in range(HELD_PER_ADDRESS + 2 if n < 3 else 1):
            packet = guest(IPv6(src=GUEST, dst=dst) / UDP(sport=5353, dport=53))
            ip = router.routes(packet)
            assert ip is not None
            check_uplink(router.from_guest(packet, ip, now).uplink, router, "flood", True)
    bounded(router)
    assert len(st6.neighbours.held) == HELD_ADDRESSES
    assert st6.neighbours.dropped >= 200 + 3 * 2
    for step in range(1, 8):
        check_uplink([NO_OFFLOAD + f for f in st6.tick(now + step)], router, "tick")
    assert st6.neighbours.held == {} and st6._probes == {}


def test_a_flood_of_new_flows_fills_the_conntrack_and_no_more():
    router = rig("nat")
    assert router.conntrack is not None
    for port in range(1000, 1000 + 3 * CT_MAX):
        packet = guest(IPv6(src=GUEST, dst=OUTSIDE) / UDP(sport=port, dport=53))
        ip = router.routes(packet)
        assert ip is not None
        out = router.from_guest(packet, ip, 2.0)
        check_uplink(out.uplink, router, "flood", routed=True)
        check_switch(out.switch, router, "flood")
    bounded(router)
    assert len(router.conntrack) == CT_MAX  # the oldest unreplied flows made room (Rule 7)
    assert router.conntrack.stats["early-drop"] == 3 + 3 * CT_MAX - CT_MAX


# -- what the fuzzing found, pinned ------------------------------------------------------------


def test_answers_never_go_to_a_group_mac_or_from_a_group_address():
    """A solicitation whose source link-layer option is a group MAC, frames from a group or
    all-zero MAC, packets from a multicast address (RFC 4291 2.7): nobody could take the
    answer, so there is none; each is counted."""
    st6 = station()
    group = str(IPv6Address(solicited_node(b(UPLINK6))))
    bad_option = (Ether(src=NEXT, dst=multicast_mac(b(group)).hex(":"))
                  / IPv6(src=NEXT6, dst=group, hlim=255) / ICMPv6ND_NS(tgt=UPLINK6)
                  / ICMPv6NDOptSrcLLAddr(lladdr="33:33:00:00:00:01"))
    assert st6.handle(bytes(bad_option), 2.0) == ([], True)
    assert st6.counters["drop-malformed-ndp"] == 1
    ping = IPv6(src=NEXT6, dst=UPLINK6) / ICMPv6EchoRequest()
    for src_mac in ("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"):
        assert st6.handle(bytes(Ether(src=src_mac, dst=UP) / ping), 2.0) == ([], True)
    assert st6.counters["drop-bad-source-mac"] == 2
    from_group = Ether(src=NEXT, dst=UP) / IPv6(src="ff02::1", dst=UPLINK6) / ICMPv6EchoRequest()
    assert st6.handle(bytes(from_group), 2.0) == ([], True)
    assert st6.counters["drop-multicast-source"] == 1
    [reply], _ = st6.handle(bytes(Ether(src=NEXT, dst=UP) / ping), 2.0)  # and the real one
    assert Ether(reply)[ICMPv6EchoReply] and Ether(reply).dst == NEXT
    # an advertisement naming a group MAC for an address being resolved teaches nothing
    held = guest(IPv6(src=UPLINK6, dst="2001:db8:9::77") / UDP(dport=53))
    assert len(st6.resolve([held], 2.0)) == 1  # the solicitation
    advert = (Ether(src=NEXT, dst=UP) / IPv6(src="2001:db8:9::77", dst=UPLINK6, hlim=255)
              / ICMPv6ND_NA(tgt="2001:db8:9::77", S=1, O=1)
              / ICMPv6NDOptDstLLAddr(lladdr="01:00:5e:00:00:01"))
    assert st6.handle(bytes(advert), 2.1) == ([], True)
    assert st6.neighbours.lookup(b("2001:db8:9::77"), 2.1) is None
    assert st6.counters["drop-malformed-ndp"] == 2


def test_link_local_addresses_are_not_routed_off_their_link():
    """RFC 4291 2.5.6: a guest's packet to a link-local address is not translated or routed
    out of the uplink, and one from a link-local (or unspecified) source on the uplink's link
    does not reach the guests; both are counted, as is what is for none of our addresses."""
    for mode in ("nat", "route"):
        router = rig(mode)
        packet = guest(IPv6(src=GUEST, dst="fe80::99") / UDP(sport=5353, dport=53))
        ip = router.routes(packet)
        assert ip is not None
        assert router.from_guest(packet, ip, 2.0) == ([], [])
        assert router.counters["drop-destination-not-routable"] == 1
        assert "link-local" in router.explain(packet, ip)[0][0]
        for src, dst in ((NEXT_LL, GUEST), ("::", GUEST), (NEXT_LL, UPLINK6)):
            inbound = NO_OFFLOAD + bytes(_TO_UP / IPv6(src=src, dst=dst)
                                         / UDP(sport=53, dport=5353))
            assert router.from_uplink(inbound, 2.0) == ([], [])
        assert router.counters["drop-source-not-routable"] == 3
        stray = NO_OFFLOAD + bytes(_TO_UP / IPv6(src=OUTSIDE, dst="2001:db8:9::99")
                                   / UDP(sport=53, dport=5353))
        assert router.from_uplink(stray, 2.0) == ([], [])
        wanted = "drop-not-for-uplink-address" if mode == "nat" else "drop-not-for-guest-prefix"
        assert router.counters[wanted] == 1
    # and what is routable still is
    router = rig("route")
    routed = NO_OFFLOAD + bytes(_TO_UP / IPv6(src=OUTSIDE, dst=GUEST) / UDP(dport=7))
    assert len(router.from_uplink(routed, 2.0).switch) == 1


def test_the_station_shows_its_dhcp6_clients_drops():
    from dhcp.client6 import Dhcp6Client

    st6 = UplinkStation6(UP_MAC, "dhcp", rng=random.Random(1),
                         client=Dhcp6Client(UP_MAC, rng=random.Random(2)))
    st6.start(0.0)
    st6.tick(1.0)
    ra = (Ether(src=NEXT, dst="33:33:00:00:00:01") / IPv6(src=NEXT_LL, dst="ff02::1", hlim=255)
          / ICMPv6ND_RA(M=1, routerlifetime=1800))
    st6.handle(bytes(ra), 1.0)
    reply = (Ether(src=NEXT, dst=UP) / IPv6(src=NEXT_LL, dst=UP_LL) / UDP(sport=547, dport=546)
             / DHCP6_Reply(trid=1) / Raw(b"\x00\x02\x00\x20\x00"))  # an option cut short
    assert st6.handle(bytes(reply), 1.5) == ([], True)
    assert st6.stats()["dhcp6-client-malformed"] == 1
