"""IPv6 (RFC 8200) and ICMPv6 (RFC 4443): the header and its extension chain, the ICMPv6
checksum, Neighbor Discovery options (RFC 4861), and the addresses derived from a MAC.

Rule 1: as ``wire.packets`` Rule 1: plain Ethernet frames, addresses ``bytes`` (16), every
        offset checked before it is read, bad input raises ``MalformedPacket``.
Rule 2: the extension chain (hop-by-hop 0, routing 43, fragment 44, destination options 60) is
        walked to the upper-layer header, at most ``MAX_EXTENSIONS`` headers, each inside the
        payload; a routing header of type 0 is refused (RFC 5095 3); a hop-by-hop header is
        only allowed first (RFC 8200 4.1).
Rule 3: ICMPv6 checksums cover the pseudo header of RFC 8200 8.1: source, destination, the
        upper-layer length as 32 bits, three zero bytes and the next header.
Rule 4: an NDP option's length is in units of 8 bytes and is never 0; an option that claims
        more than the message holds makes the message invalid (RFC 4861 4.6, 7.1.1).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from wire.checksum import internet_checksum
from wire.errors import MalformedPacket
from wire.packets import ETH_P_IPV6 as ETH_P_IPV6
from wire.packets import PROTO_ICMPV6 as PROTO_ICMPV6
from wire.packets import PROTO_TCP, PROTO_UDP, encode_ethernet

IPV6: Final = struct.Struct("!IHBB16s16s")
HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTIONS, NO_NEXT = 0, 43, 44, 60, 59
MAX_EXTENSIONS: Final = 8
#: The smallest link MTU IPv6 allows (RFC 8200 5): ICMPv6 errors are cut to fit it.
MIN_MTU: Final = 1280

# ICMPv6 types (RFC 4443 2.1, RFC 4861 4).
DEST_UNREACHABLE, PACKET_TOO_BIG, TIME_EXCEEDED, PARAMETER_PROBLEM = 1, 2, 3, 4
ECHO_REQUEST, ECHO_REPLY = 128, 129
ROUTER_SOLICIT, ROUTER_ADVERT, NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT = 133, 134, 135, 136

ALL_NODES: Final = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS: Final = bytes.fromhex("ff020000000000000000000000000002")
UNSPECIFIED: Final = bytes(16)


class Ipv6(NamedTuple):
    """A decoded IPv6 header, its extension chain walked (Rule 2)."""

    src: bytes
    dst: bytes
    proto: int
    """The upper-layer protocol: the last next-header value of the chain."""
    hop_limit: int
    fragment: tuple[int, int, bool] | None
    """(identification, offset in bytes, more fragments) when a fragment header is present."""
    start: int
    """Offset of the upper-layer header in the frame (in a later fragment: of its data)."""
    end: int
    """Offset just past the payload (the payload length; Ethernet padding excluded)."""
    fragment_at: int = 0
    """Offset of the fragment header, when there is one (0 otherwise)."""
    next_at: int = 0
    """Offset of the next-header byte that names the fragment header (for reassembly)."""
    names_at: int = 0
    """Offset of the next-header byte that names ``proto`` (a parameter problem's pointer)."""


_new = tuple.__new__


def shifted(ip: Ipv6, delta: int) -> Ipv6:
    """``ip`` with every offset moved by ``delta``: a plain frame's header as the same
    frame's behind a virtio-net header (+10), or back."""
    def move(at: int) -> int:
        return at + delta if at else 0

    return ip._replace(start=ip.start + delta, end=ip.end + delta,
                       fragment_at=move(ip.fragment_at), next_at=move(ip.next_at),
                       names_at=move(ip.names_at))


def is_link_local(address: bytes) -> bool:
    """fe80::/10 (RFC 4291 2.5.6): never routed off its link."""
    return address[0] == 0xFE and address[1] & 0xC0 == 0x80


def decode_ipv6(frame: bytes, offset: int = 14) -> Ipv6:
    """The IPv6 header at ``offset`` and its extension chain (Rules 1 and 2)."""
    try:
        first, length, next_header, hop_limit, src, dst = IPV6.unpack_from(frame, offset)
    except struct.error:
        raise MalformedPacket("IPv6 header truncated") from None
    if first >> 28 != 6:
        raise MalformedPacket("not IPv6 (version field)")
    end = offset + 40 + length
    if end > len(frame):
        raise MalformedPacket("IPv6 payload length beyond the frame")
    at, fragment, fragment_at, next_at, names_at = offset + 40, None, 0, 0, offset + 6
    for count in range(MAX_EXTENSIONS + 1):
        if next_header not in (HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTIONS):
            return _new(Ipv6, (src, dst, next_header, hop_limit, fragment, at, end,
                               fragment_at, next_at, names_at))
        if count == MAX_EXTENSIONS:
            break
        if next_header == HOP_BY_HOP and count:
            raise MalformedPacket("a hop-by-hop header after the first (RFC 8200 4.1)")
        if at + 8 > end:
            raise MalformedPacket("IPv6 extension header truncated")
        kind, next_header = next_header, frame[at]
        if kind == FRAGMENT:
            if fragment is not None:
                raise MalformedPacket("two fragment headers")
            field, ident = struct.unpack_from("!HI", frame, at + 2)
            fragment = (ident, field & 0xFFF8, bool(field & 1))
            fragment_at, next_at = at, names_at
            at += 8
            if fragment[1]:  # a later fragment: what follows is data, not headers
                return _new(Ipv6, (src, dst, next_header, hop_limit, fragment, at, end,
                                   fragment_at, next_at, at - 8))
            names_at = fragment_at
            continue
        names_at = at
        size = (frame[at + 1] + 1) * 8
        if at + size > end:
            raise MalformedPacket("IPv6 extension header beyond the payload")
        if kind == ROUTING and frame[at + 2] == 0:
            raise MalformedPacket("routing header type 0 (RFC 5095)")
        at += size
    raise MalformedPacket(f"more than {MAX_EXTENSIONS} IPv6 extension headers")


REDIRECT: Final = 137
DHCP6_SERVER_PORT: Final = 547
DHCP6_CLIENT_PORT: Final = 546
DHCP6_FROM_SERVER: Final = struct.pack("!H", DHCP6_SERVER_PORT)  # a UDP source port field
#: All_DHCP_Relay_Agents_and_Servers (RFC 8415 7.1): where DHCPv6 clients send.
ALL_SERVERS: Final = bytes.fromhex("ff020000000000000000000000010002")


def routers_only(frame: bytes, at: int = 0) -> bool:
    """Whether ``frame`` (its Ethernet header at ``at``) is something only a router or a
    DHCPv6 server may send: a router advertisement, a redirect, or UDP from port 547
    (RFC 6105 guard); never raises.  TCP without extension headers, the bulk of a guest's
    IPv6, is answered from one byte, without decoding or copying."""
    if frame[at + 12:at + 14] != b"\x86\xdd" or len(frame) < at + 54 \
            or frame[at + 20] == PROTO_TCP:
        return False
    try:
        ip = decode_ipv6(frame, at + 14)
    except MalformedPacket:
        return False
    if ip.end - ip.start < 2 or (ip.fragment is not None and ip.fragment[1]):
        return False
    if ip.proto == PROTO_ICMPV6:
        return frame[ip.start] in (ROUTER_ADVERT, REDIRECT)
    return ip.proto == PROTO_UDP and frame[ip.start:ip.start + 2] == DHCP6_FROM_SERVER


def encode_ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes,
                hop_limit: int = 64) -> bytes:
    return IPV6.pack(6 << 28, len(payload), next_header, hop_limit, src, dst) + payload


