"""Property tests of the wire codecs (issue 13, "fuzzing every parser").

Every decoder of ``wire/`` raises ``MalformedPacket`` and nothing else on any input; where there
is an encoder, ``decode(encode(x)) == x`` and ``encode(decode(b))`` is a fixed point after one
round. Already covered elsewhere and not repeated here: ``decode_ipv6`` on garbage
(test_ipv6_wire.py), the filter predicates on frames (test_filter.py).
"""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nat.tcp_splice import decode_segment, decode_syn_options
from tests.unit.fuzzing import budget
from wire.checksum import internet_checksum, pseudo_header_sum
from wire.errors import MalformedPacket
from wire.filter import FilterError, compile_filter
from wire.gso import MAX_FRAME, to_plain_frames
from wire.ipv6 import (
    decode_ipv6,
    decode_udp6,
    encode_icmpv6,
    encode_ipv6,
    encode_udp6,
    icmpv6_checksum_ok,
    nd_option,
    nd_options,
    routers_only,
    udp6_checksum_ok,
)
from wire.packets import (
    ETH_P_IP,
    ETH_P_IPV6,
    MAX_VLAN_TAGS,
    PROTO_TCP,
    PROTO_UDP,
    VLAN_TPIDS,
    Arp,
    decode_arp,
    decode_ethernet,
    decode_icmp,
    decode_ipv4,
    decode_udp,
    encode_arp,
    encode_ethernet,
    encode_icmp,
    encode_ipv4,
    encode_udp,
)
from wire.pcap import SNAPLEN, PcapngWriter, PcapWriter
from wire.tcp import ACK, FIN, RST, SYN, checksum_ok, decode_tcp, encode_tcp, reset_for
from wire.vnet import (
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    VNET_HDR_LEN,
    Offloads,
    decode_header,
    encode_header,
    is_gso,
    needs_software,
    taken_as_is,
)

MAC = st.binary(min_size=6, max_size=6)
IP4 = st.binary(min_size=4, max_size=4)
IP6 = st.binary(min_size=16, max_size=16)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)


def decodes(decoder, *args):
    """``decoder(*args)``, or None when it raised MalformedPacket (anything else escapes)."""
    try:
        return decoder(*args)
    except MalformedPacket:
        return None


# -- Ethernet and VLAN ---------------------------------------------------------------------------


@st.composite
def tagged_frames(draw) -> bytes:
    """A frame with 0..MAX_VLAN_TAGS+2 tags, then a type, a payload, maybe cut short."""
    tags = draw(st.lists(st.tuples(st.sampled_from(sorted(VLAN_TPIDS)), U16), max_size=6))
    frame = draw(MAC) + draw(MAC) + b"".join(struct.pack("!HH", t, v) for t, v in tags)
    frame += struct.pack("!H", draw(st.sampled_from([ETH_P_IP, ETH_P_IPV6, 0x0806, 0x8100])))
    frame += draw(st.binary(max_size=40))
    return frame[:draw(st.integers(0, len(frame)))] if draw(st.booleans()) else frame


@budget(300)
@given(st.one_of(st.binary(max_size=64), tagged_frames()), st.integers(0, 8))
def test_ethernet_decodes_inside_the_frame_or_raises_malformed(frame, offset):
    eth = decodes(decode_ethernet, frame, offset)
    if eth is not None:
        assert eth.start <= len(frame) and 0 <= eth.tags <= MAX_VLAN_TAGS
        assert eth.ethertype not in VLAN_TPIDS
        assert eth.start == offset + 14 + 4 * eth.tags


@budget(100)
@given(MAC, MAC, U16.filter(lambda t: t not in VLAN_TPIDS), st.binary(max_size=64))
def test_ethernet_round_trip(dst, src, ethertype, payload):
    frame = encode_ethernet(dst, src, ethertype, payload)
    eth = decode_ethernet(frame)
    assert (eth.dst, eth.src, eth.ethertype, eth.tags, frame[eth.start:]) == \
        (dst, src, ethertype, 0, payload)


