"""Packet rewriting for NAT66 (masquerading, as ``ip6tables -t nat -j MASQUERADE`` does): read
an IPv6 packet's flow, translate it, translate and make ICMPv6 errors.  ``nat.translate`` is
the IPv4 twin; the conntrack (``nat.conntrack``, RFC 4787/5382/5508/7857 behaviour and the
RFC 6146 3.5.2.2 TCP states) is shared, with 16-byte addresses.

Rule 1: a packet is a virtio-net header then an Ethernet frame (``wire/vnet.py``).  Untagged
        IPv6 is translated; its extension chain is walked by ``wire.ipv6.decode_ipv6`` (RFC 8200
        4), so the L4 header is at ``Ipv6.start`` whatever precedes it.  Every offset is checked
        before it is read and bad input raises ``MalformedPacket``, nothing else.  Pure: bytes
        in, bytes out.
Rule 2: IPv6 has no header checksum (RFC 8200 3); the hop limit is decremented (RFC 8200 3)
        and a packet arriving with hop limit 1 or 0 is refused with time exceeded (RFC 4443
        3.3).  The TCP, UDP and ICMPv6 checksums all cover the pseudo header of RFC 8200 8.1
        (ICMPv6 too, unlike ICMPv4: RFC 4443 2.3), so they are updated, not recomputed, with
        RFC 1624 eqn. 3 over the 16-byte addresses and the port or echo identifier.  Under
        NEEDS_CSUM the field holds only the pseudo header sum: it follows the address change
        and not the port change, which is summed when the checksum is finished.  GSO
        super-frames (GSO_TCPV6) are rewritten once, as they are: segmenting copies the new
        headers.  A packet with a routing header still to be processed (segments left > 0) is
        not translated: its pseudo header holds the final destination, not the address the
        NAT rewrites (RFC 8200 8.1), and the NAT would be one of its waypoints.
Rule 3: a UDP checksum of 0 is invalid over IPv6 (RFC 8200 8.1: receivers discard it) and the
        NAT cannot compute one without the whole datagram: such a datagram is dropped
        (``UDP_ZERO_CHECKSUM``), every fragment of it too.
Rule 4: the NAT does not reassemble (``nat.fragments``, as ``nat.translate`` Rule 3).  A first
        fragment holds the whole header chain and the L4 header (RFC 8200 4.5, RFC 7112) and
        is translated like a whole packet (its L4 checksum covers the datagram; the update is
        linear); later fragments only get their addresses and hop limit changed and take the
        first one's verdict, remembered under the datagram's identity: source, destination and
        identification (RFC 8200 4.5).  Refused: a fragment whose datagram would pass 65535
        bytes of payload, a non-last fragment that is not a multiple of 8 bytes (both RFC 8200
        4.5), a TCP fragment at offset 8 (RFC 1858 3.2), and offloads on a fragment.  An atomic
        fragment (offset 0, no more) is a whole packet (RFC 6946 4).
Rule 5: an ICMPv6 error (RFC 4443 types 1-4: destination unreachable, packet too big, time
        exceeded, parameter problem) is translated through the flow of the packet it quotes,
        both ways: outer addresses, the quoted addresses and port or identifier, the quoted L4
        checksum (RFC 1624), and the ICMPv6 checksum, verified first (RFC 4443 2.4(b) and RFC
        5508 REQ-3 as for IPv4) and then computed over the new message with its new pseudo
        header.  A fragmented or offloaded ICMPv6 error is refused.
Rule 6: ICMPv6 errors made here quote as much of the offending packet as fits in the minimum
        MTU, 1280 bytes (RFC 4443 2.4(c)), and are not made where RFC 4443 2.4(e) forbids them.
        An offloaded offending packet is finished (or its first segment cut) first, so the
        quote is what would have been on the wire.
Rule 7: a ``Drop`` of ``nat_packet6`` names an ICMPv6 error (RFC 4443 type, code), not the
        ICMPv4 one the conntrack gives: table full is destination unreachable, administratively
        prohibited (RFC 4443 3.1, code 1), as RFC 5508 REQ-8 asks of the IPv4 NAT.
"""

from __future__ import annotations

import struct
from typing import Final