def pseudo_header6(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """Rule 3."""
    return src + dst + struct.pack("!IxxxB", length, proto)


def encode_icmpv6(src: bytes, dst: bytes, icmp_type: int, code: int, body: bytes) -> bytes:
    """An ICMPv6 message (type, code, checksum, then ``body``) with its checksum (Rule 3)."""
    message = struct.pack("!BBH", icmp_type, code, 0) + body
    check = internet_checksum(pseudo_header6(src, dst, PROTO_ICMPV6, len(message)) + message)
    return message[:2] + struct.pack("!H", check) + message[4:]


def icmpv6_frame(dst_mac: bytes, src_mac: bytes, src: bytes, dst: bytes, icmp_type: int,
                 code: int, body: bytes, hop_limit: int = 64) -> bytes:
    """An Ethernet frame carrying one ICMPv6 message (Neighbor Discovery's hop limit is 255)."""
    message = encode_icmpv6(src, dst, icmp_type, code, body)
    return encode_ethernet(dst_mac, src_mac, ETH_P_IPV6,
                           encode_ipv6(src, dst, PROTO_ICMPV6, message, hop_limit))


def encode_udp6(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram over IPv6, its checksum mandatory (RFC 8200 8.1)."""
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    check = internet_checksum(pseudo_header6(src, dst, 17, length) + header + payload)
    return header[:6] + struct.pack("!H", check or 0xFFFF) + payload


def decode_udp6(frame: bytes, ip: Ipv6) -> tuple[int, int, bytes]:
    """(source port, destination port, payload) of the UDP datagram in ``ip``'s payload."""
    if ip.end - ip.start < 8:
        raise MalformedPacket("UDP header truncated")
    sport, dport, length = struct.unpack_from("!HHH", frame, ip.start)
    if length < 8 or ip.start + length > ip.end:
        raise MalformedPacket("UDP length < 8 or beyond the IPv6 payload")
    return sport, dport, frame[ip.start + 8:ip.start + length]


def udp6_checksum_ok(frame: bytes, ip: Ipv6) -> bool:
    """Whether the UDP datagram of ``ip`` sums to zero with its pseudo header (Rule 3); a zero
    checksum field is never valid over IPv6 (RFC 8200 8.1)."""
    datagram = frame[ip.start:ip.end]
    return len(datagram) >= 8 and datagram[6:8] != b"\x00\x00" and internet_checksum(
        pseudo_header6(ip.src, ip.dst, PROTO_UDP, len(datagram)) + datagram) in (0, 0xFFFF)


def icmpv6_checksum_ok(frame: bytes, ip: Ipv6) -> bool:
    """Whether the ICMPv6 message of ``ip`` sums to zero with its pseudo header (Rule 3)."""
    message = frame[ip.start:ip.end]
    return internet_checksum(pseudo_header6(ip.src, ip.dst, PROTO_ICMPV6, len(message))
                             + message) in (0, 0xFFFF) and len(message) >= 4


def nd_options(data: bytes) -> list[tuple[int, bytes]]:
    """The (type, body) of each NDP option in ``data`` (Rule 4); the body excludes the
    type and length bytes."""
    options, at = [], 0
    while at < len(data):
        if at + 2 > len(data):
            raise MalformedPacket("NDP option truncated")
        kind, units = data[at], data[at + 1]
        if units == 0:
            raise MalformedPacket("NDP option of length 0 (RFC 4861 4.6)")
        if at + units * 8 > len(data):
            raise MalformedPacket("NDP option beyond the message")
        options.append((kind, data[at + 2:at + units * 8]))
        at += units * 8
    return options


def link_address(options: list[tuple[int, bytes]], kind: int) -> bytes | None:
    """The MAC in the first source (1) or target (2) link-layer address option of ``kind``
    among ``options`` (RFC 4861 4.6.1), None without one."""
    return next((body[:6] for code, body in options if code == kind and len(body) >= 6), None)


def nd_option(kind: int, body: bytes) -> bytes:
    """One NDP option, padded to a multiple of 8 bytes."""
    size = -(-(len(body) + 2) // 8) * 8
    return bytes([kind, size // 8]) + body + bytes(size - 2 - len(body))


def in_prefix(address: bytes, prefix: bytes, prefix_len: int) -> bool:
    """Whether ``address`` lies in ``prefix``/``prefix_len`` (16-byte addresses)."""
    shift = 128 - prefix_len
    return int.from_bytes(address, "big") >> shift == int.from_bytes(prefix, "big") >> shift


def search_domain(domain: str) -> bytes:
    """A domain in DNS wire format, uncompressed, as RA's DNSSL (RFC 8106 5.2) and DHCPv6's
    domain list (RFC 3646 4) carry it."""
    labels = [label.encode() for label in domain.strip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def link_local(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 interface identifier of ``mac`` (RFC 4291 2.5.1)."""
    return bytes.fromhex("fe80000000000000") + interface_id(mac)


def interface_id(mac: bytes) -> bytes:
    return bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]


def solicited_node(address: bytes) -> bytes:
    """ff02::1:ffXX:XXXX for ``address`` (RFC 4291 2.7.1)."""
    return bytes.fromhex("ff0200000000000000000001ff") + address[13:]


def multicast_mac(address: bytes) -> bytes:
    """The Ethernet address of an IPv6 multicast group: 33:33 and its last 32 bits (RFC 2464 7)."""
    return b"\x33\x33" + address[12:]
