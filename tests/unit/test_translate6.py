"""NAT66 packet translation (nat.translate6): every output is compared with what scapy builds
from scratch, and its checksums are recomputed by scapy and must agree."""

import random
import socket
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_Redirect,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    defragment6,
    fragment6,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from nat.conntrack import Conntrack
from nat.translate6 import (
    FIRST,
    HOP_LIMIT_EXCEEDED,
    LATER,
    NOT_TRANSLATABLE,
    UDP_ZERO_CHECKSUM,
    WHOLE,
    Flow,
    admin_prohibited6,
    flow_of6,
    icmp6_error,
    is_icmp6_error,
    nat_packet6,
    packet_too_big6,
    time_exceeded6,
    translate6,
    translate_icmp6_error,
    unreachable6,
)
from nat.verdicts import NO_MAPPING, Drop, Translation
from wire.checksum import internet_checksum
from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.vnet import FLAG_NEEDS_CSUM, GSO_NONE, GSO_TCPV6, NO_OFFLOAD, encode_header, wrap

GUEST_MAC, ROUTER_MAC = "52:54:00:00:00:0a", "52:54:00:00:00:01"
EXT, A, B = "2001:db8:ffff::1", "fd42:0:0:1::10", "fd42:0:0:1::11"
R1, HOP, GW = "2001:db8:1::1", "2001:db8:99::1", "fd42:0:0:1::1"
L3 = 24  # virtio-net header and Ethernet header


def addr(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def pkt(layers: Packet, src: str = GUEST_MAC, dst: str = ROUTER_MAC) -> bytes:
    """A vswitch packet: no offloads, every length and checksum computed by scapy."""
    return wrap(bytes(Ether(src=src, dst=dst) / layers))


def offload(layers: Packet, gso_type: int = GSO_NONE, gso_size: int = 0) -> bytes:
    """As a guest hands it over with NEEDS_CSUM: the L4 field holds the pseudo header sum
    (RFC 8200 8.1: addresses, 32-bit length, next header)."""
    frame = bytearray(bytes(Ether(src=GUEST_MAC, dst=ROUTER_MAC) / layers))
    parsed = Ether(bytes(frame))
    l4 = 14 + 40
    proto, at = (6, l4 + 16) if TCP in parsed else (17, l4 + 6)
    segment = bytes(frame[l4:])
    pseudo = frame[14 + 8:14 + 40] + struct.pack("!IxxxB", len(segment), proto)
    frame[at:at + 2] = (~checksum(pseudo) & 0xFFFF).to_bytes(2, "big")
    header_len = len(frame) - len(bytes(layers[TCP].payload)) if TCP in layers else 0
    return encode_header(FLAG_NEEDS_CSUM, gso_type, header_len, gso_size, l4, at - l4) + frame


_CHECKSUMS = ((TCP, "chksum"), (UDP, "chksum"), (ICMPv6EchoRequest, "cksum"),
              (ICMPv6EchoReply, "cksum"), (ICMPv6PacketTooBig, "cksum"),
              (ICMPv6DestUnreach, "cksum"), (ICMPv6TimeExceeded, "cksum"),
              (ICMPv6ParamProblem, "cksum"))


def assert_checksum_verifies(packet: bytes | bytearray) -> None:
    """scapy re-parses the frame, forgets its (outer) L4 checksum, builds it again: the same
    bytes.  The layer must be there: a test of nothing fails."""
    frame = bytes(packet[10:])
    parsed = Ether(frame)
    for layer, field in _CHECKSUMS:
        if layer in parsed:
            setattr(parsed[layer], field, None)
            break
    else:
        raise AssertionError(f"no checksummed layer in {parsed.summary()}")
    assert bytes(Ether(bytes(parsed))) == frame


def nat(conntrack: Conntrack, packet: bytes, from_outside: bool = False, now: float = 0.0):
    out = nat_packet6(packet, conntrack, from_outside, now)
    assert not isinstance(out, Drop), out
    return out


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def ct() -> Conntrack:
    return Conntrack(addr(EXT))


# --- flow_of6 ----------------------------------------------------------------------------------


def test_flow_of6_reads_tcp_udp_and_echo():
    syn = pkt(IPv6(src=A, dst=R1, hlim=64) / TCP(sport=40000, dport=80, flags="S"))
    flow = flow_of6(syn)
    assert flow == Flow(6, addr(A), 40000, addr(R1), 80, 0x02, 60, 64, 0, WHOLE, L3, L3 + 40)
    assert flow is not None and flow.key == (6, addr(A), 40000, addr(R1), 80)
    udp = flow_of6(pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=53) / Raw(b"q")))
    assert udp is not None and udp.key == (17, addr(A), 5000, addr(R1), 53)
    echo = flow_of6(pkt(IPv6(src=A, dst=R1) / ICMPv6EchoRequest(id=77, seq=1)))
    assert echo is not None and echo.key == (58, addr(A), 77, addr(R1), 77)


def test_flow_of6_walks_extension_headers_to_the_l4_header():
    layers = (IPv6(src=A, dst=R1) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() /
              UDP(sport=5000, dport=53) / Raw(b"q"))
    flow = flow_of6(pkt(layers))
    assert flow is not None and flow.key == (17, addr(A), 5000, addr(R1), 53)
    assert flow.l4 == L3 + 40 + 8 + 8