from nat.conntrack import Conntrack
from nat.translate import (
    CHECKSUM_AT,
    FIRST,
    LATER,
    PORTS,
    WHOLE,
    Flow,
    _fix,
    _tcp,
    _udp,
    l4_checksum,
    quoted_ports,
)
from nat.verdicts import NO_MAPPING, Drop, Translation
from wire.checksum import adjust_checksum, checksum_delta, internet_checksum
from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.ipv6 import (
    DEST_OPTIONS,
    DEST_UNREACHABLE,
    ECHO_REPLY,
    ECHO_REQUEST,
    ETH_P_IPV6,
    FRAGMENT,
    MIN_MTU,
    PACKET_TOO_BIG,
    PARAMETER_PROBLEM,
    PROTO_ICMPV6,
    REDIRECT,
    ROUTING,
    TIME_EXCEEDED,
    UNSPECIFIED,
    Ipv6,
    decode_ipv6,
    encode_icmpv6,
    encode_ipv6,
)
from wire.packets import PROTO_TCP, PROTO_UDP, encode_ethernet
from wire.vnet import FLAG_NEEDS_CSUM, NO_OFFLOAD, VNET_HDR_LEN, is_gso

__all__ = [
    "FIRST", "LATER", "WHOLE", "Flow", "HOP_LIMIT_EXCEEDED", "NOT_TRANSLATABLE",
    "UDP_ZERO_CHECKSUM", "ICMP6_ERRORS", "flow_of6", "is_icmp6_error", "translate6",
    "translate_icmp6_error", "nat_packet6", "icmp6_error", "time_exceeded6",
    "packet_too_big6", "unreachable6", "admin_prohibited6",
]

#: Offset of the IPv6 header in a packet: virtio-net header, then an untagged Ethernet header.
L3: Final = VNET_HDR_LEN + 14
#: The fields the NAT rewrites, from the start of the IPv6 header (RFC 8200 3).
_HOP_LIMIT: Final = 7
_SRC: Final = 8
_DST: Final = 24
_ADDRESSES: Final = slice(L3 + _SRC, L3 + 40)
_HEADER: Final = 40

_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")

#: ICMPv6 errors the NAT translates (RFC 4443 3.1-3.4).
ICMP6_ERRORS: Final = frozenset({DEST_UNREACHABLE, PACKET_TOO_BIG, TIME_EXCEEDED,
                                 PARAMETER_PROBLEM})
#: Below 128 an ICMPv6 type is an error (RFC 4443 2.1).
_FIRST_INFORMATIONAL: Final = 128
LOOPBACK: Final = bytes(15) + b"\x01"

NOT_TRANSLATABLE: Final = Drop("not-translatable")
HOP_LIMIT_EXCEEDED: Final = Drop("hop-limit-exceeded", (TIME_EXCEEDED, 0))  # RFC 4443 3.3
ERROR_HOP_LIMIT_EXCEEDED: Final = Drop("hop-limit-exceeded")  # no error about an error
UDP_ZERO_CHECKSUM: Final = Drop("udp-zero-checksum")  # Rule 3, RFC 8200 8.1
#: Rule 7: the ICMPv6 (type, code) for each ICMPv4 one a conntrack Drop names.
_ICMP4_TO_6: Final = {(3, 13): (DEST_UNREACHABLE, 1), (11, 0): (TIME_EXCEEDED, 0),
                      (3, 0): (DEST_UNREACHABLE, 0)}


# --- parsing ---------------------------------------------------------------------------------


def _is_ipv6(packet: bytes | bytearray) -> bool:
    if len(packet) < L3:
        raise MalformedPacket(f"packet of {len(packet)} bytes is shorter than {L3}")
    return packet[L3 - 2] == 0x86 and packet[L3 - 1] == 0xDD


def _icmp6(packet: bytes, l4: int, end: int, whole: bool) -> tuple[int, int, int] | None:
    if end - l4 < 8:
        raise MalformedPacket("ICMPv6 header truncated")
    if packet[l4] not in (ECHO_REQUEST, ECHO_REPLY):
        return None  # errors go through translate_icmp6_error; ND and MLD stay on the link
    ident: int = _U16.unpack_from(packet, l4 + 4)[0]
    return ident, ident, 0


