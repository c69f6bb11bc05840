"""Ethernet, ARP, IPv4, UDP and ICMP headers at fixed offsets: decode and encode.

Rule 1: frames here are plain Ethernet frames (no virtio-net header); addresses are ``bytes``
        (MAC 6, IPv4 4) and every offset is checked before it is read (MalformedPacket).
Rule 2: one ``struct.Struct`` per header, module level; no object per header on the hot path.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from typing import Any, Final, NamedTuple

from wire.checksum import internet_checksum, pseudo_header_sum
from wire.errors import MalformedPacket

ETH: Final = struct.Struct("!6s6sH")
U16_BE: Final = struct.Struct("!H")
ARP: Final = struct.Struct("!HHBBH6s4s6s4s")
IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
UDP: Final = struct.Struct("!HHHH")
ICMP_HEADER: Final = struct.Struct("!BBHI")

#: IPv4 flags and fragment offset (RFC 791 3.1), the 16-bit word at offset 6.
IPV4_DF: Final = 0x4000
IPV4_MF: Final = 0x2000
IPV4_OFFSET: Final = 0x1FFF
#: MF or an offset: the packet is a fragment (the flags and offset word, DF masked off).
IPV4_FRAGMENTED: Final = IPV4_MF | IPV4_OFFSET

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_ARP: Final = 0x0806
PROTO_ICMP: Final = 1
ICMP_ECHO_REPLY: Final = 0
ICMP_ECHO_REQUEST: Final = 8
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58
#: The protocols' names, as tcpdump and conntrack -L print them.
PROTO_NAMES: Final = {PROTO_ICMP: "icmp", PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMPV6: "icmp6"}
BROADCAST_MAC: Final = b"\xff" * 6
BROADCAST_IP: Final = b"\xff" * 4


class Ipv4(NamedTuple):
    """A decoded IPv4 header and where its payload lies in the frame (a NamedTuple, as
    ``nat.translate.Flow``: one is made per packet, and a frozen dataclass costs 3x more)."""

    src: bytes
    """Source address, 4 bytes."""
    dst: bytes
    """Destination address, 4 bytes."""
    proto: int
    """IP protocol number (1 ICMP, 6 TCP, 17 UDP)."""
    ttl: int
    """Time to live."""
    ident: int
    """Identification field."""
    fragment: int
    """Flags and fragment offset field (0x4000 is DF alone)."""
    start: int
    """Offset of the IP payload in the frame."""
    end: int
    """Offset just past the IP payload (total length; any Ethernet padding excluded)."""


def ipv4_ihl(packet: bytes | bytearray, at: int) -> int:
    """The length in bytes of the IPv4 header at ``at`` (its IHL field counts 32-bit words);
    unchecked: decode_ipv4 checks it."""
    return (packet[at] & 0x0F) * 4


_new = tuple.__new__  # a NamedTuple made without its keyword-parsing __new__: 2x faster


def decode_ipv4(frame: bytes, offset: int = 14, _unpack: Any = IPV4.unpack_from,
                _from: Any = int.from_bytes) -> Ipv4:
    """The IPv4 header at ``offset``; RFC 791 3.1 checks: version, IHL >= 5, lengths, checksum.

    Once per packet on the NAT and host-uplink paths: the struct's method and ``from_bytes``
    are bound as defaults (local lookups) and the checks share one branch, which keeps it as
    fast as the plain-tuple parser it replaced (``python -m bench.decoders``).
    """
    try:
        vihl, _, total, ident, frag, ttl, proto, _, src, dst = _unpack(frame, offset)
    except struct.error:
        raise MalformedPacket("IPv4 header truncated") from None
    ihl = (vihl & 0x0F) * 4
    end = offset + total
    if vihl >> 4 != 4 or ihl < 20 or total < ihl or end > len(frame):
        raise MalformedPacket("not IPv4, IHL < 5, or a total length the frame does not hold")
    if _from(frame[offset:offset + ihl], "big") % 0xFFFF:  # a valid header sums to -0
        raise MalformedPacket("IPv4 header checksum")  # (wire.checksum Rule 1)
    return _new(Ipv4, (src, dst, proto, ttl, ident, frag, offset + ihl, end))


def encode_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64,
                ident: int = 0, dont_fragment: bool = True) -> bytes:
    header = bytearray(IPV4.pack(0x45, 0, 20 + len(payload), ident,
                                 0x4000 if dont_fragment else 0, ttl, proto, 0, src, dst))
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header) + payload


#: IEEE 802.1Q C-tag and 802.1ad S-tag: a 4-byte tag, then the type of what follows.
VLAN_TPIDS: Final = frozenset({0x8100, 0x88A8})
#: Tags walked before a frame counts as malformed: 802.1ad's two (QinQ), with room to spare.
MAX_VLAN_TAGS: Final = 4


class Ethernet(NamedTuple):
    """An Ethernet header, and its payload's type and offset after any VLAN tags."""

    dst: bytes
    src: bytes
    ethertype: int
    """The type of the payload (after the tags)."""
    tags: int
    """How many 802.1Q/802.1ad tags stood before it."""
    start: int
    """Offset of the payload (its L3 header) in the frame."""


