"""Packet rewriting for the NAT: read a packet's flow, translate it, translate and make ICMP errors.

Rule 1: a packet is a virtio-net header then an Ethernet frame (``wire/vnet.py``).  Untagged
        IPv4 is translated (IPv6 comes later); every offset is checked before it is read and bad
        input raises ``MalformedPacket``, nothing else.  Functions are pure: bytes in, bytes out.
Rule 2: checksums of translated packets are updated, not recomputed: RFC 1624 eqn. 3 over the
        16-bit words that change (IPv4 header; TCP/UDP pseudo header and ports; ICMP echo
        identifier).  Under NEEDS_CSUM the L4 checksum field holds only the pseudo header sum:
        it follows the address change but not the port change, since the ports are summed when
        the checksum is finished.  A UDP checksum of 0 means "none" and stays 0 (RFC 768).
        GSO super-frames are rewritten once, as they are: segmenting copies the new headers.
Rule 3: the NAT does not reassemble (``nat.fragments``): a first fragment is translated
        like a whole packet (its L4 checksum covers the whole datagram, and the update is
        linear); later fragments have no L4 header, only their addresses change.  Fragments
        that cannot be right are refused: beyond 65535 bytes, a non-last fragment that is not
        a multiple of 8 bytes (RFC 791 3.2), a first fragment too short for its L4 header and a
        TCP fragment at offset 8 (tiny and overlapping fragment attacks, RFC 1858 3).  Other
        overlaps are the receiver's to resolve: later fragments keep their payload untouched,
        so none can change the ports the NAT mapped.
Rule 4: an ICMP error is translated through the flow of the packet it quotes, both ways:
        outer addresses, quoted addresses and ports with their checksums (RFC 1624 as above),
        and the ICMP checksum, verified first (RFC 5508 REQ-3) and then computed over the new
        message.  A fragmented or offloaded ICMP error is refused.
Rule 5: ICMP errors made here quote the offending packet as RFC 1812 4.3.2.3 says, and are not
        made where RFC 1812 4.3.2.7 forbids them.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from nat.conntrack import Conntrack, FlowKey
from nat.verdicts import NO_MAPPING, Drop, Translation
from wire.checksum import adjust_checksum, checksum_delta, internet_checksum
from wire.errors import MalformedPacket
from wire.packets import (
    ETH_P_IP,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_QUOTE_MAX,
    IPV4_MF,
    IPV4_OFFSET,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Ipv4,
    decode_ipv4,
    encode_ethernet,
    encode_icmp_error,
    encode_ipv4,
    ipv4_ihl,
)
from wire.vnet import FLAG_NEEDS_CSUM, NO_OFFLOAD, VNET_HDR_LEN, decode_header, is_gso

#: Offset of the IPv4 header in a packet: virtio-net header, then an untagged Ethernet header.
L3: Final = VNET_HDR_LEN + 14

PORTS: Final = struct.Struct("!HH")
_UDP: Final = struct.Struct("!HHH")
#: TTL, protocol, header checksum, source, destination: the IPv4 header from offset 8.
_IP_TAIL: Final = struct.Struct("!BBH4s4s")
_U16: Final = struct.Struct("!H")

MF, OFFSET = IPV4_MF, IPV4_OFFSET  # IPv4 flags and fragment offset (RFC 791 3.1)

# ICMP types (RFC 792).
ECHO_REPLY: Final = ICMP_ECHO_REPLY
DEST_UNREACHABLE: Final = 3
ECHO_REQUEST: Final = ICMP_ECHO_REQUEST
TIME_EXCEEDED: Final = 11
PARAMETER_PROBLEM: Final = 12
#: Errors the NAT translates; source quench is deprecated (RFC 6633), redirects stay local.
ICMP_ERRORS: Final = frozenset({DEST_UNREACHABLE, TIME_EXCEEDED, PARAMETER_PROBLEM})
#: ICMP types that are errors, about which no error is ever sent (RFC 1812 4.3.2.7).
_ANY_ICMP_ERROR: Final = frozenset({3, 4, 5, 11, 12})

# Flow.fragment
WHOLE: Final = 0
FIRST: Final = 1
LATER: Final = 2

NOT_TRANSLATABLE: Final = Drop("not-translatable")
TTL_EXCEEDED: Final = Drop("ttl-exceeded", (TIME_EXCEEDED, 0))  # RFC 1812 5.3.1
ERROR_TTL_EXCEEDED: Final = Drop("ttl-exceeded")  # no error about an error


class Flow(NamedTuple):
    """What the NAT reads from a packet: its 5-tuple first, then what translating needs."""

    proto: int
    """IP protocol: 1 ICMP (echo only), 6 TCP, 17 UDP."""
    src: bytes
    """Source address."""
    sport: int
    """Source port; ICMP echo: the identifier; a later fragment: 0."""
    dst: bytes
    """Destination address."""
    dport: int
    """Destination port; ICMP echo: the identifier again; a later fragment: 0."""
    tcp_flags: int
    """The TCP flags byte; 0 for other protocols."""
    length: int
    """IP total length (what conntrack counts)."""
    ttl: int
    """Time to live as received."""
    ident: int
    """IP identification (names the datagram of a fragment)."""
    fragment: int
    """WHOLE, FIRST (offset 0, more to come) or LATER (no L4 header)."""
    l3: int
    """Offset of the IPv4 header in the packet."""
    l4: int
    """Offset of the IP payload in the packet."""

    @property
    def key(self) -> FlowKey:
        return self.proto, self.src, self.sport, self.dst, self.dport


# --- parsing ---------------------------------------------------------------------------------


def _is_ipv4(packet: bytes) -> bool:
    if len(packet) < L3:
        raise MalformedPacket(f"packet of {len(packet)} bytes is shorter than {L3}")
    return packet[L3 - 2] == 0x08 and packet[L3 - 1] == 0x00


# Valid TCP flag combinations, ignoring PSH, ECE and CWR (Linux's ``tcp_valid_flags``): no
# SYN+FIN, SYN+RST or FIN without ACK, and no segment without any of SYN, RST and ACK.
_TCP_VALID: Final = frozenset({0x02, 0x22, 0x12, 0x04, 0x14, 0x11, 0x31, 0x10, 0x30})


def _tcp(packet: bytes, l4: int, end: int, whole: bool) -> tuple[int, int, int] | None:
    if end - l4 < 20:
        raise MalformedPacket("TCP header truncated")
    sport, dport = PORTS.unpack_from(packet, l4)
    offset = packet[l4 + 12] >> 4
    if offset < 5 or l4 + offset * 4 > end:
        raise MalformedPacket(f"TCP data offset {offset} is below 5 or beyond the packet")
    flags = packet[l4 + 13]
    if flags & 0x37 not in _TCP_VALID:
        raise MalformedPacket(f"TCP flags {flags:#04x} are not a valid combination")
    return sport, dport, flags


def _udp(packet: bytes, l4: int, end: int, whole: bool) -> tuple[int, int, int] | None:
    if end - l4 < 8:
        raise MalformedPacket("UDP header truncated")
    sport, dport, length = _UDP.unpack_from(packet, l4)
    if length < 8 or (whole and l4 + length > end):  # a first fragment's length is the datagram's
        raise MalformedPacket("UDP length < 8 or beyond the IP payload")
    return sport, dport, 0


def _icmp(packet: bytes, l4: int, end: int, whole: bool) -> tuple[int, int, int] | None:
    if end - l4 < 8:
        raise MalformedPacket("ICMP header truncated")
    if packet[l4] not in (ECHO_REQUEST, ECHO_REPLY):
        return None  # errors go through translate_icmp_error; others are not translated
    ident: int = _U16.unpack_from(packet, l4 + 4)[0]
    return ident, ident, 0


_L4: Final = {PROTO_TCP: _tcp, PROTO_UDP: _udp, PROTO_ICMP: _icmp}


def flow_of(packet: bytes, ip: Ipv4 | None = None) -> Flow | None:
    """The flow of an IPv4 TCP, UDP or ICMP echo packet; None for anything else.

    1. Ethernet: IPv4, else None (ARP, IPv6, VLAN tags are not the NAT's).
    2. IPv4 header checks (``wire.packets.decode_ipv4``).
    3. Fragments (Rule 3): offset + length <= 65535; all but the last a multiple of 8 bytes;
       a later fragment has no ports (TCP at offset 8 is refused, RFC 1858 3.2).
    4. The L4 header through a table per protocol: TCP (data offset, flags), UDP (length),
       ICMP (echo request or reply: the identifier is both ports).  A first fragment must hold
       the whole L4 header (RFC 1858 3.1).
    """
    # 1.
    if ip is None:
        if not _is_ipv4(packet):
            return None
        # 2.
        ip = decode_ipv4(packet, L3)
    src, dst, proto, ttl, ident, frag, l4, end = ip
    # 3.
    offset = (frag & OFFSET) * 8
    if offset + end - l4 > 65535:
        raise MalformedPacket("fragment ends beyond 65535 bytes")
    if frag & MF and (end - l4) % 8:
        raise MalformedPacket("a fragment other than the last is not a multiple of 8 bytes")
    parse = _L4.get(proto)
    if parse is None:
        return None
    if offset:
        if proto == PROTO_TCP and offset == 8:
            raise MalformedPacket("TCP fragment at offset 8 overlaps the header (RFC 1858)")
        return Flow(proto, src, 0, dst, 0, 0, end - L3, ttl, ident, LATER, L3, l4)
    # 4.
    ports = parse(packet, l4, end, not frag & MF)
    if ports is None:
        return None
    sport, dport, flags = ports
    fragment = FIRST if frag & MF else WHOLE
    return Flow(proto, src, sport, dst, dport, flags, end - L3, ttl, ident, fragment, L3, l4)


def is_icmp_error(packet: bytes) -> bool:
    """True for an IPv4 ICMP error the NAT translates (never raises: a cheap dispatch test)."""
    if len(packet) < L3 + 20 or packet[L3 - 2:L3] != b"\x08\x00" or packet[L3 + 9] != PROTO_ICMP:
        return False
    l4 = L3 + ipv4_ihl(packet, L3)
    return l4 < len(packet) and packet[l4] in ICMP_ERRORS


# --- checksums (Rule 2) ------------------------------------------------------------------------


def _fix(buf: bytearray, at: int, old: bytes, new: bytes) -> int:
    """Update the checksum stored at ``at`` for ``old`` -> ``new``; returns the new value."""
    check = adjust_checksum(_U16.unpack_from(buf, at)[0], checksum_delta(old, new))
    _U16.pack_into(buf, at, check)
    return check


# --- translating -----------------------------------------------------------------------------

#: Where each protocol keeps its checksum, from the start of its header.
#: Where each protocol's checksum sits in its header (ICMPv6's as ICMP's: ``nat.translate6``).
CHECKSUM_AT: Final = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMP: 2, PROTO_ICMPV6: 2}
#: The TTL is the high byte of its 16-bit word: TTL - 1 is a word change of -0x100.
_TTL_DELTA: Final = -0x100 % 0xFFFF


def l4_checksum(packet: bytes, l4: int, proto: int) -> tuple[int, bool, int]:
    """Where the L4 header at ``l4`` keeps its checksum, whether the checksum is partial
    (NEEDS_CSUM, which must then point at it: Rule 2), and its value."""
    at = l4 + CHECKSUM_AT[proto]
    partial = bool(packet[0] & FLAG_NEEDS_CSUM)
    if partial:
        _, _, _, _, csum_start, csum_offset = decode_header(packet)
        if csum_start + VNET_HDR_LEN != l4 or l4 + csum_offset != at:
            raise MalformedPacket("NEEDS_CSUM does not point at this packet's L4 checksum")
    check: int = _U16.unpack_from(packet, at)[0]
    return at, partial, check


def translate(packet: bytes, flow: Flow, to: Translation,
              decrement_ttl: bool = True) -> bytearray:
    """``packet`` (whose ``flow_of`` is ``flow``) leaving as ``to`` says (Rule 2), in a new
    buffer the router then addresses in place (one copy of a 64 KiB frame, not three).

    1. The address change, as a checksum delta: it is both in the IPv4 header and in the TCP
       and UDP pseudo header (RFC 9293 3.1, RFC 768).
    2. IPv4 header: TTL - 1 (RFC 1812 5.3.1), the new addresses, the header checksum.
    3. A later fragment has nothing more to change (Rule 3).
    4. ICMP echo: the identifier, and the ICMP checksum (ICMPv4 has no pseudo header).
    5. TCP/UDP: the ports; the checksum for the addresses and the ports.  NEEDS_CSUM: the
       field holds the pseudo header sum S, which takes the address change alone: S' = S + d.
       UDP without checksum (0): nothing.
    """
    if decrement_ttl and flow.ttl <= 1:
        raise MalformedPacket("TTL would reach 0: the router answers with time exceeded")
    # 1.
    addresses = checksum_delta(packet[L3 + 12:L3 + 20], to.src + to.dst)
    # 2.
    buf = bytearray(packet)
    ttl, ip_delta = ((flow.ttl - 1, (addresses + _TTL_DELTA) % 0xFFFF) if decrement_ttl
                     else (flow.ttl, addresses))
    ip_check = adjust_checksum(_U16.unpack_from(packet, L3 + 10)[0], ip_delta)
    _IP_TAIL.pack_into(buf, L3 + 8, ttl, flow.proto, ip_check, to.src, to.dst)
    # 3.
    if flow.fragment == LATER:
        return buf
    l4 = flow.l4
    at, partial, check = l4_checksum(packet, l4, flow.proto)
    # 4.
    if flow.proto == PROTO_ICMP:
        _U16.pack_into(buf, l4 + 4, to.sport)
        if not partial:
            _U16.pack_into(buf, at, adjust_checksum(check, (to.sport - flow.sport) % 0xFFFF))
        return buf
    # 5.
    PORTS.pack_into(buf, l4, to.sport, to.dport)
    if partial:
        total = check + addresses
        total = (total & 0xFFFF) + (total >> 16)
        _U16.pack_into(buf, at, (total & 0xFFFF) + (total >> 16))
    elif check or flow.proto == PROTO_TCP:
        ports = to.sport + to.dport - flow.sport - flow.dport
        check = adjust_checksum(check, (addresses + ports) % 0xFFFF)
        if check == 0 and flow.proto == PROTO_UDP:
            check = 0xFFFF  # RFC 768: a computed 0 is sent as all ones
        _U16.pack_into(buf, at, check)
    return buf


def translate_icmp_error(packet: bytes, conntrack: Conntrack, from_outside: bool,
                         decrement_ttl: bool = True) -> bytes | Drop:
    """An ICMP error rewritten through the flow of the packet it quotes (Rule 4).

    1. Outer: IPv4, ICMP, not a fragment and not offloaded, a translated error type, room for
       a quoted IPv4 header and 8 bytes, and a valid ICMP checksum (RFC 5508 REQ-3).
    2. The quote: IPv4 with IHL >= 5 and 8 bytes of TCP, UDP or ICMP echo (RFC 792); never a
       later fragment and never another error (RFC 1122 3.2.2: no error about an error).
    3. The quote travelled the other way: its reverse is the key of the flow's packets on this
       side.  Look it up without touching the flow (RFC 5508 REQ-6, RFC 4787 REQ-12).  None:
       drop silently (RFC 5508 REQ-4 and REQ-5).
    4. The quote's original form is that translation reversed: its addresses, its ports or
       identifier, its IP checksum and its L4 checksum when quoted (REQ-4a, REQ-5a).
    5. Outer header: to the quote's new source (REQ-4c, REQ-7a); from the inside the source
       becomes the external address (REQ-5c); TTL - 1.  Type and code unchanged (REQ-4b).
    6. ICMP checksum over the rewritten message.
    """
    # 1.
    if not _is_ipv4(packet):
        raise MalformedPacket("not IPv4")
    src, _, proto, ttl, _, frag, l4, end = decode_ipv4(packet, L3)
    if proto != PROTO_ICMP or frag & (MF | OFFSET):
        raise MalformedPacket("not an unfragmented ICMP message")
    if packet[0] & FLAG_NEEDS_CSUM or is_gso(packet):
        raise MalformedPacket("an ICMP error with offloads")
    if end - l4 < 8 + 20 + 8 or packet[l4] not in ICMP_ERRORS:
        raise MalformedPacket("not a translated ICMP error, or its quote is truncated")
    if internet_checksum(memoryview(packet)[l4:end]) != 0:
        raise MalformedPacket("ICMP checksum")
    # 2.
    q3 = l4 + 8
    qihl = ipv4_ihl(packet, q3)
    if packet[q3] >> 4 != 4 or qihl < 20 or q3 + qihl + 8 > end:
        raise MalformedPacket("quoted IPv4 header malformed or truncated")
    qfrag: int = _U16.unpack_from(packet, q3 + 6)[0]
    qproto, qsrc, qdst = packet[q3 + 9], packet[q3 + 12:q3 + 16], packet[q3 + 16:q3 + 20]
    q4 = q3 + qihl
    if qfrag & OFFSET:
        raise MalformedPacket("the quote is a later fragment: no ports to map")
    ports = quoted_ports(packet, q4, qproto, PROTO_ICMP, (ECHO_REQUEST, ECHO_REPLY))
    if ports is None:
        return NOT_TRANSLATABLE
    # 3.
    to = conntrack.lookup((qproto, qdst, ports[1], qsrc, ports[0]), from_outside)
    if to is None:
        return NO_MAPPING
    if decrement_ttl and ttl <= 1:
        return ERROR_TTL_EXCEEDED
    # 4.
    buf = bytearray(packet)
    old_addresses, new_addresses = packet[q3 + 12:q3 + 20], to.dst + to.src
    buf[q3 + 12:q3 + 20] = new_addresses
    _fix(buf, q3 + 10, old_addresses, new_addresses)
    if qproto == PROTO_ICMP:
        old_id = packet[q4 + 4:q4 + 6]
        _U16.pack_into(buf, q4 + 4, to.dport)
        _fix(buf, q4 + 2, old_id, bytes(buf[q4 + 4:q4 + 6]))
    else:
        old_ports, new_ports = packet[q4:q4 + 4], PORTS.pack(to.dport, to.sport)
        buf[q4:q4 + 4] = new_ports
        check_at = q4 + (16 if qproto == PROTO_TCP else 6)
        quoted = check_at + 2 <= end  # a TCP checksum often is not
        if quoted and (qproto == PROTO_TCP or packet[check_at:check_at + 2] != b"\0\0"):
            check = _fix(buf, check_at, old_addresses + old_ports, new_addresses + new_ports)
            if check == 0 and qproto == PROTO_UDP:
                _U16.pack_into(buf, check_at, 0xFFFF)
    # 5.
    outer_src = src if from_outside else conntrack.external_ip
    new_ttl = ttl - 1 if decrement_ttl else ttl
    old_outer = packet[L3 + 8:L3 + 10] + packet[L3 + 12:L3 + 20]
    new_outer = bytes((new_ttl, PROTO_ICMP)) + outer_src + to.dst
    outer_check = adjust_checksum(_U16.unpack_from(packet, L3 + 10)[0],
                                  checksum_delta(old_outer, new_outer))
    _IP_TAIL.pack_into(buf, L3 + 8, new_ttl, PROTO_ICMP, outer_check, outer_src, to.dst)
    # 6.
    _U16.pack_into(buf, l4 + 2, 0)
    _U16.pack_into(buf, l4 + 2, internet_checksum(memoryview(buf)[l4:end]))
    return bytes(buf)


def quoted_ports(packet: bytes, q4: int, proto: int, echo_proto: int,
                 echo_types: tuple[int, int]) -> tuple[int, int] | None:
    """The (source, destination) ports of the packet an ICMP error quotes, its L4 header at
    ``q4`` (an echo's identifier stands for both); None for a protocol without ports
    (Rule 4; ``nat.translate6`` Rule 5 for ICMPv6)."""
    if proto == echo_proto:
        if packet[q4] not in echo_types:
            raise MalformedPacket("an ICMP error quoting an ICMP message other than echo")
        ident: int = _U16.unpack_from(packet, q4 + 4)[0]
        return ident, ident
    if proto in (PROTO_TCP, PROTO_UDP):
        sport, dport = PORTS.unpack_from(packet, q4)
        return sport, dport
    return None


def nat_packet(packet: bytes, conntrack: Conntrack, from_outside: bool,
               now: float, ip: Ipv4 | None = None) -> list[bytes | bytearray] | Drop:
    """The NAT step of the router for one packet: the packets to send on, or why none.

    1. Not a flow: an ICMP error is translated through its quote; anything else is refused.
    2. TTL 1 or 0: refused with time exceeded (RFC 1812 5.3.1).
    3. A later fragment takes its first fragment's verdict, now or when that one comes.
    4. A whole packet or first fragment goes through the conntrack, either way.
    5. Rewrite it; a first fragment brings the later ones that waited for it.
    ``ip`` is the packet's IPv4 header when the caller has decoded it already.
    """
    # 1.
    flow = flow_of(packet, ip)
    if flow is None:
        if is_icmp_error(packet):
            error = translate_icmp_error(packet, conntrack, from_outside)
            return error if isinstance(error, Drop) else [error]
        return NOT_TRANSLATABLE
    # 2.
    if flow.ttl <= 1:
        return TTL_EXCEEDED
    # 3.
    if flow.fragment == LATER:
        datagram = (from_outside, flow.proto, flow.src, flow.dst, flow.ident)
        verdict = conntrack.fragments.later(datagram, packet, now)
        if verdict is None:
            return []
        return verdict if isinstance(verdict, Drop) else [translate(packet, flow, verdict)]
    # 4.
    track = conntrack.inbound if from_outside else conntrack.outbound
    to = track(flow.proto, flow.src, flow.sport, flow.dst, flow.dport, flow.tcp_flags,
               flow.length, now)
    if flow.fragment != FIRST:
        return to if isinstance(to, Drop) else [translate(packet, flow, to)]
    datagram = (from_outside, flow.proto, flow.src, flow.dst, flow.ident)
    held = conntrack.fragments.first(datagram, to, now)
    if isinstance(to, Drop):
        return to
    # 5.
    out: list[bytes | bytearray] = [translate(packet, flow, to)]
    for later in held:
        later_flow = flow_of(later)
        assert later_flow is not None  # it was parsed when it came
        out.append(translate(later, later_flow, to))
    return out


# --- making ICMP errors (Rule 5) ---------------------------------------------------------------


def _unicast_source(address: bytes) -> bool:
    """RFC 1812 4.3.2.7: not 0/8, loopback, multicast, class E or limited broadcast."""
    return address[0] not in (0, 127) and address[0] < 224


def icmp_error(packet: bytes, icmp_type: int, code: int, source: bytes,
               rest: bytes = bytes(4)) -> bytes | None:
    """An ICMP error about ``packet``, from ``source`` back to its sender; None when none may
    be sent.

    1. The offending packet is IPv4 (checked as ``flow_of`` does).
    2. RFC 1812 4.3.2.7: none about an ICMP error, a later fragment, a link-layer or IP
       broadcast or multicast, or a source that is not one host.
    3. Quote the IP header and as much data as fits in 576 bytes (RFC 1812 4.3.2.3), at least
       8 bytes (RFC 792).
    4. Ethernet back to where the frame came from, plain (no offloads).  DF set: an atomic
       datagram, so the identification may be 0 (RFC 6864 4.1).
    """
    # 1.
    if not _is_ipv4(packet):
        return None
    src, dst, proto, _, _, frag, l4, end = decode_ipv4(packet, L3)
    # 2.
    if frag & OFFSET or packet[VNET_HDR_LEN] & 1 or not _unicast_source(src):
        return None
    if dst == b"\xff\xff\xff\xff" or 224 <= dst[0] < 240:
        return None
    if proto == PROTO_ICMP and (end == l4 or packet[l4] in _ANY_ICMP_ERROR):
        return None
    # 3.
    message = encode_icmp_error(icmp_type, code, packet[L3:min(end, L3 + ICMP_QUOTE_MAX)], rest)
    # 4.
    ip = encode_ipv4(source, src, PROTO_ICMP, message, ttl=64, ident=0, dont_fragment=True)
    frame_dst, frame_src = packet[VNET_HDR_LEN + 6:L3 - 2], packet[VNET_HDR_LEN:VNET_HDR_LEN + 6]
    return NO_OFFLOAD + encode_ethernet(frame_dst, frame_src, ETH_P_IP, ip)


def time_exceeded(packet: bytes, source: bytes) -> bytes | None:
    """ICMP 11/0, TTL exceeded in transit (RFC 792)."""
    return icmp_error(packet, TIME_EXCEEDED, 0, source)


def frag_needed(packet: bytes, source: bytes, mtu: int) -> bytes | None:
    """ICMP 3/4, fragmentation needed and DF set, with the next-hop MTU (RFC 1191 4)."""
    return icmp_error(packet, DEST_UNREACHABLE, 4, source, PORTS.pack(0, mtu))


def admin_prohibited(packet: bytes, source: bytes) -> bytes | None:
    """ICMP 3/13, communication administratively prohibited (RFC 1812 5.2.7.1): what a NAT
    sends when it cannot make a session (RFC 5508 REQ-8)."""
    return icmp_error(packet, DEST_UNREACHABLE, 13, source)
