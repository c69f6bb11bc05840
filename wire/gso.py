"""Software GSO and checksum offload: one vswitch packet in, plain Ethernet frames out.

A port without the virtio-net header (stream, dgram, AF_PACKET without ``PACKET_VNET_HDR``)
cannot take a 64 KiB GSO "super-frame" or a frame whose checksum is only half done.
``to_plain_frames`` does here what a NIC, or Linux's ``skb_gso_segment`` and
``skb_checksum_help``, would do: cut the super-frame into wire-sized frames and finish every
checksum.

Rule 1: the virtio-net header is advice, the frame is the truth.  The IP and L4 headers are found
by parsing the frame (ethertypes, VLAN tags, IPv4 IHL, TCP data offset); ``hdr_len`` is ignored,
and under GSO the partial checksum is recomputed from scratch, never trusted.

Rule 2: bad input raises ``MalformedPacket`` and nothing else; the caller counts a drop.  The
work is bounded: a frame of at most ``MAX_FRAME`` bytes and ``gso_size > 0``.

Rule 3: pure — bytes in, a list of bytes out; no I/O, no clock, no scapy.
"""

from __future__ import annotations

import struct
from typing import Final

from wire.checksum import internet_checksum
from wire.errors import MalformedPacket
from wire.packets import (
    ETH_P_IP,
    ETH_P_IPV6,
    IPV4_MF,
    IPV4_OFFSET,
    PROTO_TCP,
    PROTO_UDP,
    decode_ethernet,
    ipv4_ihl,
)
from wire.tcp import CWR as TCP_CWR
from wire.tcp import FIN as TCP_FIN
from wire.tcp import PSH as TCP_PSH
from wire.vnet import (
    FLAG_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    MIN_PACKET,
    VNET_HDR_LEN,
    decode_header,
    needs_software,
)

#: Largest frame accepted (Linux's GSO limit is 64 KiB; it also keeps every length in 16 bits).
MAX_FRAME: Final = 0xFFFF

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")

IPV4_MIN_HLEN: Final = 20
IPV6_HLEN: Final = 40
TCP_MIN_HLEN: Final = 20
UDP_HLEN: Final = 8

#: What each GSO type must carry: (IPv4?, L4 protocol); None = either IP version.
#: UFO (GSO_UDP) is IPv4 only: IPv6 fragmentation is not supported here, such a packet raises
#: MalformedPacket and is counted as a drop (Linux guests no longer send UFO at all).
_GSO_CARRIES: Final[dict[int, tuple[bool | None, int]]] = {
    GSO_TCPV4: (True, PROTO_TCP),
    GSO_TCPV6: (False, PROTO_TCP),
    GSO_UDP_L4: (None, PROTO_UDP),
    GSO_UDP: (True, PROTO_UDP),
}


def to_plain_frames(packet: bytes) -> list[bytes]:
    """The plain Ethernet frames (no virtio-net header) a port without offloads sends for a packet.

    1. Decode the virtio-net header; refuse a packet shorter than header + Ethernet or a frame
       over ``MAX_FRAME``.
    2. Nothing offloaded (``vnet.needs_software`` is false): the frame as it is.
    3. NEEDS_CSUM: csum_start + csum_offset must lie inside the frame.  Without GSO, finish the
       partial checksum and return the one frame.
    4. GSO: gso_size > 0 and a known type (ECN bit ignored); locate L3 and L4 in the frame and
       check they are what the type carries (``_GSO_CARRIES``).
    5. Cut: TCP (TSO) and UDP (USO) into segments, legacy UFO into IPv4 fragments.
    """
    # 1.
    if len(packet) < MIN_PACKET:
        raise MalformedPacket(f"packet of {len(packet)} bytes is shorter than {MIN_PACKET}")
    if len(packet) - VNET_HDR_LEN > MAX_FRAME:
        raise MalformedPacket(f"frame of {len(packet) - VNET_HDR_LEN} bytes exceeds {MAX_FRAME}")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = decode_header(packet)
    frame = packet[VNET_HDR_LEN:]
    # 2.
    if not needs_software(packet):
        return [frame]
    # 3.
    if flags & FLAG_NEEDS_CSUM and csum_start + csum_offset + 2 > len(frame):
        raise MalformedPacket(
            f"checksum at {csum_start}+{csum_offset} is outside a {len(frame)}-byte frame"
        )
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        return [_finish_checksum(frame, csum_start, csum_offset)]
    # 4.
    if gso_size == 0:
        raise MalformedPacket("GSO packet with gso_size 0")
    carries = _GSO_CARRIES.get(kind)
    if carries is None:
        raise MalformedPacket(f"unknown gso_type {gso_type:#04x}")
    l3, l4, ipv4, proto = _locate(frame)
    want_ipv4, want_proto = carries
    if proto != want_proto or (want_ipv4 is not None and ipv4 != want_ipv4):
        raise MalformedPacket(
            f"gso_type {gso_type:#04x} on an IPv{4 if ipv4 else 6} packet of protocol {proto}"
        )
    # 5.
    if kind == GSO_UDP:
        return _fragment_udp(frame, l3, l4, gso_size)
    return _segment(frame, l3, l4, ipv4, proto, gso_size)


