"""The ground floor's codecs: every decoder against its encoder and against scapy, and its bad
input refused with MalformedPacket; the incremental checksum against a full recomputation."""

import random

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from wire.checksum import adjust_checksum, checksum_delta, internet_checksum
from wire.errors import MalformedPacket
from wire.packets import (
    ICMP_QUOTE_MAX,
    PROTO_TCP,
    PROTO_UDP,
    decode_ipv4,
    decode_udp,
    encode_ethernet,
    encode_icmp_error,
    encode_ipv4,
    encode_udp,
    format_mac,
    ipv4_ihl,
    qemu_mac,
)
from wire.tcp import ACK, FIN, PSH, SYN, decode_tcp, encode_tcp, reset_for

SRC, DST = bytes([10, 0, 0, 5]), bytes([192, 0, 2, 1])


def frame_of(payload: bytes, proto: int) -> bytes:
    return encode_ethernet(bytes(6), bytes(6), 0x0800, encode_ipv4(SRC, DST, proto, payload))


def test_ipv4_round_trip_at_any_offset_and_as_scapy_reads_it():
    frame = frame_of(b"x" * 30, 253)
    for lead in (b"", bytes(10), bytes(13)):
        ip = decode_ipv4(lead + frame, len(lead) + 14)
        assert (ip.src, ip.dst, ip.proto, ip.ttl) == (SRC, DST, 253, 64)
        assert (ip.start, ip.end) == (len(lead) + 34, len(lead) + 64)
        assert ipv4_ihl(lead + frame, len(lead) + 14) == 20
    assert Ether(frame)[IP].chksum == int.from_bytes(frame[24:26], "big")


@pytest.mark.parametrize("mangle, why", [
    (lambda f: f[:30], "truncated"),
    (lambda f: f[:14] + bytes([0x65]) + f[15:], "version 6"),
    (lambda f: f[:14] + bytes([0x44]) + f[15:], "IHL 4"),
    (lambda f: f[:16] + (2000).to_bytes(2, "big") + f[18:], "total length beyond the frame"),
    (lambda f: f[:24] + bytes(2) + f[26:], "bad header checksum"),
])
def test_ipv4_bad_input(mangle, why):
    with pytest.raises(MalformedPacket):
        decode_ipv4(mangle(frame_of(b"x" * 30, 253)))


def test_tcp_round_trip_with_options_as_scapy_reads_it():
    options = bytes([2, 4, 5, 0xB4, 1, 3, 3, 7])  # MSS 1460, NOP, window scale 7
    segment = encode_tcp(SRC, DST, 40000, 443, 7, 9, SYN | ACK, b"data", options)
    frame = frame_of(segment, PROTO_TCP)
    tcp = decode_tcp(frame, decode_ipv4(frame))
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags) == (40000, 443, 7, 9, SYN | ACK)
    assert frame[tcp.data:tcp.end] == b"data" and tcp.data - tcp.start == 28
    recomputed = Ether(frame)
    del recomputed[TCP].chksum
    assert Ether(bytes(recomputed))[TCP].chksum == Ether(frame)[TCP].chksum, "as scapy has it"


def test_tcp_bad_input():
    for segment in (encode_tcp(SRC, DST, 1, 2, 0, 0, SYN | FIN),  # SYN+FIN
                    encode_tcp(SRC, DST, 1, 2, 0, 0, ACK)[:12] + bytes([0x40]) + bytes(7),
                    encode_tcp(SRC, DST, 1, 2, 0, 0, ACK)[:10]):  # data offset 4; truncated
        frame = frame_of(segment, PROTO_TCP)
        with pytest.raises(MalformedPacket):
            decode_tcp(frame, decode_ipv4(frame))


def test_the_rst_for_a_segment_nobody_takes():
    """RFC 793 3.4: an ACK gets RST from its ACK number; else RST|ACK acking what it carried."""
    syn = frame_of(encode_tcp(SRC, DST, 40000, 81, 100, 0, SYN), PROTO_TCP)
    rst = reset_for(DST, syn, decode_ipv4(syn))
    assert rst is not None
    seq, ack, flags = int.from_bytes(rst[4:8], "big"), int.from_bytes(rst[8:12], "big"), rst[13]
    assert (seq, ack, flags) == (0, 101, 0x14)
    data = frame_of(encode_tcp(SRC, DST, 40000, 81, 5, 77, ACK | PSH, b"abc"), PROTO_TCP)
    rst = reset_for(DST, data, decode_ipv4(data))
    assert rst is not None and (int.from_bytes(rst[4:8], "big"), rst[13]) == (77, 0x04)