# -- ARP -----------------------------------------------------------------------------------------


@budget(100)
@given(U16, MAC, IP4, MAC, IP4)
def test_arp_round_trip(op, smac, sip, tmac, tip):
    arp = Arp(op, smac, sip, tmac, tip)
    assert decode_arp(b"\x00" * 14 + encode_arp(arp)) == arp


@budget(200)
@given(st.binary(max_size=50), st.integers(0, 20))
def test_arp_garbage_raises_malformed_and_what_decodes_re_encodes_to_itself(data, offset):
    arp = decodes(decode_arp, data, offset)
    if arp is not None:
        assert encode_arp(arp) == data[offset:offset + 28]


# -- IPv4, UDP, ICMP -----------------------------------------------------------------------------


@st.composite
def ipv4_packets(draw) -> bytes:
    """An IPv4 header (any IHL, lengths, flags; a good checksum half of the time), payload."""
    ihl = draw(st.integers(0, 15))
    options = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    payload = draw(st.binary(max_size=60))
    total = draw(st.one_of(st.just(20 + len(options) + len(payload)), U16))
    header = bytearray(struct.pack("!BBHHHBBH4s4s", draw(st.sampled_from([0x40, 0x60, 0x00]))
                                   | ihl, 0, total, draw(U16), draw(U16), draw(st.integers(0, 255)),
                                   draw(st.sampled_from([1, 6, 17, 58, 255])), 0, draw(IP4),
                                   draw(IP4)) + options)
    if draw(st.booleans()):
        struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    packet = bytes(header) + payload
    return packet[:draw(st.integers(0, len(packet)))] if draw(st.booleans()) else packet


@budget(300)
@given(ipv4_packets(), st.integers(0, 4))
def test_ipv4_udp_icmp_decoders_raise_only_malformed(packet, offset):
    frame = bytes(offset) + packet
    ip = decodes(decode_ipv4, frame, offset)
    if ip is None:
        return
    assert offset + 20 <= ip.start <= ip.end <= len(frame)
    udp = decodes(decode_udp, frame, ip)
    if udp is not None:
        assert len(udp.payload) <= ip.end - ip.start - 8
    icmp = decodes(decode_icmp, frame, ip)
    if icmp is not None:
        assert icmp.start == ip.start and icmp.end == ip.end
    tcp = decodes(decode_tcp, frame, ip)
    if tcp is not None:
        assert ip.start + 20 <= tcp.data <= tcp.end == ip.end
        assert not (tcp.flags & SYN and tcp.flags & FIN)
    reset = reset_for(bytes(4), frame, ip)
    assert reset is None or isinstance(reset, bytes)
    # Re-encoding what was decoded (a plain header) is a fixed point after one round.
    once = encode_ipv4(ip.src, ip.dst, ip.proto, frame[ip.start:ip.end], ip.ttl, ip.ident,
                       bool(ip.fragment & 0x4000))
    again = decode_ipv4(once, 0)
    assert encode_ipv4(again.src, again.dst, again.proto, once[again.start:again.end],
                       again.ttl, again.ident, bool(again.fragment & 0x4000)) == once


@budget(100)
@given(IP4, IP4, U16, U16, st.binary(max_size=100), U16, st.integers(1, 255), st.booleans())
def test_ipv4_udp_round_trip_with_good_checksums(src, dst, sport, dport, payload, ident, ttl, df):
    datagram = encode_udp(src, dst, sport, dport, payload)
    packet = encode_ipv4(src, dst, PROTO_UDP, datagram, ttl, ident, df)
    ip = decode_ipv4(packet, 0)
    assert (ip.src, ip.dst, ip.proto, ip.ttl, ip.ident, ip.fragment) == \
        (src, dst, PROTO_UDP, ttl, ident, 0x4000 if df else 0)
    assert decode_udp(packet, ip) == (sport, dport, payload)
    assert internet_checksum(pseudo_header_sum(src, dst, PROTO_UDP, len(datagram))
                             + datagram) in (0, 0xFFFF)