def decode_ethernet(frame: bytes, offset: int = 0) -> Ethernet:
    """The Ethernet header at ``offset``; VLAN tags are walked, at most ``MAX_VLAN_TAGS``."""
    try:
        dst, src, ethertype = ETH.unpack_from(frame, offset)
        at, tags = offset + 14, 0
        while ethertype in VLAN_TPIDS:
            tags += 1
            if tags > MAX_VLAN_TAGS:
                raise MalformedPacket(f"more than {MAX_VLAN_TAGS} VLAN tags")
            ethertype = U16_BE.unpack_from(frame, at + 2)[0]
            at += 4
    except struct.error:
        raise MalformedPacket("frame ends inside its Ethernet header or VLAN tags") from None
    return _new(Ethernet, (dst, src, ethertype, tags, at))


def encode_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return ETH.pack(dst, src, ethertype) + payload


def format_ip(address: bytes) -> str:
    """An IPv4 (4 bytes) or IPv6 (16 bytes) address as text, for people."""
    return str(ipaddress.ip_address(address))


def address_port(address: bytes, port: int) -> str:
    """``192.0.2.1:80`` or ``[2001:db8::1]:80``: a 4- or 16-byte address and a port, for
    people."""
    text = format_ip(address)
    return f"[{text}]:{port}" if len(address) == 16 else f"{text}:{port}"


def format_mac(mac: bytes) -> str:
    """``52:54:00:12:34:56``: a MAC as people and ``ip link`` write it."""
    return mac.hex(":")


def qemu_mac(seed: str) -> bytes:
    """A stable MAC in qemu's locally administered 52:54:00 range, from ``seed`` (a port name,
    or a role and the switch's name)."""
    return b"\x52\x54\x00" + zlib.crc32(seed.encode()).to_bytes(4, "big")[:3]


def encode_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with its checksum (RFC 768: a computed 0 is sent as 0xFFFF)."""
    length = 8 + len(payload)
    segment = UDP.pack(sport, dport, length, 0) + payload
    csum = internet_checksum(pseudo_header_sum(src, dst, PROTO_UDP, length) + segment) or 0xFFFF
    return segment[:6] + struct.pack("!H", csum) + segment[8:]


class Udp(NamedTuple):
    """A decoded UDP header and its payload (RFC 768)."""

    sport: int
    dport: int
    payload: bytes


def decode_udp(frame: bytes, ip: Ipv4) -> Udp:
    """The UDP datagram in ``ip``'s payload: its length must fit that payload."""
    if ip.end - ip.start < 8:
        raise MalformedPacket("UDP header truncated")
    sport, dport, length, _ = UDP.unpack_from(frame, ip.start)
    if length < 8 or ip.start + length > ip.end:
        raise MalformedPacket("UDP length < 8 or beyond the IP payload")
    return _new(Udp, (sport, dport, frame[ip.start + 8:ip.start + length]))


class Arp(NamedTuple):
    """An Ethernet/IPv4 ARP packet (RFC 826)."""

    op: int
    """1 request, 2 reply."""
    sender_mac: bytes
    """Sender hardware address."""
    sender_ip: bytes
    """Sender protocol address."""
    target_mac: bytes
    """Target hardware address (zero in a request)."""
    target_ip: bytes
    """Target protocol address."""


def decode_arp(frame: bytes, offset: int = 14) -> Arp:
    if len(frame) < offset + ARP.size:
        raise MalformedPacket("ARP truncated")
    htype, ptype, hlen, plen, op, smac, sip, tmac, tip = ARP.unpack_from(frame, offset)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        raise MalformedPacket("ARP not Ethernet/IPv4 (wrong htype, ptype, hlen or plen)")
    return _new(Arp, (op, smac, sip, tmac, tip))


def encode_arp(arp: Arp) -> bytes:
    return ARP.pack(1, ETH_P_IP, 6, 4, arp.op, arp.sender_mac, arp.sender_ip, arp.target_mac,
                    arp.target_ip)


class Icmp(NamedTuple):
    """An ICMP message's header (RFC 792) and where its body lies in the frame."""

    type: int
    code: int
    word: int
    """The header's second 32-bit word: echo identifier and sequence, an MTU, a pointer."""
    start: int
    """Offset of the ICMP header in the frame."""
    end: int
    """Offset just past the message (the IP payload's end)."""


def decode_icmp(frame: bytes, ip: Ipv4) -> Icmp:
    """The ICMP message in ``ip``'s payload (its 8-byte header must be there)."""
    if ip.end - ip.start < 8:
        raise MalformedPacket("ICMP header truncated")
    icmp_type, code, _, word = ICMP_HEADER.unpack_from(frame, ip.start)
    return _new(Icmp, (icmp_type, code, word, ip.start, ip.end))


def encode_icmp(icmp_type: int, code: int, rest: bytes) -> bytes:
    """An ICMP message: type, code, checksum, then ``rest`` (RFC 792)."""
    body = struct.pack("!BBH", icmp_type, code, 0) + rest
    return body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]


#: RFC 1812 4.3.2.3: an ICMP error is at most 576 bytes, so after the IP header (20) and the
#: ICMP header (8), 548 bytes of the offending datagram may be quoted.
ICMP_QUOTE_MAX: Final = 576 - 20 - 8


def encode_icmp_error(icmp_type: int, code: int, quoted: bytes,
                      word: bytes = bytes(4)) -> bytes:
    """An ICMP error message (RFC 792) quoting the offending datagram from its IP header,
    cut to ``ICMP_QUOTE_MAX``; ``word`` is the header's second word: unused (zero), the
    next-hop MTU of fragmentation needed (RFC 1191), or a parameter problem's pointer."""
    return encode_icmp(icmp_type, code, word + quoted[:ICMP_QUOTE_MAX])