# TCP and UDP are checked exactly as over IPv4 (``nat.translate``): TCP data offset and flag
# combination, UDP length.
_L4: Final = {PROTO_TCP: _tcp, PROTO_UDP: _udp, PROTO_ICMPV6: _icmp6}
#: Where each protocol keeps its checksum, from the start of its header.
#: What may follow a fragment header in a later fragment's next-header field: an L4 protocol
#: the NAT maps, or an extension header of the fragmentable part in front of it (RFC 8200 4.5).
_LATER_PROTOS: Final = frozenset({PROTO_TCP, PROTO_UDP, PROTO_ICMPV6, ROUTING, DEST_OPTIONS})


def _routed_elsewhere(packet: bytes | bytearray, l3: int, start: int) -> bool:
    """Whether the (already validated) extension chain between the IPv6 header at ``l3`` and
    ``start`` has a routing header with segments left (Rule 2).  Cheap: most packets have no
    extension header and skip the loop."""
    at, next_header = l3 + _HEADER, packet[l3 + 6]
    while at < start:
        if next_header == ROUTING and packet[at + 3]:
            return True
        size = 8 if next_header == FRAGMENT else (packet[at + 1] + 1) * 8
        next_header = packet[at]
        at += size
    return False


def flow_of6(packet: bytes, ip: Ipv6 | None = None) -> Flow | None:
    """The flow of an IPv6 TCP, UDP or ICMPv6 echo packet; None for anything else.

    1. Ethernet: IPv6, else None (IPv4, ARP and VLAN tags are not this translator's).
    2. The IPv6 header and its extension chain (``wire.ipv6.decode_ipv6``; ``ip`` is that,
       at offset ``L3``, when the caller has decoded it already).  A routing header with
       segments left: None (Rule 2).
    3. Fragments (Rule 4): an atomic fragment is whole; otherwise the datagram stays within
       65535 bytes of payload, all but the last fragment are a multiple of 8 bytes, no
       offloads; a later fragment has no ports (TCP at offset 8 is refused, RFC 1858 3.2).
    4. The L4 header through a table per protocol: TCP (data offset, flags), UDP (length),
       ICMPv6 echo request or reply (the identifier is both ports).  A first fragment must
       hold the whole L4 header (RFC 7112 5).
    ``Flow.ttl`` is the hop limit, ``Flow.ident`` the fragment identification (0 when whole),
    ``Flow.length`` the IPv6 header and payload.
    """
    # 1.
    if ip is None:
        if not _is_ipv6(packet):
            return None
        # 2.
        ip = decode_ipv6(packet, L3)
    src, dst, proto, hop_limit, fragment, l4, end, fragment_at, _, _ = ip
    if l4 > L3 + _HEADER and _routed_elsewhere(packet, L3, l4):
        return None
    # 3.
    kind, ident = WHOLE, 0
    if fragment is not None and (fragment[1] or fragment[2]):
        ident, offset, more = fragment
        data = end - fragment_at - 8
        if fragment_at - L3 - _HEADER + offset + data > 65535:
            raise MalformedPacket("fragment ends beyond 65535 bytes of payload (RFC 8200 4.5)")
        if more and data % 8:
            raise MalformedPacket("a fragment other than the last is not a multiple of 8 bytes")
        if packet[0] & FLAG_NEEDS_CSUM or is_gso(packet):
            raise MalformedPacket("offloads on a fragment")
        if offset:
            if proto not in _LATER_PROTOS:
                return None
            if proto == PROTO_TCP and offset == 8:
                raise MalformedPacket("TCP fragment at offset 8 overlaps the header (RFC 1858)")
            return Flow(proto, src, 0, dst, 0, 0, end - L3, hop_limit, ident, LATER, L3, l4)
        kind = FIRST
    # 4.
    parse = _L4.get(proto)
    if parse is None:
        return None
    ports = parse(packet, l4, end, kind == WHOLE)
    if ports is None:
        return None
    sport, dport, flags = ports
    return Flow(proto, src, sport, dst, dport, flags, end - L3, hop_limit, ident, kind, L3, l4)


def _icmp6_error_at(packet: bytes | bytearray, ip: Ipv6) -> bool:
    """Whether ``ip`` carries the start of an ICMPv6 error the NAT translates."""
    return (ip.proto == PROTO_ICMPV6 and ip.start < ip.end
            and (ip.fragment is None or not ip.fragment[1])
            and packet[ip.start] in ICMP6_ERRORS)


