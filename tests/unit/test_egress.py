"""nat/egress pure helpers (the socket side is tested in tests/lab/test_host_egress.py)."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from nat.egress import fragments
from wire.checksum import internet_checksum, pseudo_header_sum
from wire.packets import PROTO_UDP, encode_udp

SRC, DST = bytes([10, 95, 0, 1]), bytes([10, 96, 0, 11])


def test_a_datagram_that_fits_is_one_packet_with_df():
    (packet,) = fragments(SRC, DST, PROTO_UDP, encode_udp(SRC, DST, 7, 4000, b"x" * 100), 5,
                          1500)
    ip = Ether(packet[10:])[IP]
    assert packet[:10] == bytes(10) and ip.flags == "DF" and ip.len == 128 and ip.id == 5


def test_a_large_datagram_becomes_fragments_that_reassemble_to_it():
    """RFC 791: pieces of 1480 bytes (a multiple of 8), MF on all but the last, one id, each
    with a valid header checksum; together they carry the UDP datagram, its checksum valid."""
    data = bytes(range(256)) * 16
    datagram = encode_udp(SRC, DST, 7, 4000, data)
    out = fragments(SRC, DST, PROTO_UDP, datagram, 77, 1500)
    ips = [Ether(p[10:])[IP] for p in out]
    assert [len(p) - 24 for p in out] == [1500, 1500, 20 + len(datagram) - 2960]
    assert [(ip.frag * 8, str(ip.flags)) for ip in ips] == [(0, "MF"), (1480, "MF"),
                                                              (2960, "")]
    assert all(ip.id == 77 for ip in ips)
    for ip in ips:
        recomputed = IP(bytes(ip))
        del recomputed.chksum
        assert IP(bytes(recomputed)).chksum == ip.chksum
    whole = b"".join(bytes(ip.payload) for ip in ips)
    assert whole == datagram
    assert internet_checksum(pseudo_header_sum(SRC, DST, PROTO_UDP, len(whole)) + whole) == 0
    assert bytes(UDP(whole).payload) == data