def test_flow_of6_ignores_what_the_nat_does_not_map():
    assert flow_of6(pkt(IP(src="10.0.0.1", dst="10.0.0.2") / UDP())) is None
    assert flow_of6(pkt(Dot1Q(vlan=5) / IPv6(src=A, dst=R1) / UDP())) is None
    assert flow_of6(pkt(IPv6(src=A, dst=R1, nh=47) / Raw(bytes(8)))) is None  # GRE
    assert flow_of6(pkt(IPv6(src=A, dst=R1, nh=59))) is None  # no next header
    assert flow_of6(pkt(IPv6(src=A, dst="ff02::1:ff00:1", hlim=255) /
                        ICMPv6ND_NS(tgt=GW))) is None
    error = pkt(IPv6(src=A, dst=R1) / ICMPv6DestUnreach(code=4) / IPv6(src=R1, dst=A) / UDP())
    assert flow_of6(error) is None and is_icmp6_error(error)
    assert not is_icmp6_error(pkt(IPv6(src=A, dst=R1) / ICMPv6EchoRequest()))
    assert not is_icmp6_error(pkt(IP(src="10.0.0.1", dst="10.0.0.2") / UDP()))
    assert not is_icmp6_error(b"\x00" * 30)


def test_a_routing_header_with_segments_left_is_not_translated(ct):
    # RFC 8200 8.1: its pseudo header holds the final destination, not the address we rewrite.
    routed = pkt(IPv6(src=A, dst=R1) / IPv6ExtHdrRouting(type=4, segleft=1, addresses=[HOP]) /
                 UDP(sport=5000, dport=53))
    assert flow_of6(routed) is None
    assert nat_packet6(routed, ct, False, 0.0) == NOT_TRANSLATABLE
    done = pkt(IPv6(src=A, dst=R1) / IPv6ExtHdrRouting(type=4, segleft=0, addresses=[HOP]) /
               UDP(sport=5000, dport=53))
    assert flow_of6(done) is not None


# --- translate6: checksums updated, never recomputed ---------------------------------------------


def test_snat_tcp_then_the_reply(ct):
    data = Raw(payload(100))
    out = nat(ct, pkt(IPv6(src=A, dst=R1) / TCP(sport=40000, dport=80, flags="S") / data))
    assert out == [pkt(IPv6(src=EXT, dst=R1, hlim=63) / TCP(sport=40000, dport=80, flags="S") /
                       data)]
    assert_checksum_verifies(out[0])
    reply = pkt(IPv6(src=R1, dst=EXT, hlim=50) / TCP(sport=80, dport=40000, flags="SA") / data)
    back = nat(ct, reply, from_outside=True)
    assert back == [pkt(IPv6(src=R1, dst=A, hlim=49) / TCP(sport=80, dport=40000, flags="SA") /
                        data)]
    assert_checksum_verifies(back[0])


def test_snat_changes_the_port_when_taken(ct):
    nat(ct, pkt(IPv6(src=B, dst=R1) / UDP(sport=5000, dport=53)))
    out = nat(ct, pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=53) / Raw(b"query")))
    assert out == [pkt(IPv6(src=EXT, dst=R1, hlim=63) / UDP(sport=1024, dport=53) /
                       Raw(b"query"))]
    assert_checksum_verifies(out[0])
    back = nat(ct, pkt(IPv6(src=R1, dst=EXT) / UDP(sport=53, dport=1024) / Raw(b"answer")), True)
    assert back == [pkt(IPv6(src=R1, dst=A, hlim=63) / UDP(sport=53, dport=5000) /
                        Raw(b"answer"))]
    assert_checksum_verifies(back[0])


def test_extension_headers_are_kept_and_the_l4_checksum_follows(ct):
    layers = IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(sport=3000, dport=443, flags="S")
    out = nat(ct, pkt(IPv6(src=A, dst=R1) / layers / Raw(b"x")))
    assert out == [pkt(IPv6(src=EXT, dst=R1, hlim=63) / layers / Raw(b"x"))]
    assert_checksum_verifies(out[0])


def test_udp_checksum_zero_is_dropped(ct):
    # RFC 8200 8.1: a zero UDP checksum over IPv6 is invalid; receivers discard it.
    zero = pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=53, chksum=0) / Raw(b"x"))
    assert nat_packet6(zero, ct, False, 0.0) == UDP_ZERO_CHECKSUM
    assert len(ct) == 0  # no flow made for it
    flow = flow_of6(zero)
    assert flow is not None
    with pytest.raises(MalformedPacket):
        translate6(zero, flow, Translation(17, addr(R1), 53, addr(EXT), 5000))


def test_udp_checksum_that_becomes_zero_is_sent_as_all_ones(ct):
    # Choose the payload word that makes the translated datagram's sum 0xFFFF: checksum 0.
    header = struct.pack("!HHHH", 5000, 53, 10, 0)
    pseudo = addr(EXT) + addr(R1) + struct.pack("!IxxxB", 10, 17)
    word = struct.pack("!H", internet_checksum(pseudo + header))
    out = nat(ct, pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=53) / Raw(word)))
    assert out == [pkt(IPv6(src=EXT, dst=R1, hlim=63) / UDP(sport=5000, dport=53) / Raw(word))]
    assert out[0][-4:-2] == b"\xff\xff"


def test_icmpv6_echo_identifier_and_pseudo_header_translated(ct):
    nat(ct, pkt(IPv6(src=B, dst=R1) / ICMPv6EchoRequest(id=77, seq=1)))
    out = nat(ct, pkt(IPv6(src=A, dst=R1) / ICMPv6EchoRequest(id=77, seq=1, data=b"ping")))
    assert out == [pkt(IPv6(src=EXT, dst=R1, hlim=63) /
                       ICMPv6EchoRequest(id=0, seq=1, data=b"ping"))]
    assert_checksum_verifies(out[0])
    back = pkt(IPv6(src=R1, dst=EXT) / ICMPv6EchoReply(id=0, seq=1, data=b"ping"))
    [reply] = nat(ct, back, True)
    assert reply == pkt(IPv6(src=R1, dst=A, hlim=63) / ICMPv6EchoReply(id=77, seq=1, data=b"ping"))
    assert_checksum_verifies(reply)