def is_icmp6_error(packet: bytes) -> bool:
    """True for an IPv6 ICMPv6 error the NAT translates (never raises: a dispatch test)."""
    if len(packet) < L3 + _HEADER or packet[L3 - 2:L3] != b"\x86\xdd":
        return False
    try:
        ip = decode_ipv6(packet, L3)
    except MalformedPacket:
        return False
    return _icmp6_error_at(packet, ip)


# --- translating (Rules 2 and 4) ---------------------------------------------------------------


def _add(check: int, delta: int) -> int:
    """A partial (pseudo header) sum plus ``delta``, end-around carries folded (twice: the
    first fold of 0x1FFFF leaves 0x10000)."""
    total = check + delta
    total = (total & 0xFFFF) + (total >> 16)
    return (total & 0xFFFF) + (total >> 16)


def translate6(packet: bytes, flow: Flow, to: Translation,
               decrement_hop_limit: bool = True) -> bytearray:
    """``packet`` (whose ``flow_of6`` is ``flow``) leaving as ``to`` says (Rule 2), in a new
    buffer the router then addresses in place.

    1. The address change, as a checksum delta: it is in the pseudo header of TCP, UDP and
       ICMPv6 alike (RFC 8200 8.1).
    2. IPv6 header: hop limit - 1, the new addresses; no header checksum.
    3. A later fragment has nothing more to change (Rule 4).
    4. ICMPv6 echo: the identifier; the checksum for the addresses and the identifier.
    5. TCP/UDP: the ports; the checksum for the addresses and the ports.  A UDP checksum of 0
       is refused (Rule 3); a computed 0 is sent as all ones (RFC 8200 8.1).
    6. NEEDS_CSUM: the field holds the pseudo header sum S, which takes the address change
       alone: S' = S + d (the ports and identifier are summed when it is finished).
    """
    if decrement_hop_limit and flow.ttl <= 1:
        raise MalformedPacket("hop limit would reach 0: the router answers with time exceeded")
    # 1.
    new_addresses = to.src + to.dst
    if len(new_addresses) != 32:
        raise ValueError("a NAT66 translation has 16-byte addresses")
    addresses = checksum_delta(packet[_ADDRESSES], new_addresses)
    # 2.
    buf = bytearray(packet)
    if decrement_hop_limit:
        buf[L3 + _HOP_LIMIT] = flow.ttl - 1
    buf[_ADDRESSES] = new_addresses
    # 3.
    if flow.fragment == LATER:
        return buf
    l4 = flow.l4
    at, partial, check = l4_checksum(packet, l4, flow.proto)
    if flow.proto == PROTO_ICMPV6:
        # 4.
        _U16.pack_into(buf, l4 + 4, to.sport)
        ports = to.sport - flow.sport
    else:
        # 5.
        if flow.proto == PROTO_UDP and not check and not partial:
            raise MalformedPacket("UDP checksum 0 over IPv6 (RFC 8200 8.1)")
        PORTS.pack_into(buf, l4, to.sport, to.dport)
        ports = to.sport + to.dport - flow.sport - flow.dport
    if partial:
        # 6.
        _U16.pack_into(buf, at, _add(check, addresses))
        return buf
    check = adjust_checksum(check, (addresses + ports) % 0xFFFF)
    if check == 0 and flow.proto == PROTO_UDP:
        check = 0xFFFF
    _U16.pack_into(buf, at, check)
    return buf


def _pseudo_sum(src: bytes | bytearray, dst: bytes | bytearray, length: int) -> int:
    """The ICMPv6 pseudo header (RFC 8200 8.1) as a number congruent to the sum of its words
    (``wire.checksum.internet_checksum``): the addresses, the 32-bit length, next header 58."""
    return int.from_bytes(bytes(src) + bytes(dst), "big") + length + PROTO_ICMPV6