@budget(100)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(min_size=4, max_size=60))
def test_icmp_round_trip(icmp_type, code, rest):
    packet = encode_ipv4(bytes(4), bytes(4), 1, encode_icmp(icmp_type, code, rest))
    ip = decode_ipv4(packet, 0)
    icmp = decode_icmp(packet, ip)
    assert (icmp.type, icmp.code, icmp.word) == (icmp_type, code, int.from_bytes(rest[:4], "big"))
    assert internet_checksum(packet[ip.start:ip.end]) == 0


# -- TCP and its options -------------------------------------------------------------------------


TCP_OPTIONS = st.lists(st.one_of(
    st.just(b"\x01"),
    st.builds(lambda mss: b"\x02\x04" + struct.pack("!H", mss), U16),
    st.builds(lambda shift: bytes([3, 3, shift]), st.integers(0, 255)),
    st.just(b"\x04\x02"),
    st.builds(lambda a, b: b"\x08\x0a" + struct.pack("!II", a, b), U32, U32),
    st.binary(max_size=6),  # garbage: kinds, lengths 0/1, overruns
), max_size=8).map(b"".join)


@budget(300)
@given(TCP_OPTIONS)
def test_syn_options_raise_only_malformed_and_stay_in_range(options):
    parsed = decodes(decode_syn_options, options)
    if parsed is not None:
        mss, shift = parsed
        assert 0 <= mss <= 0xFFFF and (shift is None or 0 <= shift <= 14)


@budget(150)
@given(st.sampled_from([4, 16]), U16, U16, U32, U32, st.integers(0, 255), U16,
       TCP_OPTIONS.map(lambda o: (o + bytes(-len(o) % 4))[:40]), st.binary(max_size=80))
def test_tcp_round_trip_over_ipv4_and_ipv6(size, sport, dport, seq, ack, flags, window,
                                           options, payload):
    src, dst = bytes(range(size)), bytes(range(1, size + 1))
    segment = encode_tcp(src, dst, sport, dport, seq, ack, flags, payload, options, window)
    if size == 4:
        packet = encode_ipv4(src, dst, PROTO_TCP, segment)
        ip = decode_ipv4(packet, 0)
    else:
        packet = encode_ipv6(src, dst, PROTO_TCP, segment)
        ip = decode_ipv6(packet, 0)
    assert checksum_ok(packet, ip)
    tcp = decodes(decode_tcp, packet, ip)
    if flags & SYN and flags & FIN:
        assert tcp is None
        return
    assert tcp is not None
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags, tcp.window) == \
        (sport, dport, seq, ack, flags, window)
    assert packet[tcp.start + 20:tcp.data] == options and packet[tcp.data:tcp.end] == payload
    reset = reset_for(dst, packet, ip)
    if flags & RST:
        assert reset is None
    else:
        assert reset is not None
        back = struct.unpack_from("!HHIIBB", reset)
        assert back[0:2] == (dport, sport) and back[5] & RST
        assert back[5] & ACK or flags & ACK


@budget(200)
@given(st.binary(max_size=80), st.binary(max_size=10))
def test_decode_segment_raises_only_malformed(tail, head):
    decodes(decode_segment, head + tail)
    decodes(decode_segment, bytes(VNET_HDR_LEN + 12) + b"\x08\x00" + tail)


# -- the virtio-net header and software GSO ------------------------------------------------------