def test_icmpv6_echo_flows_time_out_as_icmp_echo_does(ct):
    nat(ct, pkt(IPv6(src=A, dst=R1) / ICMPv6EchoRequest(id=9)))
    [row] = ct.entries(0.0)
    assert row.original[0] == 58 and row.seconds_left == ct.timeouts.icmp
    assert ct.expire(ct.timeouts.icmp + 1) == 1
    # Hairpinned echo to the external address is refused, as for ICMP.
    assert nat_packet6(pkt(IPv6(src=A, dst=EXT) / ICMPv6EchoRequest(id=9)), ct, False,
                       100.0) == NO_MAPPING
    # Echo from outside never opens a flow (conntrack Rule 3).
    assert nat_packet6(pkt(IPv6(src=R1, dst=EXT) / ICMPv6EchoRequest(id=9)), ct, True,
                       100.0) == NO_MAPPING


@pytest.mark.parametrize("l4", [TCP(sport=40000, dport=443, flags="PA"),
                                UDP(sport=40000, dport=443)], ids=["tcp", "udp"])
def test_needs_csum_partial_checksum_follows_addresses_only(ct, l4):
    # The guest leaves the pseudo header sum; NAT adjusts it for the new addresses, and the
    # checksum finished afterwards (here in software, as a NIC would) covers the new port.
    nat(ct, pkt(IPv6(src=B, dst=R1) / UDP(sport=40000, dport=443)))  # EXT:40000 taken for UDP
    nat(ct, pkt(IPv6(src=B, dst=R1) / TCP(sport=40000, dport=443, flags="S")))  # and for TCP
    ct.outbound(6, addr(A), 40000, addr(R1), 443, 0x02, 60, 0.0)
    data = Raw(payload(300))
    [out] = nat(ct, offload(IPv6(src=A, dst=R1) / l4 / data))
    assert out[0] & FLAG_NEEDS_CSUM and out[:10] == offload(IPv6(src=A, dst=R1) / l4 / data)[:10]
    ext = l4.copy()
    ext.sport = 1024
    want = IPv6(src=EXT, dst=R1, hlim=63) / ext / data
    # The partial sum is exactly the new pseudo header's ...
    assert out == offload(want)
    # ... and finishing it gives what scapy computes for the translated segment.
    [frame] = to_plain_frames(bytes(out))
    assert frame == bytes(Ether(src=GUEST_MAC, dst=ROUTER_MAC) / want)
    assert_checksum_verifies(NO_OFFLOAD + frame)


def test_gso_super_frame_rewritten_once_then_segmented(ct):
    nat(ct, pkt(IPv6(src=B, dst=R1) / TCP(sport=40000, dport=443, flags="S")))
    ct.outbound(6, addr(A), 40000, addr(R1), 443, 0x02, 60, 0.0)
    data = Raw(payload(4000))
    original = IPv6(src=A, dst=R1) / TCP(sport=40000, dport=443, flags="PA", seq=7) / data
    [out] = nat(ct, offload(original, GSO_TCPV6, 1428))
    expected = IPv6(src=EXT, dst=R1, hlim=63) / TCP(sport=1024, dport=443, flags="PA",
                                                     seq=7) / data
    assert out == offload(expected, GSO_TCPV6, 1428)
    frames = to_plain_frames(bytes(out))
    assert len(frames) == 3
    assert frames == to_plain_frames(offload(expected, GSO_TCPV6, 1428))
    assert frames == [bytes(Ether(f)) for f in frames]  # scapy agrees with every checksum
    for frame in frames:
        assert_checksum_verifies(NO_OFFLOAD + frame)


def test_needs_csum_pointing_elsewhere_is_refused():
    packet = bytearray(offload(IPv6(src=A, dst=R1) / UDP(sport=1, dport=2)))
    packet[6] += 2  # csum_start
    flow = flow_of6(bytes(packet))
    assert flow is not None
    with pytest.raises(MalformedPacket):
        translate6(bytes(packet), flow, Translation(17, addr(R1), 2, addr(EXT), 1))


def test_hop_limit_exhausted_is_refused_with_time_exceeded(ct):
    assert nat_packet6(pkt(IPv6(src=A, dst=R1, hlim=1) / UDP()), ct, False, 0.0) == \
        HOP_LIMIT_EXCEEDED
    assert HOP_LIMIT_EXCEEDED.icmp == (3, 0)  # ICMPv6 time exceeded, in transit
    assert nat_packet6(pkt(IPv6(src=A, dst=R1, hlim=0) / UDP()), ct, False, 0.0) == \
        HOP_LIMIT_EXCEEDED
    assert nat_packet6(pkt(IP(src="10.0.0.1", dst="10.0.0.2") / UDP()), ct, False, 0.0) == \
        NOT_TRANSLATABLE
    assert len(ct) == 0


def test_refusals_name_icmpv6_errors():
    # Rule 7: a full table is ICMPv6 1/1 (administratively prohibited), not ICMPv4 3/13.
    ct = Conntrack(addr(EXT), max_entries=1)
    nat(ct, pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=2)))
    nat(ct, pkt(IPv6(src=R1, dst=EXT) / UDP(sport=2, dport=5000)), True)  # replied: kept
    refused = nat_packet6(pkt(IPv6(src=B, dst=R1) / UDP(sport=5000, dport=2)), ct, False, 0.0)
    assert refused == Drop("table-full", (1, 1))
    assert ct.stats["drop:table-full"] == 1