def translate_icmp6_error(packet: bytes, conntrack: Conntrack, from_outside: bool,
                          decrement_hop_limit: bool = True,
                          ip: Ipv6 | None = None) -> bytearray | Drop:
    """An ICMPv6 error rewritten through the flow of the packet it quotes (Rule 5).

    1. Outer: IPv6, ICMPv6, not a fragment (an atomic one will do) and not offloaded, a
       translated error type, room for a quoted IPv6 header and 8 bytes, and a valid ICMPv6
       checksum (RFC 4443 2.4(b)).
    2. The quote: IPv6 whose extension chain lies within the quote, then 8 bytes of TCP, UDP
       or ICMPv6 echo; never a later fragment (no ports) and never another error (RFC 4443
       2.4(e.1)); a routing header with segments left is not translated (Rule 2).
    3. The quote travelled the other way: its reverse is the key of the flow's packets on this
       side.  Look it up without touching the flow (RFC 5508 REQ-6, RFC 4787 REQ-12).  None:
       drop silently (RFC 5508 REQ-4 and REQ-5).
    4. The quote's original form is that translation reversed: its addresses, its ports or
       identifier, and its L4 checksum when quoted, for both (every IPv6 L4 checksum has the
       pseudo header).
    5. Outer header: to the quote's new source; from the inside the source becomes the
       external address (RFC 5508 REQ-5c's analogue); hop limit - 1.  Type, code and the MTU
       or pointer word unchanged (a packet too big's MTU is the path's, still true).
    6. ICMPv6 checksum over the rewritten message and its new pseudo header.
    """
    # 1.
    if ip is None:
        if not _is_ipv6(packet):
            raise MalformedPacket("not IPv6")
        ip = decode_ipv6(packet, L3)
    src, _, proto, hop_limit, fragment, l4, end, _, _, _ = ip
    if proto != PROTO_ICMPV6 or (fragment is not None and (fragment[1] or fragment[2])):
        raise MalformedPacket("not an unfragmented ICMPv6 message")
    if packet[0] & FLAG_NEEDS_CSUM or is_gso(packet):
        raise MalformedPacket("an ICMPv6 error with offloads")
    if end - l4 < 8 + _HEADER + 8 or packet[l4] not in ICMP6_ERRORS:
        raise MalformedPacket("not a translated ICMPv6 error, or its quote is truncated")
    outer_sum = _pseudo_sum(packet[L3 + _SRC:L3 + _DST], packet[L3 + _DST:L3 + 40], end - l4)
    if internet_checksum(memoryview(packet)[l4:end], outer_sum) != 0:
        raise MalformedPacket("ICMPv6 checksum")
    # 2.
    q3 = l4 + 8
    quote = bytearray(packet[q3:end])
    _U16.pack_into(quote, 4, len(quote) - _HEADER)  # the quote is cut: walk what is there
    qip = decode_ipv6(bytes(quote), 0)
    if qip.fragment is not None and qip.fragment[1]:
        raise MalformedPacket("the quote is a later fragment: no ports to map")
    if qip.start > _HEADER and _routed_elsewhere(quote, 0, qip.start):
        return NOT_TRANSLATABLE
    qproto, qsrc, qdst = qip.proto, qip.src, qip.dst
    q4 = q3 + qip.start
    if q4 + 8 > end:
        raise MalformedPacket("the quote's L4 header is truncated")
    ports = quoted_ports(packet, q4, qproto, PROTO_ICMPV6, (ECHO_REQUEST, ECHO_REPLY))
    if ports is None:
        return NOT_TRANSLATABLE
    # 3.
    to = conntrack.lookup((qproto, qdst, ports[1], qsrc, ports[0]), from_outside)
    if to is None:
        return NO_MAPPING
    if decrement_hop_limit and hop_limit <= 1:
        return ERROR_HOP_LIMIT_EXCEEDED
    # 4.
    buf = bytearray(packet)
    old_addresses, new_addresses = packet[q3 + _SRC:q3 + 40], to.dst + to.src
    buf[q3 + _SRC:q3 + 40] = new_addresses
    if qproto == PROTO_ICMPV6:
        old_l4, new_l4 = packet[q4 + 4:q4 + 6], _U16.pack(to.dport)
        buf[q4 + 4:q4 + 6] = new_l4
        _fix(buf, q4 + 2, old_addresses + old_l4, new_addresses + new_l4)
    else:
        old_l4, new_l4 = packet[q4:q4 + 4], PORTS.pack(to.dport, to.sport)
        buf[q4:q4 + 4] = new_l4
        check_at = q4 + CHECKSUM_AT[qproto]
        quoted = check_at + 2 <= end  # a TCP checksum often is not
        if quoted and (qproto == PROTO_TCP or packet[check_at:check_at + 2] != b"\0\0"):
            check = _fix(buf, check_at, old_addresses + old_l4, new_addresses + new_l4)
            if check == 0 and qproto == PROTO_UDP:
                _U16.pack_into(buf, check_at, 0xFFFF)
    # 5.
    outer_src = src if from_outside else conntrack.external_ip
    if decrement_hop_limit:
        buf[L3 + _HOP_LIMIT] = hop_limit - 1
    buf[L3 + _SRC:L3 + 40] = outer_src + to.dst
    # 6.
    _U16.pack_into(buf, l4 + 2, 0)
    _U16.pack_into(buf, l4 + 2, internet_checksum(memoryview(buf)[l4:end],
                                                  _pseudo_sum(outer_src, to.dst, end - l4)))
    return buf


