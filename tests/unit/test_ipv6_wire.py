"""wire.ipv6 against scapy's own IPv6: the header and its extension chain, the ICMPv6
checksum, NDP options and the addresses derived from a MAC."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    in6_getnsma,
)
from scapy.layers.l2 import Ether
from scapy.utils6 import in6_mactoifaceid

from wire.errors import MalformedPacket
from wire.ipv6 import (
    PROTO_ICMPV6,
    decode_ipv6,
    encode_icmpv6,
    encode_ipv6,
    icmpv6_checksum_ok,
    interface_id,
    link_local,
    multicast_mac,
    nd_option,
    nd_options,
    solicited_node,
)

A, B = "fd42::10", "fd42::1"
MAC = bytes.fromhex("525400123456")


def frame(packet) -> bytes:
    return bytes(Ether(src="52:54:00:12:34:56", dst="52:54:00:00:00:01") / packet)


def test_a_plain_header_decodes_to_its_fields_and_payload_offsets():
    raw = frame(IPv6(src=A, dst=B, hlim=7) / UDP(sport=1, dport=2) / b"hello")
    ip = decode_ipv6(raw)
    assert (ip.src, ip.dst, ip.proto, ip.hop_limit, ip.fragment) == (
        bytes.fromhex("fd420000000000000000000000000010"),
        bytes.fromhex("fd420000000000000000000000000001"), 17, 7, None)
    assert (ip.start, ip.end) == (54, len(raw))


def test_the_extension_chain_is_walked_to_the_upper_layer():
    raw = frame(IPv6(src=A, dst=B) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrFragment(id=77, offset=5, m=1) / UDP() / (b"x" * 8))
    ip = decode_ipv6(raw)
    assert ip.proto == 17 and ip.fragment == (77, 40, True)
    assert raw[ip.start:ip.start + 2] == bytes(UDP())[:2]


@pytest.mark.parametrize("packet, says", [
    (IPv6(src=A, dst=B) / IPv6ExtHdrRouting(type=0) / UDP(), "type 0"),
    (IPv6(src=A, dst=B) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(), "hop-by-hop"),
    (IPv6(src=A, dst=B) / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()) / IPv6ExtHdrDestOpt()
     / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
     / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / UDP(), "more than 8"),
])
def test_refused_chains(packet, says):
    with pytest.raises(MalformedPacket, match=says):
        decode_ipv6(frame(packet))


def test_lengths_beyond_the_frame_and_other_versions_are_refused():
    raw = frame(IPv6(src=A, dst=B, plen=400) / UDP())
    with pytest.raises(MalformedPacket, match="beyond the frame"):
        decode_ipv6(raw)
    with pytest.raises(MalformedPacket, match="truncated"):
        decode_ipv6(raw[:40])
    with pytest.raises(MalformedPacket, match="version"):
        decode_ipv6(raw[:14] + b"\x45" + raw[15:])


@given(st.binary(max_size=120))
@settings(max_examples=300, deadline=None)
def test_garbage_never_raises_anything_but_malformed(tail):
    head = frame(IPv6(src=A, dst=B))[:20]
    try:
        decode_ipv6(head + tail)
    except MalformedPacket:
        pass


def test_icmpv6_checksums_agree_with_scapy():
    src, dst = bytes.fromhex("fd42" + "00" * 12 + "0010"), bytes.fromhex("fd42" + "00" * 13 + "01")
    body = bytes.fromhex("12340001") + b"data"
    ours = encode_ipv6(src, dst, PROTO_ICMPV6, encode_icmpv6(src, dst, 128, 0, body))
    theirs = bytes(IPv6(src=A, dst=B) / ICMPv6EchoRequest(id=0x1234, seq=1, data=b"data"))
    assert ours == theirs
    raw = frame(IPv6(theirs))
    assert icmpv6_checksum_ok(raw, decode_ipv6(raw))
    broken = raw[:-1] + bytes([raw[-1] ^ 1])
    assert not icmpv6_checksum_ok(broken, decode_ipv6(broken))


def test_nd_options_read_and_write_as_scapy_does():
    ns = bytes(ICMPv6ND_NS(tgt=B) / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:12:34:56"))
    assert nd_options(ns[24:]) == [(1, MAC)]
    assert nd_option(1, MAC) == ns[24:]
    with pytest.raises(MalformedPacket, match="length 0"):
        nd_options(b"\x01\x00" + bytes(6))
    with pytest.raises(MalformedPacket, match="beyond"):
        nd_options(b"\x01\x02" + bytes(6))


def test_addresses_from_a_mac_match_scapy():
    assert interface_id(MAC).hex() == in6_mactoifaceid("52:54:00:12:34:56").replace(":", "")\
        .lower()
    assert link_local(MAC) == bytes.fromhex("fe80000000000000") + interface_id(MAC)
    target = bytes.fromhex("fd42" + "00" * 11 + "abcdef")
    assert solicited_node(target) == in6_getnsma(target)
    assert multicast_mac(solicited_node(target)) == bytes.fromhex("3333ffabcdef")