# --- ICMPv6 errors through the flow they quote ---------------------------------------------------


def test_packet_too_big_from_outside_reaches_the_guest_with_its_own_packet_quoted(ct):
    nat(ct, pkt(IPv6(src=B, dst=R1) / TCP(sport=40000, dport=443, flags="S")))
    data = Raw(payload(1400))
    sent = IPv6(src=A, dst=R1) / TCP(sport=40000, dport=443, flags="S") / data
    [left] = nat(ct, pkt(sent))  # leaves as EXT:1024
    quote = left[L3:L3 + 1280 - 48]  # as much as fits in 1280 bytes (RFC 4443 2.4(c))
    error = pkt(IPv6(src=HOP, dst=EXT, hlim=60) / ICMPv6PacketTooBig(mtu=1280) / Raw(quote))
    [got] = nat(ct, error, True)
    # The quote reverts to what A sent (hop limit as it was quoted), its TCP checksum with it;
    # the outer destination becomes the quote's source.
    want = bytes(IPv6(src=A, dst=R1, hlim=63) / TCP(sport=40000, dport=443, flags="S") / data)
    assert got == pkt(IPv6(src=HOP, dst=A, hlim=59) / ICMPv6PacketTooBig(mtu=1280) /
                      Raw(want[:1280 - 48]))
    assert_checksum_verifies(got)
    parsed = Ether(got[10:])
    assert parsed[ICMPv6PacketTooBig].mtu == 1280
    quoted = IPv6(bytes(parsed[ICMPv6PacketTooBig].payload))
    assert (quoted.src, quoted.dst, quoted[TCP].sport, quoted[TCP].dport) == (A, R1, 40000, 443)
    # The quoted TCP checksum is the one A computed, verified against the whole segment.
    assert quoted[TCP].chksum == IPv6(want)[TCP].chksum


def test_port_unreachable_from_a_guest_goes_out_from_the_external_address(ct):
    ct.add_forward(17, range(5353, 5354), addr(A), 53)
    came = pkt(IPv6(src=R1, dst=EXT, hlim=40) / UDP(sport=7000, dport=5353) / Raw(b"q"))
    [delivered] = nat(ct, came, True)
    assert Ether(delivered[10:])[IPv6].dst == A
    error = pkt(IPv6(src=A, dst=R1) / ICMPv6DestUnreach(code=4) / Raw(delivered[L3:]))
    [out] = nat(ct, error)
    want = IPv6(src=R1, dst=EXT, hlim=39) / UDP(sport=7000, dport=5353) / Raw(b"q")
    assert out == pkt(IPv6(src=EXT, dst=R1, hlim=63) / ICMPv6DestUnreach(code=4) /
                      Raw(bytes(want)))
    assert_checksum_verifies(out)
    assert IPv6(bytes(want))[UDP].chksum == IPv6(bytes(Ether(out[10:])[ICMPv6DestUnreach]
                                                      .payload))[UDP].chksum


def test_hairpinned_icmpv6_error(ct):
    nat(ct, pkt(IPv6(src=B, dst=R1) / UDP(sport=6000, dport=3478)))  # B's mapping EXT:6000
    [there] = nat(ct, pkt(IPv6(src=A, dst=EXT) / UDP(sport=4000, dport=6000) / Raw(b"hi")))
    assert Ether(there[10:])[IPv6].dst == B
    error = pkt(IPv6(src=B, dst=EXT) / ICMPv6DestUnreach(code=4) / Raw(there[L3:]))
    want = IPv6(src=A, dst=EXT, hlim=63) / UDP(sport=4000, dport=6000) / Raw(b"hi")
    # RFC 5508 REQ-7a's analogue: the outer destination is the quote's translated source, A.
    assert nat(ct, error) == [pkt(IPv6(src=EXT, dst=A, hlim=63) / ICMPv6DestUnreach(code=4) /
                                  Raw(bytes(want)))]


def test_time_exceeded_quoting_an_echo_request(ct):
    nat(ct, pkt(IPv6(src=B, dst=R1) / ICMPv6EchoRequest(id=5)))
    [left] = nat(ct, pkt(IPv6(src=A, dst=R1, hlim=2) / ICMPv6EchoRequest(id=5, seq=3)))
    error = pkt(IPv6(src=HOP, dst=EXT) / ICMPv6TimeExceeded(code=0) / Raw(left[L3:]))
    [got] = nat(ct, error, True)
    want = IPv6(src=A, dst=R1, hlim=1) / ICMPv6EchoRequest(id=5, seq=3)
    assert got == pkt(IPv6(src=HOP, dst=A, hlim=63) / ICMPv6TimeExceeded() /
                      Raw(bytes(want)))
    assert_checksum_verifies(got)


def test_parameter_problem_with_extension_headers_in_the_quote(ct):
    layers = IPv6ExtHdrDestOpt() / UDP(sport=5000, dport=53) / Raw(b"query")
    [left] = nat(ct, pkt(IPv6(src=A, dst=R1) / layers))
    error = pkt(IPv6(src=R1, dst=EXT) / ICMPv6ParamProblem(code=1, ptr=40) / Raw(left[L3:]))
    [got] = nat(ct, error, True)
    want = IPv6(src=A, dst=R1, hlim=63) / layers
    assert got == pkt(IPv6(src=R1, dst=A, hlim=63) / ICMPv6ParamProblem(code=1, ptr=40) /
                      Raw(bytes(want)))


def test_icmpv6_error_without_a_flow_is_dropped(ct):
    stray = IPv6(src=EXT, dst=R1) / UDP(sport=1234, dport=53)
    error = pkt(IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach(code=1) / Raw(bytes(stray)))
    assert nat_packet6(error, ct, True, 0.0) == NO_MAPPING  # RFC 5508 REQ-4's analogue