@budget(100)
@given(st.integers(0, 255), st.integers(0, 255), U16, U16, U16, U16)
def test_vnet_header_round_trip(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset):
    header = encode_header(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    assert len(header) == VNET_HDR_LEN
    assert tuple(decode_header(header)) == (flags, gso_type, hdr_len, gso_size, csum_start,
                                            csum_offset)
    assert encode_header(*decode_header(header)) == header
    assert is_gso(header) == (gso_type & ~GSO_ECN != 0)
    assert needs_software(header) == (bool(flags & 1) or is_gso(header))
    for offloads in (Offloads(), Offloads(csum4=True, tso4=True), Offloads(csum6=True, uso=True)):
        taken = taken_as_is(offloads)
        assert taken is None or taken(header + bytes(14)) in (True, False)


@st.composite
def offloaded_packets(draw) -> bytes:
    """A TCP or UDP frame over IPv4 or IPv6, maybe VLAN-tagged, with a random virtio-net
    header: GSO types (matching or not), gso_size, NEEDS_CSUM with any csum_start/offset."""
    v6 = draw(st.booleans())
    proto = draw(st.sampled_from([PROTO_TCP, PROTO_UDP]))
    payload = draw(st.binary(max_size=3000).map(lambda b: b * draw(st.integers(1, 3))))
    src, dst = (bytes(range(16)), bytes(range(16, 32))) if v6 else (b"\n\0\0\1", b"\n\0\0\2")
    if proto == PROTO_TCP:
        l4 = encode_tcp(src, dst, 1, 2, draw(U32), draw(U32), draw(st.integers(0, 255)), payload,
                        draw(st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(8)])))
    else:
        l4 = encode_udp(src, dst, 1, 2, payload) if not v6 else encode_udp6(src, dst, 1, 2,
                                                                            payload)
    ip = encode_ipv6(src, dst, proto, l4) if v6 else encode_ipv4(src, dst, proto, l4)
    vlan = b"\x81\x00\x00\x05" if draw(st.booleans()) else b""
    frame = bytes(12) + vlan + struct.pack("!H", ETH_P_IPV6 if v6 else ETH_P_IP) + ip
    if draw(st.booleans()):
        frame = frame[:draw(st.integers(0, len(frame)))]
    l4_at = 14 + len(vlan) + (40 if v6 else 20)
    header = encode_header(
        draw(st.sampled_from([0, 1, 2, 3])),
        draw(st.sampled_from([0, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, GSO_TCPV4 | GSO_ECN,
                              7])),
        draw(U16), draw(st.one_of(st.integers(0, 2000), U16)),
        draw(st.one_of(st.just(l4_at), U16)), draw(st.sampled_from([6, 16, 0, 0xFFFF])))
    return header + frame


@budget(250)
@given(offloaded_packets())
def test_software_gso_raises_only_malformed_and_makes_plain_frames(packet):
    frames = decodes(to_plain_frames, packet)
    if frames is None:
        return
    if not needs_software(packet):
        assert frames == [packet[VNET_HDR_LEN:]]
    for frame in frames:
        assert isinstance(frame, bytes) and len(frame) <= MAX_FRAME
    # Plain frames need nothing more: cutting them again is the identity.
    for frame in frames:
        assert to_plain_frames(bytes(VNET_HDR_LEN) + frame) == [frame]


# -- IPv6 UDP, ICMPv6, NDP options ---------------------------------------------------------------


@budget(100)
@given(IP6, IP6, U16, U16, st.binary(max_size=100))
def test_udp6_round_trip_with_a_good_checksum(src, dst, sport, dport, payload):
    packet = encode_ipv6(src, dst, PROTO_UDP, encode_udp6(src, dst, sport, dport, payload))
    ip = decode_ipv6(packet, 0)
    assert decode_udp6(packet, ip) == (sport, dport, payload)
    assert udp6_checksum_ok(packet, ip)


@budget(200)
@given(IP6, IP6, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=60),
       st.binary(max_size=4))
def test_icmpv6_checksum_and_udp6_on_garbage(src, dst, kind, code, body, extra):
    packet = encode_ipv6(src, dst, 58, encode_icmpv6(src, dst, kind, code, body))
    ip = decode_ipv6(packet, 0)
    assert icmpv6_checksum_ok(packet, ip)
    frame = bytes(12) + b"\x86\xdd" + packet + extra
    assert routers_only(frame) in (True, False)
    assert routers_only(frame[:len(frame) // 2]) in (True, False)
    decodes(decode_udp6, packet, ip)  # an ICMPv6 body read as UDP: malformed or not


@budget(200)
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=30)), max_size=6))
def test_nd_options_round_trip(options):
    data = b"".join(nd_option(kind, body) for kind, body in options)
    decoded = nd_options(data)
    assert [kind for kind, _ in decoded] == [kind for kind, _ in options]
    for (_, body), (_, back) in zip(options, decoded, strict=True):
        assert back[:len(body)] == body and not back[len(body):].strip(b"\0")
    assert b"".join(nd_option(kind, body) for kind, body in decoded) == data  # fixed point