def _icmp6_drop(drop: Drop) -> Drop:
    """Rule 7: the same drop, naming its ICMPv6 error."""
    if drop.icmp is None:
        return drop
    return Drop(drop.reason, _ICMP4_TO_6.get(drop.icmp))


def nat_packet6(packet: bytes, conntrack: Conntrack, from_outside: bool,
                now: float, ip: Ipv6 | None = None) -> list[bytearray] | Drop:
    """The NAT66 step of the router for one packet: the packets to send on, or why none.

    1. Not a flow: an ICMPv6 error is translated through its quote; anything else (ND, MLD,
       other protocols) is refused.
    2. Hop limit 1 or 0: refused with time exceeded (Rule 2).
    3. A later fragment takes its first fragment's verdict, now or when that one comes.
    4. A UDP checksum of 0: dropped, with its datagram's later fragments (Rule 3).
    5. A whole packet or first fragment goes through the conntrack, either way; a Drop names
       its ICMPv6 error (Rule 7).
    6. Rewrite it; a first fragment brings the later ones that waited for it.
    ``ip`` is ``decode_ipv6(packet, L3)`` when the caller has decoded it already.
    """
    # 1.
    if ip is None:
        if not _is_ipv6(packet):
            return NOT_TRANSLATABLE
        ip = decode_ipv6(packet, L3)
    flow = flow_of6(packet, ip)
    if flow is None:
        if _icmp6_error_at(packet, ip):
            error = translate_icmp6_error(packet, conntrack, from_outside, ip=ip)
            return error if isinstance(error, Drop) else [error]
        return NOT_TRANSLATABLE
    # 2.
    if flow.ttl <= 1:
        return HOP_LIMIT_EXCEEDED
    # RFC 8200 4.5: a datagram is its source, destination and identification; the protocol
    # slot of the key holds FRAGMENT, since a later fragment may name an extension header.
    datagram = (from_outside, FRAGMENT, flow.src, flow.dst, flow.ident)
    # 3.
    if flow.fragment == LATER:
        verdict = conntrack.fragments.later(datagram, packet, now)
        if verdict is None:
            return []
        return verdict if isinstance(verdict, Drop) else [translate6(packet, flow, verdict)]
    # 4.
    if flow.proto == PROTO_UDP and not packet[0] & FLAG_NEEDS_CSUM \
            and packet[flow.l4 + 6:flow.l4 + 8] == b"\0\0":
        if flow.fragment == FIRST:
            conntrack.fragments.first(datagram, UDP_ZERO_CHECKSUM, now)
        return UDP_ZERO_CHECKSUM
    # 5.
    track = conntrack.inbound if from_outside else conntrack.outbound
    to = track(flow.proto, flow.src, flow.sport, flow.dst, flow.dport, flow.tcp_flags,
               flow.length, now)
    if isinstance(to, Drop):
        to = _icmp6_drop(to)
    if flow.fragment != FIRST:
        return to if isinstance(to, Drop) else [translate6(packet, flow, to)]
    held = conntrack.fragments.first(datagram, to, now)
    if isinstance(to, Drop):
        return to
    # 6.
    out = [translate6(packet, flow, to)]
    for later in held:
        later_flow = flow_of6(later)
        assert later_flow is not None  # it was parsed when it came
        out.append(translate6(later, later_flow, to))
    return out