def test_no_icmpv6_error_refreshes_or_deletes_a_flow(ct):
    # RFC 4787 REQ-12, RFC 5382 REQ-10, RFC 5508 REQ-6.
    [left] = nat(ct, pkt(IPv6(src=A, dst=R1) / TCP(sport=40000, dport=80, flags="S")), now=0.0)
    for layer in (ICMPv6DestUnreach(code=4), ICMPv6DestUnreach(code=1), ICMPv6PacketTooBig(),
                  ICMPv6TimeExceeded(), ICMPv6ParamProblem()):
        error = pkt(IPv6(src=HOP, dst=EXT) / layer / Raw(left[L3:]))
        assert not isinstance(nat_packet6(error, ct, True, 200.0), Drop)
    [row] = ct.entries(200.0)
    assert (row.packets_original, row.packets_reply, row.seconds_left) == (1, 0, 40.0)
    assert ct.expire(240.0) == 1


def test_an_icmpv6_error_with_hop_limit_1_is_dropped_silently(ct):
    [left] = nat(ct, pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=53)))
    error = pkt(IPv6(src=HOP, dst=EXT, hlim=1) / ICMPv6DestUnreach(code=4) / Raw(left[L3:]))
    dropped = nat_packet6(error, ct, True, 0.0)
    assert isinstance(dropped, Drop) and dropped.icmp is None  # no error about an error


@pytest.mark.parametrize("error", [
    IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach() / Raw(bytes(30)),  # quote truncated
    IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach() / IPv6(src=EXT, dst=R1) /
    ICMPv6DestUnreach() / IPv6(src=R1, dst=EXT) / UDP(),  # nested: an error about an error
    IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach() / IPv6(src=EXT, dst=R1) /
    IPv6ExtHdrFragment(offset=10, nh=17) / Raw(bytes(16)),  # quotes a later fragment
    IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach(cksum=1) / IPv6(src=EXT, dst=R1) / UDP(),
    IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach() / Raw(b"\x45" + bytes(47)),  # not IPv6
    IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach() / IPv6(src=EXT, dst=R1) /
    IPv6ExtHdrDestOpt(len=8) / UDP(),  # the quote's extension header beyond the quote
    IPv6(src=HOP, dst=EXT) / IPv6ExtHdrFragment(m=1, id=1) / ICMPv6DestUnreach() /
    IPv6(src=EXT, dst=R1) / UDP(),  # the error itself fragmented
], ids=["truncated", "nested", "quoted-later-fragment", "checksum", "not-ipv6",
        "quoted-chain-beyond", "fragmented"])
def test_bad_icmpv6_errors_are_malformed(ct, error):
    with pytest.raises(MalformedPacket):
        translate_icmp6_error(pkt(error), ct, True)


def test_icmpv6_error_with_offloads_or_not_an_error_is_malformed(ct):
    error = IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach() / IPv6(src=EXT, dst=R1) / UDP()
    with pytest.raises(MalformedPacket):
        translate_icmp6_error(encode_header(FLAG_NEEDS_CSUM) + pkt(error)[10:], ct, True)
    with pytest.raises(MalformedPacket):
        translate_icmp6_error(pkt(IPv6(src=HOP, dst=EXT) / ICMPv6EchoRequest()), ct, True)
    with pytest.raises(MalformedPacket):
        translate_icmp6_error(pkt(IP(src="10.0.0.1", dst="10.0.0.2") / UDP()), ct, True)


# --- fragments: virtual reassembly -------------------------------------------------------------


def fragments(layers: Packet, size: int) -> list[bytes]:
    return [pkt(piece) for piece in fragment6(layers, size)]


def reassembled(out: list) -> bytes:
    return bytes(defragment6([IPv6(bytes(p[L3:])) for p in out]))


def test_outbound_fragments_follow_their_first(ct):
    data = Raw(payload(3000))
    datagram = IPv6(src=A, dst=R1) / IPv6ExtHdrFragment(id=7) / UDP(sport=5000, dport=9) / data
    pieces = fragments(datagram, 1280)
    assert [flow_of6(p).fragment for p in pieces] == [FIRST, LATER, LATER]
    assert flow_of6(pieces[1]).ident == 7 and flow_of6(pieces[1]).sport == 0
    out = [p for piece in pieces for p in nat(ct, piece)]
    assert len(out) == 3
    for p in out:  # addresses and hop limit rewritten in every fragment
        parsed = Ether(p[10:])[IPv6]
        assert (parsed.src, parsed.dst, parsed.hlim) == (EXT, R1, 63)
    want = IPv6(src=EXT, dst=R1, hlim=63) / UDP(sport=5000, dport=9) / data
    assert reassembled(out) == bytes(want)  # the UDP checksum over the whole datagram agrees


def test_inbound_fragments_out_of_order_wait_for_the_first_then_all_translate(ct):
    data = Raw(payload(3000))
    nat(ct, pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=9)))
    datagram = (IPv6(src=R1, dst=EXT, hlim=30) / IPv6ExtHdrFragment(id=4242) /
                UDP(sport=9, dport=5000) / data)
    pieces = fragments(datagram, 1280)
    assert nat(ct, pieces[2], True, 1.0) == []  # waits for its first fragment
    out = nat(ct, pieces[0], True, 1.5)
    assert len(out) == 2  # the first, then the one that waited
    out += nat(ct, pieces[1], True, 2.0)
    want = IPv6(src=R1, dst=A, hlim=29) / UDP(sport=9, dport=5000) / data
    assert reassembled(out) == bytes(want)