def _finish_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Complete a partial checksum as Linux's ``skb_checksum_help`` does.

    The field at csum_start + csum_offset already holds the pseudo header sum, so the checksum of
    frame[csum_start:] is the final value.  A result of 0 is stored as 0xFFFF: UDP requires it
    (RFC 768: 0 means "no checksum"), and for TCP both are the same ones'-complement zero.
    """
    at = csum_start + csum_offset
    csum = internet_checksum(memoryview(frame)[csum_start:])
    return frame[:at] + _U16.pack(csum or 0xFFFF) + frame[at + 2 :]


def _locate(frame: bytes) -> tuple[int, int, bool, int]:
    """(L3 offset, L4 offset, is IPv4, L4 protocol) of the IP packet in ``frame``.

    VLAN tags (802.1Q/802.1ad) are skipped (``wire.packets.decode_ethernet``).  IPv4: IHL >= 5
    (RFC 791 section 3.1) and not already a fragment.  IPv6: the next header must be the L4
    protocol itself (RFC 8200 section 4); extension headers are not walked, the L4 check
    rejects them.
    """
    _, _, ethertype, _, l3 = decode_ethernet(frame)
    if ethertype == ETH_P_IP:
        if l3 + IPV4_MIN_HLEN > len(frame) or frame[l3] >> 4 != 4:
            raise MalformedPacket("truncated or not an IPv4 header")
        l4 = l3 + ipv4_ihl(frame, l3)
        if l4 < l3 + IPV4_MIN_HLEN or l4 > len(frame):
            raise MalformedPacket(f"IPv4 IHL {frame[l3] & 0x0F} is below 5 or beyond the frame")
        if _U16.unpack_from(frame, l3 + 6)[0] & (IPV4_MF | IPV4_OFFSET):
            raise MalformedPacket("GSO packet is an IPv4 fragment")
        return l3, l4, True, frame[l3 + 9]
    if ethertype == ETH_P_IPV6:
        if l3 + IPV6_HLEN > len(frame) or frame[l3] >> 4 != 6:
            raise MalformedPacket("truncated or not an IPv6 header")
        return l3, l3 + IPV6_HLEN, False, frame[l3 + 6]
    raise MalformedPacket(f"GSO on a non-IP frame (ethertype {ethertype:#06x})")


def _segment(frame: bytes, l3: int, l4: int, ipv4: bool, proto: int, gso_size: int) -> list[bytes]:
    """TSO/USO: one segment per ``gso_size`` bytes of L4 payload (Linux ``tcp_gso_segment``,
    ``__udp_gso_segment``, ``inet_gso_segment``, ``ipv6_gso_segment``).

    5a. Header length from the headers: TCP data offset (RFC 9293 section 3.1), UDP 8 bytes.
    5b. For each piece of payload: a copy of all headers (Ethernet, tags, IP, L4), then the piece.
    5c. IP: IPv4 total length, id + segment number, header checksum; IPv6 payload length.
    5d. TCP: sequence number + offset of the piece; FIN and PSH on the last segment only, CWR on
        the first only (RFC 3168 section 6.1.2).  UDP: its length (each piece is a datagram).
    5e. Full L4 checksum: pseudo header + L4 header + piece.
    """
    # 5a.
    if proto == PROTO_TCP:
        if l4 + TCP_MIN_HLEN > len(frame):
            raise MalformedPacket("truncated TCP header")
        payload_at = l4 + (frame[l4 + 12] >> 4) * 4
        if payload_at < l4 + TCP_MIN_HLEN or payload_at > len(frame):
            raise MalformedPacket(f"TCP data offset {frame[l4 + 12] >> 4} is below 5 or too long")
        seq: int = _U32.unpack_from(frame, l4 + 4)[0]
        tcp_flags = frame[l4 + 13]
    else:
        payload_at = l4 + UDP_HLEN
        if payload_at > len(frame):
            raise MalformedPacket("truncated UDP header")
        seq = tcp_flags = 0
    ip_id: int = _U16.unpack_from(frame, l3 + 4)[0] if ipv4 else 0
    headers = frame[:payload_at]
    payload = memoryview(frame)[payload_at:]
    segments = []
    for n, start in enumerate(range(0, len(payload) or 1, gso_size)):
        # 5b.
        seg = bytearray(headers)
        seg += payload[start : start + gso_size]
        # 5c.
        _fix_ip(seg, l3, l4, ipv4, ip_id + n)
        # 5d.
        if proto == PROTO_TCP:
            _U32.pack_into(seg, l4 + 4, (seq + start) & 0xFFFFFFFF)
            seg_flags = tcp_flags & ~TCP_CWR if n else tcp_flags
            if start + gso_size < len(payload):  # not the last segment
                seg_flags &= ~(TCP_FIN | TCP_PSH)
            seg[l4 + 13] = seg_flags
        else:
            _U16.pack_into(seg, l4 + 4, len(seg) - l4)
        # 5e.
        _fill_l4_checksum(seg, l3, l4, ipv4, proto)
        segments.append(bytes(seg))
    return segments


def _fragment_udp(frame: bytes, l3: int, l4: int, gso_size: int) -> list[bytes]:
    """Legacy UFO: IPv4 fragments of one UDP datagram (Linux ``udp4_ufo_fragment``).

    5a. Finish the datagram: UDP length and the full checksum over all of it (RFC 768), since
        the receiver checks it only after reassembly.  If it fits in ``gso_size``, send it whole.
    5b-c. Otherwise ``fragment_ipv4`` with ``gso_size`` bytes of IP payload per fragment.
    """
    # 5a.
    if l4 + UDP_HLEN > len(frame):
        raise MalformedPacket("truncated UDP header")
    datagram = bytearray(frame)
    _U16.pack_into(datagram, l4 + 4, len(datagram) - l4)
    _fill_l4_checksum(datagram, l3, l4, True, PROTO_UDP)
    if len(datagram) - l4 <= gso_size:
        _fix_ip(datagram, l3, l4, True, _U16.unpack_from(datagram, l3 + 4)[0])
        return [bytes(datagram)]
    # 5b. and 5c.
    return fragment_ipv4(bytes(datagram), l3, l4, gso_size)


def fragment_ipv4(frame: bytes, l3: int, l4: int, size: int) -> list[bytes]:
    """IPv4 fragments of the datagram in ``frame`` (IP header at ``l3``, its payload at
    ``l4``), each carrying at most ``size`` bytes of that payload.

    5b. Cut the IP payload into pieces of ``size`` rounded down to a multiple of 8: fragment
        offsets count 8-byte units (RFC 791 sections 2.3 and 3.2).
    5c. Each fragment: the headers before ``l4`` (options copied as they are), then the piece;
        fragment offset, MF on all but the last, the same id; total length, header checksum.
        A datagram that is itself a fragment keeps its place: offsets start from its own, and
        its last piece keeps its MF (RFC 791 3.2, fragmenting a fragment).
    """
    # 5b.
    piece = size & ~7
    if piece == 0:
        raise MalformedPacket(f"fragment size {size} is below one 8-byte fragment unit")
    ip_id: int = _U16.unpack_from(frame, l3 + 4)[0]
    field: int = _U16.unpack_from(frame, l3 + 6)[0]
    base, last_more = (field & 0x1FFF) * 8, field & IPV4_MF
    headers = frame[:l4]
    data = frame[l4:]
    fragments = []
    for offset in range(0, len(data), piece):
        # 5c.
        fragment = bytearray(headers)
        fragment += data[offset : offset + piece]
        more = IPV4_MF if offset + piece < len(data) else last_more
        _U16.pack_into(fragment, l3 + 6, more | (base + offset) >> 3)
        _fix_ip(fragment, l3, l4, True, ip_id)
        fragments.append(bytes(fragment))
    return fragments


def fragment_ipv6(frame: bytes, l3: int, mtu: int, ident: int) -> list[bytes]:
    """IPv6 fragments of the whole datagram in ``frame`` (IPv6 header at ``l3``, no extension
    headers), as its source sends them when it is larger than ``mtu`` (RFC 8200 4.5).

    6a. A fragment header (next header 44) follows the base header; each fragment carries as
        many 8-byte units of the payload as fit in ``mtu`` with both headers, offset and M
        flag set, the same ``ident``; the fragment header names the original next header.
    """
    payload = frame[l3 + IPV6_HLEN:]
    piece = (mtu - IPV6_HLEN - 8) & ~7
    if piece <= 0:
        raise MalformedPacket(f"MTU {mtu} leaves no room for an IPv6 fragment")
    base = bytearray(frame[:l3 + IPV6_HLEN])
    next_header = base[l3 + 6]
    base[l3 + 6] = 44
    fragments = []
    for offset in range(0, len(payload), piece):
        more = 1 if offset + piece < len(payload) else 0
        fragment = bytearray(base)
        fragment += struct.pack("!BBHI", next_header, 0, offset | more, ident)
        fragment += payload[offset:offset + piece]
        _U16.pack_into(fragment, l3 + 4, len(fragment) - l3 - IPV6_HLEN)
        fragments.append(bytes(fragment))
    return fragments


def _fix_ip(packet: bytearray, l3: int, l4: int, ipv4: bool, ip_id: int) -> None:
    """Set the IP length fields (and for IPv4 the id and header checksum) for ``packet``'s size."""
    if ipv4:  # RFC 791 section 3.1
        _U16.pack_into(packet, l3 + 2, len(packet) - l3)
        _U16.pack_into(packet, l3 + 4, ip_id & 0xFFFF)
        _U16.pack_into(packet, l3 + 10, 0)
        _U16.pack_into(packet, l3 + 10, internet_checksum(packet[l3:l4]))
    else:  # RFC 8200 section 3: payload length excludes the 40-byte header
        _U16.pack_into(packet, l3 + 4, len(packet) - l3 - IPV6_HLEN)


def _fill_l4_checksum(packet: bytearray, l3: int, l4: int, ipv4: bool, proto: int) -> None:
    """Compute the TCP/UDP checksum of ``packet[l4:]`` from scratch, pseudo header included.

    The pseudo header (RFC 9293 section 3.1, RFC 768, RFC 8200 section 8.1) is the source and
    destination addresses, the protocol and the L4 length; as a partial sum it is the addresses
    read as one big number plus the two small ones.  UDP sends a 0 result as 0xFFFF (RFC 768).
    """
    check_at = l4 + (16 if proto == PROTO_TCP else 6)
    _U16.pack_into(packet, check_at, 0)
    length = len(packet) - l4
    addresses = packet[l3 + 12 : l3 + 20] if ipv4 else packet[l3 + 8 : l3 + 40]
    pseudo = int.from_bytes(addresses, "big") + proto + length
    csum = internet_checksum(memoryview(packet)[l4:], pseudo)
    if csum == 0 and proto == PROTO_UDP:
        csum = 0xFFFF
    _U16.pack_into(packet, check_at, csum)