# --- making ICMPv6 errors (Rule 6) -------------------------------------------------------------


def icmp6_error(packet: bytes, icmp_type: int, code: int, source: bytes,
                mtu_or_pointer: int = 0, mac: bytes | None = None) -> bytes | None:
    """An ICMPv6 error about ``packet``, from ``source`` back to its sender, as a packet with
    no offloads; None when none may be sent.  ``mtu_or_pointer`` is the 32-bit word after the
    checksum (RFC 4443 3.2, 3.4; 0 for the others); ``mac`` is the router's MAC to send from,
    by default the offending frame's destination.

    1. The offending packet is IPv6 (checked as ``decode_ipv6`` does).
    2. RFC 4443 2.4(e): none about an ICMPv6 error or a redirect (e.1, e.2); none about a
       packet to a multicast address, or sent as link-layer multicast or broadcast (e.3-e.5),
       except packet too big and parameter problem code 2; none when the source is not one
       node (e.6): unspecified, multicast, loopback (RFC 4291 2.5.3).  And none without a
       unicast MAC to answer from.
    3. An offloaded packet is finished, a GSO super-frame cut, and its first frame quoted.
    4. Quote from the IPv6 header as much as fits in 1280 bytes (RFC 4443 2.4(c)).
    5. Ethernet back to where the frame came from, hop limit 64.
    """
    # 1.
    if not _is_ipv6(packet):
        return None
    ip = decode_ipv6(packet, L3)
    src, dst = ip.src, ip.dst
    # 2.
    if src == UNSPECIFIED or src[0] == 0xFF or src == LOOPBACK:
        return None
    exempt = icmp_type == PACKET_TOO_BIG or (icmp_type == PARAMETER_PROBLEM and code == 2)
    if not exempt and (dst[0] == 0xFF or packet[VNET_HDR_LEN] & 1):
        return None
    later = ip.fragment is not None and ip.fragment[1] != 0
    if ip.proto == PROTO_ICMPV6 and not later and (
            ip.start == ip.end or packet[ip.start] < _FIRST_INFORMATIONAL
            or packet[ip.start] == REDIRECT):
        return None
    from_mac = packet[VNET_HDR_LEN:VNET_HDR_LEN + 6] if mac is None else mac
    if len(from_mac) != 6 or from_mac[0] & 1:
        return None
    # 3.
    if packet[0] & FLAG_NEEDS_CSUM or is_gso(packet):
        packet = NO_OFFLOAD + to_plain_frames(packet)[0]
        ip = decode_ipv6(packet, L3)
    # 4.
    quote = packet[L3:min(ip.end, L3 + MIN_MTU - _HEADER - 8)]
    message = encode_icmpv6(source, src, icmp_type, code,
                            _U32.pack(mtu_or_pointer & 0xFFFFFFFF) + quote)
    # 5.
    to_mac = packet[VNET_HDR_LEN + 6:VNET_HDR_LEN + 12]
    return NO_OFFLOAD + encode_ethernet(to_mac, from_mac, ETH_P_IPV6,
                                        encode_ipv6(source, src, PROTO_ICMPV6, message, 64))


def time_exceeded6(packet: bytes, source: bytes, code: int = 0) -> bytes | None:
    """ICMPv6 3/0, hop limit exceeded in transit (RFC 4443 3.3); code 1: reassembly."""
    return icmp6_error(packet, TIME_EXCEEDED, code, source)


def packet_too_big6(packet: bytes, source: bytes, mtu: int) -> bytes | None:
    """ICMPv6 2/0 with the next-hop MTU (RFC 4443 3.2, RFC 8201 4)."""
    return icmp6_error(packet, PACKET_TOO_BIG, 0, source, mtu)


def unreachable6(packet: bytes, source: bytes, code: int) -> bytes | None:
    """ICMPv6 1/``code``, destination unreachable (RFC 4443 3.1): 0 no route, 1
    administratively prohibited, 3 address, 4 port unreachable."""
    return icmp6_error(packet, DEST_UNREACHABLE, code, source)


def admin_prohibited6(packet: bytes, source: bytes) -> bytes | None:
    """ICMPv6 1/1: what the NAT sends when it cannot make a session (Rule 7)."""
    return unreachable6(packet, source, 1)