def test_fragments_with_a_destination_options_header_in_the_fragmentable_part(ct):
    # Later fragments name the destination options header (60), not UDP: still one datagram.
    data = Raw(payload(2000))
    datagram = (IPv6(src=A, dst=R1) / IPv6ExtHdrFragment(id=99) / IPv6ExtHdrDestOpt() /
                UDP(sport=5000, dport=9) / data)
    pieces = fragments(datagram, 1280)
    assert len(pieces) == 2 and IPv6(pieces[1][L3:])[IPv6ExtHdrFragment].nh == 60
    assert nat(ct, pieces[1], False, 0.0) == []
    out = nat(ct, pieces[0], False, 0.0)
    want = IPv6(src=EXT, dst=R1, hlim=63) / IPv6ExtHdrDestOpt() / UDP(sport=5000, dport=9) / data
    assert reassembled(out) == bytes(want)


def test_an_atomic_fragment_is_a_whole_packet(ct):
    # RFC 6946 4: offset 0 and no more fragments.
    atomic = pkt(IPv6(src=A, dst=R1) / IPv6ExtHdrFragment(id=5) / UDP(sport=5000, dport=53))
    flow = flow_of6(atomic)
    assert flow is not None and flow.fragment == WHOLE
    [out] = nat(ct, atomic)
    assert out == pkt(IPv6(src=EXT, dst=R1, hlim=63) / IPv6ExtHdrFragment(id=5) /
                      UDP(sport=5000, dport=53))
    assert len(ct.fragments) == 0


def test_fragments_of_a_refused_datagram_are_dropped(ct):
    datagram = IPv6(src=R1, dst=EXT) / IPv6ExtHdrFragment(id=1) / UDP(sport=9, dport=5000) / \
        Raw(payload(2000))
    first, later = fragments(datagram, 1280)
    assert nat_packet6(later, ct, True, 0.0) == []
    assert nat_packet6(first, ct, True, 0.0) == NO_MAPPING
    assert nat_packet6(later, ct, True, 0.0) == NO_MAPPING


def test_fragments_of_a_udp_datagram_without_checksum_are_dropped(ct):
    datagram = IPv6(src=A, dst=R1) / IPv6ExtHdrFragment(id=3) / \
        UDP(sport=5000, dport=9, chksum=0) / Raw(payload(2000))
    first, later = fragments(datagram, 1280)
    assert nat_packet6(first, ct, False, 0.0) == UDP_ZERO_CHECKSUM
    assert nat_packet6(later, ct, False, 0.0) == UDP_ZERO_CHECKSUM
    assert len(ct) == 0


def test_never_completed_fragments_stay_bounded(ct):
    rng = random.Random(8200)
    for n in range(3000):
        piece = IPv6(src=R1, dst=EXT) / IPv6ExtHdrFragment(id=n, offset=rng.randrange(1, 100),
                                                           nh=17) / Raw(payload(800, n))
        assert nat_packet6(pkt(piece), ct, True, n * 0.01) == []
    assert len(ct.fragments) <= ct.fragments.max_datagrams
    assert ct.fragments.held_bytes <= ct.fragments.max_held_bytes
    ct.expire(1000.0)
    assert len(ct.fragments) == 0 and ct.fragments.held_bytes == 0


# --- making ICMPv6 errors ----------------------------------------------------------------------


def test_time_exceeded6_quotes_as_much_as_fits_in_1280_bytes():
    bad = pkt(IPv6(src=A, dst=R1, hlim=1) / UDP(sport=5000, dport=53) / Raw(payload(2000)))
    error = time_exceeded6(bad, addr(GW))
    assert error is not None
    # Back to the sender's MAC from the router's; the IPv6 packet exactly 1280 bytes.
    want = Ether(src=ROUTER_MAC, dst=GUEST_MAC) / IPv6(src=GW, dst=A, hlim=64) / \
        ICMPv6TimeExceeded(code=0) / Raw(bad[L3:L3 + 1232])
    assert error == wrap(bytes(want))
    assert len(error) - L3 == 1280
    assert_checksum_verifies(error)


def test_a_short_packet_is_quoted_whole_without_ethernet_padding():
    small = bytearray(pkt(IPv6(src=A, dst=R1) / UDP(sport=1, dport=2)))
    padded = bytes(small) + bytes(20)  # Ethernet padding is not the IPv6 packet's
    error = unreachable6(padded, addr(GW), 4)
    assert error is not None
    parsed = Ether(error[10:])
    assert (parsed[ICMPv6DestUnreach].type, parsed[ICMPv6DestUnreach].code) == (1, 4)
    assert bytes(parsed[ICMPv6DestUnreach].payload) == bytes(small[L3:])


def test_packet_too_big6_carries_the_mtu_and_admin_prohibited6():
    big = pkt(IPv6(src=A, dst=R1) / TCP(sport=1, dport=2, flags="S") / Raw(payload(1500)))
    error = packet_too_big6(big, addr(GW), 1400)
    assert error is not None
    parsed = Ether(error[10:])
    assert (parsed[ICMPv6PacketTooBig].type, parsed[ICMPv6PacketTooBig].mtu) == (2, 1400)
    assert error == wrap(bytes(Ether(error[10:])))  # scapy agrees with the checksum
    assert_checksum_verifies(error)
    refused = admin_prohibited6(big, addr(GW))
    assert refused is not None
    assert (Ether(refused[10:])[ICMPv6DestUnreach].code) == 1
    problem = icmp6_error(big, 4, 0, addr(GW), 6)
    assert problem is not None and Ether(problem[10:])[ICMPv6ParamProblem].ptr == 6