def test_udp_round_trip():
    frame = frame_of(encode_udp(SRC, DST, 5353, 53, b"question"), PROTO_UDP)
    sport, dport, payload = decode_udp(frame, decode_ipv4(frame))
    assert (sport, dport, payload) == (5353, 53, b"question")
    assert Ether(frame)[UDP].chksum == int.from_bytes(frame[40:42], "big")


def test_an_icmp_error_quotes_at_most_548_bytes():
    message = encode_icmp_error(3, 4, bytes(2000), (1400).to_bytes(4, "big"))
    assert len(message) == 8 + ICMP_QUOTE_MAX and internet_checksum(message) in (0, 0xFFFF)


def test_incremental_checksum_equals_a_full_recomputation():
    """RFC 1624: seeded random headers, random words changed, both ways agree."""
    rng = random.Random(1624)
    for _ in range(2000):
        data = bytearray(rng.randbytes(40))
        data[10:12] = bytes(2)
        data[10:12] = internet_checksum(data).to_bytes(2, "big")
        at = rng.randrange(0, 19) * 2
        at = at if at != 10 else 12
        old = bytes(data[at:at + 2])
        new = rng.randbytes(2)
        check = adjust_checksum(int.from_bytes(data[10:12], "big"), checksum_delta(old, new))
        data[at:at + 2] = new
        data[10:12] = bytes(2)
        assert internet_checksum(data) == check or {check, internet_checksum(data)} == {0, 0xFFFF}


def test_macs():
    assert format_mac(bytes.fromhex("525400123456")) == "52:54:00:12:34:56"
    assert qemu_mac("vm1")[:3] == b"\x52\x54\x00" and qemu_mac("vm1") == qemu_mac("vm1")
    assert qemu_mac("vm1") != qemu_mac("vm2")


def test_ethernet_with_and_without_vlan_tags():
    from scapy.layers.l2 import Dot1AD, Dot1Q

    from wire.packets import MAX_VLAN_TAGS, decode_ethernet

    plain = bytes(Ether(dst="52:54:00:00:00:02", src="52:54:00:00:00:01") / IP(src="10.0.0.5"))
    eth = decode_ethernet(plain)
    assert (eth.dst, eth.src, eth.ethertype, eth.tags, eth.start) == (
        bytes.fromhex("525400000002"), bytes.fromhex("525400000001"), 0x0800, 0, 14)
    qinq = bytes(Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / IP())
    assert decode_ethernet(bytes(10) + qinq, 10)[2:] == (0x0800, 2, 10 + 22)
    deep = Ether() / Dot1Q(vlan=1)
    for _ in range(MAX_VLAN_TAGS):
        deep = deep / Dot1Q(vlan=1)
    for bad in (plain[:13], bytes(Ether() / Dot1Q())[:16], bytes(deep / IP())):
        with pytest.raises(MalformedPacket):
            decode_ethernet(bad)


def test_icmp_arp_and_virtio_net_headers_round_trip():
    from wire.packets import PROTO_ICMP, Arp, decode_arp, decode_icmp, encode_arp, encode_icmp
    from wire.vnet import GSO_TCPV4, decode_header, encode_header

    echo = encode_icmp(8, 0, (0x1234).to_bytes(2, "big") + (7).to_bytes(2, "big") + b"ping")
    frame = frame_of(echo, PROTO_ICMP)
    icmp = decode_icmp(frame, decode_ipv4(frame))
    assert (icmp.type, icmp.code, icmp.word >> 16, icmp.word & 0xFFFF) == (8, 0, 0x1234, 7)
    assert frame[icmp.start + 8:icmp.end] == b"ping"
    short = frame_of(echo[:6], PROTO_ICMP)
    with pytest.raises(MalformedPacket):
        decode_icmp(short, decode_ipv4(short))
    arp = Arp(1, bytes(range(6)), SRC, bytes(6), DST)
    assert decode_arp(bytes(14) + encode_arp(arp)) == arp
    header = encode_header(1, GSO_TCPV4, 54, 1448, 34, 16)
    assert tuple(decode_header(header)) == (1, GSO_TCPV4, 54, 1448, 34, 16)