@budget(200)
@given(st.binary(max_size=40))
def test_nd_options_garbage_raises_only_malformed(data):
    decoded = decodes(nd_options, data)
    if decoded is not None:
        assert sum(len(body) + 2 for _, body in decoded) == len(data)


# -- the capture writers and the filter language ----------------------------------------------


def read_pcap(data: bytes) -> list[tuple[int, int, bytes, int]]:
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1)
    records, at = [], 24
    while at < len(data):
        seconds, micros, captured, original = struct.unpack_from("<IIII", data, at)
        records.append((seconds, micros, data[at + 16:at + 16 + captured], original))
        at += 16 + captured
    assert at == len(data)
    return records


FRAMES = st.lists(st.tuples(st.floats(0, 2**32 - 1, allow_nan=False),
                            st.binary(max_size=200).map(lambda b: b * 3)), max_size=6)


@budget(100)
@given(FRAMES)
def test_pcap_records_read_back(frames):
    out = io.BytesIO()
    writer = PcapWriter(out)
    for timestamp, frame in frames:
        writer.write(timestamp, frame)
    records = read_pcap(out.getvalue())
    assert [(r[2], r[3]) for r in records] == [(f, len(f)) for _, f in frames]
    for (timestamp, _), (seconds, micros, _, _) in zip(frames, records, strict=True):
        assert micros < 1_000_000 and abs(seconds + micros / 1e6 - timestamp) < 1e-3


@budget(100)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=3), FRAMES, st.data())
def test_pcapng_blocks_are_whole_and_read_back(names, frames, data):
    out = io.BytesIO()
    writer = PcapngWriter(out)
    for name in names:
        writer.add_interface(name, name[::-1])
    written = []
    for timestamp, frame in frames:
        interface = data.draw(st.integers(0, len(names) - 1))
        writer.write(interface, timestamp, frame, data.draw(st.one_of(st.none(), st.text())))
        written.append((interface, frame))
    blob, at, packets = out.getvalue(), 0, []
    while at < len(blob):
        kind, length = struct.unpack_from("<II", blob, at)
        assert length % 4 == 0 and struct.unpack_from("<I", blob, at + length - 4)[0] == length
        if kind == 6:
            interface, _, _, captured, original = struct.unpack_from("<IIIII", blob, at + 8)
            packets.append((interface, blob[at + 28:at + 28 + captured]))
            assert original == captured
        at += length
    assert at == len(blob) and packets == written
    with pytest.raises(ValueError):
        writer.write(len(names), 0.0, b"")


WORDS = ["host", "net", "port", "ether", "ip", "ip6", "arp", "tcp", "udp", "icmp", "src", "dst",
         "and", "or", "not", "&&", "||", "!", "(", ")", "10.0.0.1", "10.0.0.0/8", "80", "65536",
         "52:54:00:12:34:56", "vlan", "-1", "1.2.3", "::1", "", "\u00e9", "0x10"]


@budget(300)
@given(st.one_of(st.text(max_size=30), st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join)))
def test_the_filter_compiler_raises_only_filter_error(text):
    try:
        match = compile_filter(text)
    except FilterError:
        return
    for frame in (b"", bytes(60), bytes(12) + b"\x08\x00" + encode_ipv4(
            b"\n\0\0\1", b"\n\0\0\2", 6, encode_tcp(b"\n\0\0\1", b"\n\0\0\2", 1, 80, 0, 0, 2))):
        assert match(frame) in (True, False)