def test_an_offloaded_packet_is_finished_before_it_is_quoted():
    partial = offload(IPv6(src=A, dst=R1) / UDP(sport=1, dport=2) / Raw(b"data"))
    error = unreachable6(partial, addr(GW), 4)
    assert error is not None and error[:10] == NO_OFFLOAD
    quoted = bytes(Ether(error[10:])[ICMPv6DestUnreach].payload)
    assert quoted == bytes(IPv6(src=A, dst=R1) / UDP(sport=1, dport=2) / Raw(b"data"))
    gso = offload(IPv6(src=A, dst=R1) / TCP(sport=1, dport=2, flags="PA") / Raw(payload(4000)),
                  GSO_TCPV6, 1000)
    error = packet_too_big6(gso, addr(GW), 1280)
    assert error is not None
    quoted = bytes(Ether(error[10:])[ICMPv6PacketTooBig].payload)
    assert quoted == to_plain_frames(gso)[0][14:]  # the first segment, checksummed


@pytest.mark.parametrize("packet", [
    pkt(IPv6(src=A, dst=R1) / ICMPv6DestUnreach() / IPv6(src=R1, dst=A) / UDP()),  # an error
    pkt(IPv6(src=A, dst=R1) / ICMPv6PacketTooBig() / IPv6(src=R1, dst=A) / UDP()),
    pkt(IPv6(src=GW, dst=A, hlim=255) / ICMPv6ND_Redirect(tgt=R1, dst=HOP)),  # a redirect
    pkt(IPv6(src=A, dst="ff02::1") / UDP()),  # to a multicast address
    pkt(IPv6(src=A, dst=R1) / UDP(), dst="33:33:00:00:00:01"),  # link-layer multicast
    pkt(IPv6(src=A, dst=R1) / UDP(), dst="ff:ff:ff:ff:ff:ff"),  # link-layer broadcast
    pkt(IPv6(src="::", dst=R1) / UDP()),  # not one node
    pkt(IPv6(src="ff02::1", dst=R1) / UDP()),
    pkt(IPv6(src="::1", dst=R1) / UDP()),
    pkt(IP(src="10.0.0.1", dst="10.0.0.2") / UDP()),
], ids=["error", "error-ptb", "redirect", "multicast", "multicast-mac", "broadcast-mac",
        "unspecified", "multicast-source", "loopback", "ipv4"])
def test_no_icmpv6_error_where_rfc_4443_forbids_one(packet):
    assert icmp6_error(packet, 1, 4, addr(GW)) is None
    assert time_exceeded6(packet, addr(GW)) is None


def test_packet_too_big_about_multicast_is_allowed_with_the_routers_mac():
    # RFC 4443 2.4(e.3) exceptions: packet too big, parameter problem code 2.
    group = pkt(IPv6(src=A, dst="ff0e::1") / UDP(sport=1, dport=2), dst="33:33:00:00:00:01")
    assert packet_too_big6(group, addr(GW), 1280) is None  # no unicast MAC to send from
    error = icmp6_error(group, 2, 0, addr(GW), 1280, mac=bytes.fromhex("525400000001"))
    assert error is not None
    parsed = Ether(error[10:])
    assert (parsed.src, parsed.dst, parsed[IPv6].dst) == (ROUTER_MAC, GUEST_MAC, A)
    assert icmp6_error(group, 4, 2, addr(GW), mac=bytes.fromhex("525400000001")) is not None
    assert icmp6_error(group, 4, 0, addr(GW), mac=bytes.fromhex("525400000001")) is None
    assert icmp6_error(group, 1, 4, addr(GW), mac=bytes.fromhex("525400000001")) is None


def test_an_error_about_a_later_fragment_of_icmpv6_is_allowed():
    # Its first bytes are data, not an ICMPv6 type: nothing says it is an error.
    later = pkt(IPv6(src=A, dst=R1) / IPv6ExtHdrFragment(offset=100, nh=58) / Raw(bytes([1]) +
                                                                                  bytes(15)))
    assert time_exceeded6(later, addr(GW)) is not None


# --- bad input: MalformedPacket and nothing else -----------------------------------------------


def raw6(header: bytes, rest: bytes = b"") -> bytes:
    return wrap(bytes(Ether(src=GUEST_MAC, dst=ROUTER_MAC, type=0x86DD)) + header + rest)


def ip6_header(length: int, nh: int, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, length, nh, hlim, addr(A), addr(R1))


BAD = {
    "runt": wrap(b"\x01" * 10),
    "header-truncated": raw6(ip6_header(8, 17)[:30]),
    "not-version-6": wrap(bytes(Ether(type=0x86DD)) + b"\x40" + bytes(39)),
    "length-beyond": raw6(ip6_header(100, 17), bytes(8)),
    "extension-beyond": raw6(ip6_header(8, 60), bytes([17, 4]) + bytes(6)),
    "routing-type-0": pkt(IPv6(src=A, dst=R1) / IPv6ExtHdrRouting(type=0, addresses=[HOP]) /
                          UDP()),
    "fragment-beyond-65535": raw6(ip6_header(16, 44),
                                  struct.pack("!BxHI", 17, 0xFFF8, 1) + bytes(8)),
    "fragment-not-multiple-of-8": raw6(ip6_header(8 + 11, 44),
                                       struct.pack("!BxHI", 17, 8 | 1, 1) + bytes(11)),
    "tiny-first-fragment": raw6(ip6_header(8 + 16, 44),
                                struct.pack("!BxHI", 6, 1, 1) + bytes(16)),
    "tcp-fragment-at-offset-8": raw6(ip6_header(8 + 16, 44),
                                     struct.pack("!BxHI", 6, 8, 1) + bytes(16)),
    "offloaded-fragment": encode_header(FLAG_NEEDS_CSUM, 0, 0, 0, 62, 6) + raw6(
        ip6_header(8 + 16, 44), struct.pack("!BxHI", 17, 1, 1) + bytes(16))[10:],
    "tcp-data-offset-below-5": pkt(IPv6(src=A, dst=R1) / TCP(dataofs=4)),
    "tcp-data-offset-beyond": pkt(IPv6(src=A, dst=R1) / TCP(dataofs=15)),
    "tcp-syn-fin": pkt(IPv6(src=A, dst=R1) / TCP(flags="SF")),
    "tcp-no-flags": pkt(IPv6(src=A, dst=R1) / TCP(flags="")),
    "udp-length-below-8": pkt(IPv6(src=A, dst=R1) / UDP(len=7)),
    "udp-length-beyond": pkt(IPv6(src=A, dst=R1) / UDP(len=100)),
    "icmpv6-truncated": raw6(ip6_header(4, 58), bytes([128, 0, 0, 0])),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_malformed(ct, name):
    with pytest.raises(MalformedPacket):
        nat_packet6(BAD[name], ct, False, 0.0)
    with pytest.raises(MalformedPacket):
        flow_of6(BAD[name])


SEEDS = [
    pkt(IPv6(src=A, dst=R1) / TCP(sport=40000, dport=80, flags="S") / Raw(b"x" * 20)),
    pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=53) / Raw(b"query")),
    pkt(IPv6(src=A, dst=R1) / ICMPv6EchoRequest(id=3, data=b"ping")),
    pkt(IPv6(src=R1, dst=EXT) / UDP(sport=53, dport=5000) / Raw(b"answer")),
    pkt(IPv6(src=HOP, dst=EXT) / ICMPv6DestUnreach(code=4) / IPv6(src=EXT, dst=R1) /
        UDP(sport=5000, dport=53)),
    pkt(IPv6(src=A, dst=R1) / ICMPv6TimeExceeded() / IPv6(src=R1, dst=A) /
        ICMPv6EchoReply(id=3)),
    pkt(IPv6(src=A, dst=R1) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2)),
    fragments(IPv6(src=R1, dst=EXT) / IPv6ExtHdrFragment(id=9) / UDP(sport=53, dport=5000) /
              Raw(bytes(100)), 96)[1],
    offload(IPv6(src=A, dst=R1) / TCP(sport=40000, dport=80, flags="A") / Raw(bytes(50))),
]


def _all_calls(data: bytes, ct: Conntrack, from_outside: bool, now: float):
    return [(nat_packet6, (data, ct, from_outside, now)),
            (translate_icmp6_error, (data, ct, True)),
            (icmp6_error, (data, 1, 4, addr(GW))),
            (packet_too_big6, (data, addr(GW), 1280)),
            (is_icmp6_error, (data,)),
            (flow_of6, (data,))]


def test_fuzz_raises_only_malformed_packet():
    rng = random.Random(20240601)
    ct = Conntrack(addr(EXT), max_entries=500)
    for seed in SEEDS:
        nat_packet6(seed, ct, False, 0.0)
    outcomes: Counter[tuple[str, str]] = Counter()
    for n in range(4000):
        packet = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randrange(1, 4)):
            choice = rng.random()
            if choice < 0.6:
                if packet:
                    packet[rng.randrange(len(packet))] = rng.randrange(256)
            elif choice < 0.8:
                del packet[rng.randrange(len(packet) + 1):]
            else:
                packet += rng.randbytes(rng.randrange(1, 40))
        for function, args in _all_calls(bytes(packet), ct, rng.random() < 0.5, n * 0.1):
            try:
                result = function(*args)
                outcomes[function.__name__, "drop" if isinstance(result, Drop) else "ok"] += 1
            except MalformedPacket:
                outcomes[function.__name__, "malformed"] += 1
    # Mutations reach every outcome: translated, dropped, refused as malformed.
    assert min(outcomes["nat_packet6", kind] for kind in ("ok", "drop", "malformed")) > 100
    ct.expire(10000.0)
    assert len(ct) == 0


@settings(max_examples=300, deadline=None)
@given(header=st.sampled_from(SEEDS), tail=st.binary(max_size=200), cut=st.integers(0, 120),
       from_outside=st.booleans())
def test_random_bytes_raise_only_malformed_packet(header, tail, cut, from_outside):
    ct = Conntrack(addr(EXT))
    for data in (header[:cut] + tail, header[:L3] + tail, tail):
        for function, args in _all_calls(data, ct, from_outside, 0.0):
            try:
                function(*args)
            except MalformedPacket:
                pass


def test_a_guest_over_its_quota_gets_icmpv6_1_1():
    # conntrack Rule 9 through NAT66: the answer a full table gets, ICMPv6 1/1.
    ct = Conntrack(addr(EXT), max_entries=8, max_per_guest=1)
    nat(ct, pkt(IPv6(src=A, dst=R1) / UDP(sport=5000, dport=2)))
    nat(ct, pkt(IPv6(src=R1, dst=EXT) / UDP(sport=2, dport=5000)), True)  # replied: kept
    refused = nat_packet6(pkt(IPv6(src=A, dst=R1) / UDP(sport=5001, dport=2)), ct, False, 0.0)
    assert refused == Drop("guest-quota", (1, 1))
    assert ct.stats["drop:guest-quota"] == 1
    assert not isinstance(nat_packet6(pkt(IPv6(src=B, dst=R1) / UDP(sport=5001, dport=2)), ct,
                                      False, 0.0), Drop), "another guest is unaffected"
