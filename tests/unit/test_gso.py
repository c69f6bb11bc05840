"""Software GSO and checksums: super-frames built with scapy, every output checked by scapy."""

import random

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment, in4_pseudoheader
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, in6_pseudoheader
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from nat.reassembly import Reassembly
from wire.checksum import internet_checksum
from wire.errors import MalformedPacket
from wire.gso import fragment_ipv4, to_plain_frames
from wire.vnet import (
    FLAG_DATA_VALID,
    FLAG_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    encode_header,
    wrap,
)

MACS = {"src": "52:54:00:00:00:01", "dst": "52:54:00:00:00:02"}
V4 = {"src": "192.168.122.10", "dst": "93.184.216.34"}
V6 = {"src": "fd00::10", "dst": "2001:db8::34"}
FIN, PSH, CWR = 0x01, 0x08, 0x80


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def l4_layer(pkt: Packet) -> Packet:
    return pkt[TCP] if TCP in pkt else pkt[UDP]


def partial_checksum(pkt: Packet) -> int:
    """What Linux leaves in the L4 checksum field with NEEDS_CSUM: the folded pseudo header sum."""
    l4 = l4_layer(pkt)
    proto = 6 if TCP in pkt else 17
    length = len(bytes(l4))
    if IP in pkt:
        pseudo = in4_pseudoheader(proto, pkt[IP], length)
    else:
        pseudo = bytes(in6_pseudoheader(proto, pkt[IPv6], length))
    return ~checksum(pseudo) & 0xFFFF


def offload(pkt: Packet, gso_type: int = GSO_NONE, gso_size: int = 0) -> bytes:
    """``pkt`` as a guest hands it over: vnet header, NEEDS_CSUM, partial checksum in place."""
    frame = bytearray(bytes(pkt))
    l4 = len(frame) - len(bytes(l4_layer(pkt)))
    csum_offset = 16 if TCP in pkt else 6
    frame[l4 + csum_offset : l4 + csum_offset + 2] = partial_checksum(pkt).to_bytes(2, "big")
    hdr_len = len(frame) - len(bytes(l4_layer(pkt).payload))
    header = encode_header(FLAG_NEEDS_CSUM, gso_type, hdr_len, gso_size, l4, csum_offset)
    return header + bytes(frame)


def rebuilt(frame: bytes, layers: tuple[type[Packet], ...] = (IP, IPv6, TCP, UDP)) -> bytes:
    """``frame`` as scapy builds it after forgetting the lengths and checksums of ``layers``."""
    fields = {IP: ("len", "chksum"), IPv6: ("plen",), TCP: ("chksum",), UDP: ("len", "chksum")}
    pkt = Ether(frame)
    for layer in layers:
        if layer in pkt:
            for name in fields[layer]:
                delattr(pkt[layer], name)
    return bytes(pkt)


def check_tcp_segments(original: Packet, frames: list[bytes], gso_size: int) -> None:
    """Checksums and lengths right, seq consecutive, flags as in tcp_gso_segment, data intact."""
    assert frames
    segments = [Ether(frame) for frame in frames]
    seq = original[TCP].seq
    flags = int(original[TCP].flags)
    for n, (frame, seg) in enumerate(zip(frames, segments, strict=True)):
        last = n == len(frames) - 1
        assert rebuilt(frame) == frame  # every length and checksum is what scapy computes
        data = bytes(seg[TCP].payload)
        assert len(data) == gso_size if not last else 0 < len(data) <= gso_size
        assert seg[TCP].seq == seq
        seq = (seq + len(data)) % 2**32
        want = flags & ~(CWR if n else 0) & ~(0 if last else FIN | PSH)
        assert int(seg[TCP].flags) == want
        assert seg[TCP].options == original[TCP].options
        assert (seg[TCP].sport, seg[TCP].dport, seg[TCP].ack) == (
            original[TCP].sport,
            original[TCP].dport,
            original[TCP].ack,
        )
        if IP in original:
            assert seg[IP].id == (original[IP].id + n) & 0xFFFF  # a new id per segment
            assert seg[IP].flags == original[IP].flags
    joined = b"".join(bytes(seg[TCP].payload) for seg in segments)
    assert joined == bytes(original[TCP].payload)


# --- internet_checksum ------------------------------------------------------------------------


def reference_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 section 4.1, word by word."""
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_checksum_rfc1071_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_checksum_matches_reference_on_random_and_edge_data():
    rng = random.Random(1071)
    samples = [b"", b"\0", b"\xff", bytes(64), bytes(65), b"\xff" * 64, b"\xff" * 65]
    samples += [rng.randbytes(n) for n in list(range(1, 80)) + [1499, 1500, 65535]]
    samples += [b"\xff\xff" + bytes(10), bytes(9) + b"\x01"]
    for data in samples:
        for initial in (0, 1, 0xFFFF, 0x1FFFE, rng.randrange(1 << 40)):
            assert internet_checksum(data, initial) == reference_checksum(data, initial), data
            assert internet_checksum(memoryview(data), initial) == reference_checksum(data, initial)
        assert internet_checksum(data) == checksum(data)  # scapy agrees


def test_checksum_zero_versus_ffff():
    assert internet_checksum(b"") == 0xFFFF  # sum +0
    assert internet_checksum(bytes(8)) == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0  # sum -0 (0xFFFF): its complement is 0
    assert internet_checksum(b"\x80\x00\x7f\xff") == 0  # 0x8000 + 0x7FFF = 0xFFFF


# --- passthrough and NEEDS_CSUM ---------------------------------------------------------------


def test_plain_frame_passes_through_unchanged():
    frame = bytes(Ether(**MACS) / IP(**V4) / UDP() / Raw(b"hello"))
    assert to_plain_frames(wrap(frame)) == [frame]
    assert to_plain_frames(encode_header(flags=FLAG_DATA_VALID) + frame) == [frame]


@pytest.mark.parametrize(
    "pkt",
    [
        Ether(**MACS) / IP(**V4) / TCP(sport=40000, dport=80, flags="PA") / Raw(payload(999)),
        Ether(**MACS) / IP(**V4) / UDP(sport=5353, dport=53) / Raw(payload(100)),
        Ether(**MACS) / IPv6(**V6) / TCP(sport=40000, dport=443) / Raw(payload(1001)),
        Ether(**MACS) / Dot1Q(vlan=7) / IPv6(**V6) / UDP(sport=1, dport=2) / Raw(payload(3)),
        Ether(**MACS) / IP(**V4) / TCP(sport=1, dport=2, flags="A"),
    ],
    ids=["tcp4", "udp4", "tcp6-odd", "udp6-vlan", "tcp4-no-payload"],
)
def test_needs_csum_is_finished(pkt):
    # scapy computes the correct checksum; the guest's frame carries only the pseudo header sum.
    packet = offload(pkt)
    assert packet[10:] != bytes(pkt)
    assert to_plain_frames(packet) == [bytes(pkt)]


def test_udp_checksum_of_zero_is_sent_as_ffff():
    # Choose the last payload word so the UDP checksum comes out as 0: RFC 768 says send 0xFFFF.
    base = Ether(**MACS) / IP(**V4) / UDP(sport=1234, dport=5678) / Raw(payload(20) + bytes(2))
    filler = Ether(bytes(base))[UDP].chksum  # adding it into the sum makes the sum 0xFFFF
    pkt = (
        Ether(**MACS)
        / IP(**V4)
        / UDP(sport=1234, dport=5678)
        / Raw(payload(20) + filler.to_bytes(2, "big"))
    )
    (frame,) = to_plain_frames(offload(pkt))
    out = Ether(frame)
    assert out[UDP].chksum == 0xFFFF
    udp = bytes(out[UDP])
    assert checksum(in4_pseudoheader(17, out[IP], len(udp)) + udp) == 0  # verifies at a receiver
    assert frame == bytes(pkt)  # scapy does the same mapping


# --- TSO --------------------------------------------------------------------------------------


def test_tso_ipv4_64k_with_options_and_wrapping_seq_and_id():
    pkt = (
        Ether(**MACS)
        / IP(**V4, id=0xFFFE, flags="DF")
        / TCP(
            sport=40000,
            dport=80,
            seq=2**32 - 3000,
            ack=77,
            flags="FPAC",
            options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))],
        )
        / Raw(payload(65535 - 20 - 32 - 14))
    )
    frames = to_plain_frames(offload(pkt, GSO_TCPV4, 1448))
    assert len(frames) == -(-len(pkt[Raw]) // 1448)
    check_tcp_segments(pkt, frames, 1448)
    assert Ether(frames[2])[IP].id == 0  # the id wraps
    assert all(len(f) <= 14 + 20 + 32 + 1448 for f in frames)


def test_tso_ipv6_with_ecn_bit():
    pkt = (
        Ether(**MACS)
        / IPv6(**V6, tc=2)
        / TCP(sport=40000, dport=443, seq=1000, flags="FPAEC")
        / Raw(payload(10000, seed=2))
    )
    frames = to_plain_frames(offload(pkt, GSO_TCPV6 | GSO_ECN, 1428))
    assert len(frames) == 8
    check_tcp_segments(pkt, frames, 1428)


def test_tso_double_vlan_tagged():
    pkt = (
        Ether(**MACS)
        / Dot1AD(vlan=100)
        / Dot1Q(vlan=200)
        / IP(**V4, id=5)
        / TCP(sport=1, dport=2, flags="A")
        / Raw(payload(3001, seed=3))
    )
    frames = to_plain_frames(offload(pkt, GSO_TCPV4, 1000))
    assert len(frames) == 4
    check_tcp_segments(pkt, frames, 1000)
    assert all(Ether(f)[Dot1Q].vlan == 200 and Ether(f)[Dot1AD].vlan == 100 for f in frames)


def test_tso_fitting_in_one_segment_keeps_all_flags():
    pkt = Ether(**MACS) / IP(**V4) / TCP(flags="FPAC") / Raw(payload(100))
    frames = to_plain_frames(offload(pkt, GSO_TCPV4, 1448))
    assert frames == [bytes(pkt)]


def test_tso_without_payload_is_one_segment():
    pkt = Ether(**MACS) / IPv6(**V6) / TCP(flags="FA")
    assert to_plain_frames(offload(pkt, GSO_TCPV6, 1448)) == [bytes(pkt)]


def test_tso_ignores_hdr_len_and_partial_checksum():
    pkt = Ether(**MACS) / IP(**V4) / TCP(options=[("MSS", 1460)]) / Raw(payload(5000))
    good = offload(pkt, GSO_TCPV4, 1448)
    bogus = bytearray(good)
    bogus[2:4] = (7).to_bytes(2, "little")  # hdr_len: nonsense
    bogus[10 + 34 + 16 : 10 + 34 + 18] = b"\x12\x34"  # partial checksum: garbage
    assert to_plain_frames(bytes(bogus)) == to_plain_frames(good)
    check_tcp_segments(pkt, to_plain_frames(good), 1448)


# --- USO and UFO ------------------------------------------------------------------------------


@pytest.mark.parametrize("ip", [IP(**V4, id=100), IPv6(**V6)], ids=["ipv4", "ipv6"])
def test_uso_splits_into_datagrams(ip):
    pkt = Ether(**MACS) / ip / UDP(sport=4433, dport=443) / Raw(payload(4000, seed=4))
    frames = to_plain_frames(offload(pkt, GSO_UDP_L4, 1200))
    assert len(frames) == 4
    for n, frame in enumerate(frames):
        assert rebuilt(frame) == frame
        seg = Ether(frame)
        assert len(bytes(seg[UDP].payload)) == (1200 if n < 3 else 400)
        assert (seg[UDP].sport, seg[UDP].dport) == (4433, 443)
        if IP in seg:
            assert seg[IP].id == 100 + n
    assert b"".join(bytes(Ether(f)[UDP].payload) for f in frames) == bytes(pkt[Raw])


def test_ufo_fragments_ipv4():
    pkt = Ether(**MACS) / IP(**V4, id=4321) / UDP(sport=9, dport=9) / Raw(payload(5000, seed=5))
    frames = to_plain_frames(offload(pkt, GSO_UDP, 1484))  # rounded down to 1480 per fragment
    data = b""
    for n, frame in enumerate(frames):
        assert rebuilt(frame, (IP,)) == frame  # IP length and header checksum
        ip = Ether(frame)[IP]
        piece = frame[14 + ip.ihl * 4 : 14 + ip.len]
        assert ip.id == 4321
        assert ip.frag * 8 == len(data)  # RFC 791: offsets in 8-byte units
        more = n < len(frames) - 1
        assert bool(ip.flags.MF) == more
        assert len(piece) == 1480 if more else len(piece) <= 1480
        data += piece
    assert len(frames) == 4
    # After reassembly the UDP datagram is whole and its checksum verifies.
    assert checksum(in4_pseudoheader(17, IP(**V4), len(data)) + data) == 0
    assert UDP(data).len == len(data) and bytes(UDP(data).payload) == bytes(pkt[Raw])
    assert data == bytes(pkt[UDP])


def test_a_fragment_cut_again_keeps_its_place_and_its_mf():
    """RFC 791 3.2: a router with a smaller MTU fragments fragments; the pieces of the first
    keep MF, those of the last start at its offset and only the very last clears MF."""
    pkt = IP(**V4, id=77) / UDP(sport=9, dport=9) / Raw(payload(5000, seed=6))
    firsts = [bytes(f) for f in fragment(pkt, fragsize=2960)]
    assert len(firsts) == 2
    pieces = [p for f in firsts for p in fragment_ipv4(bytes(Ether(**MACS)) + f, 14, 34, 1000)]
    fields = [(IP(p[14:]).frag * 8, str(IP(p[14:]).flags)) for p in pieces]
    assert fields == [(0, "MF"), (1000, "MF"), (2000, "MF"), (2960, "MF"), (3960, "MF"),
                      (4960, "")]
    r = Reassembly()
    wholes = [w for w in (r.add(p, 0.0, 14) for p in pieces) if w is not None]
    assert [IP(w[14:])[UDP].payload.load for w in wholes] == [bytes(pkt[Raw])]


def test_ufo_that_fits_is_sent_whole_with_df_kept():
    pkt = Ether(**MACS) / IP(**V4, flags="DF") / UDP() / Raw(payload(500))
    assert to_plain_frames(offload(pkt, GSO_UDP, 1480)) == [bytes(pkt)]


# --- malformed input --------------------------------------------------------------------------

TCP4 = Ether(**MACS) / IP(**V4) / TCP() / Raw(payload(3000))
TCP4_FRAME = bytes(TCP4)
TSO4 = encode_header(0, GSO_TCPV4, 0, 1448)


def with_byte(frame: bytes, at: int, value: int) -> bytes:
    return frame[:at] + bytes([value]) + frame[at + 1 :]


MALFORMED = {
    "empty": b"",
    "only-vnet-header": encode_header(),
    "short-ethernet": encode_header() + bytes(13),
    "csum-beyond-frame": encode_header(FLAG_NEEDS_CSUM, 0, 0, 0, len(TCP4_FRAME) - 1, 0)
    + TCP4_FRAME,
    "csum-offset-beyond": encode_header(FLAG_NEEDS_CSUM, 0, 0, 0, 34, 0xFFFF) + TCP4_FRAME,
    "gso-size-0": encode_header(FLAG_NEEDS_CSUM, GSO_TCPV4, 54, 0, 34, 16) + TCP4_FRAME,
    "unknown-gso-type": encode_header(0, 2, 54, 1448) + TCP4_FRAME,
    "unknown-gso-type-ecn": encode_header(0, 6 | GSO_ECN, 54, 1448) + TCP4_FRAME,
    "gso-on-arp": TSO4 + bytes(Ether(**MACS) / ARP()),
    "tcpv4-on-udp": offload(Ether(**MACS) / IP(**V4) / UDP() / Raw(payload(3000)), GSO_TCPV4, 1448),
    "uso-on-tcp": offload(TCP4, GSO_UDP_L4, 1448),
    "tcpv6-on-ipv4": offload(TCP4, GSO_TCPV6, 1448),
    "tcpv4-on-ipv6": offload(Ether(**MACS) / IPv6(**V6) / TCP() / Raw(b"x" * 3000), GSO_TCPV4, 9),
    "ufo-on-ipv6": offload(Ether(**MACS) / IPv6(**V6) / UDP() / Raw(b"x" * 3000), GSO_UDP, 1280),
    "ufo-size-below-8": offload(Ether(**MACS) / IP(**V4) / UDP() / Raw(b"x" * 30), GSO_UDP, 7),
    "ipv6-extension-header": offload(
        Ether(**MACS) / IPv6(**V6) / IPv6ExtHdrHopByHop() / TCP() / Raw(b"x" * 3000), GSO_TCPV6, 9
    ),
    "ihl-below-5": TSO4 + with_byte(TCP4_FRAME, 14, 0x44),
    "ihl-beyond-frame": TSO4 + with_byte(TCP4_FRAME, 14, 0x4F)[:70],
    "version-not-4": TSO4 + with_byte(TCP4_FRAME, 14, 0x65),
    "ipv4-fragment": TSO4 + with_byte(TCP4_FRAME, 20, 0x20),
    "tcp-offset-below-5": TSO4 + with_byte(TCP4_FRAME, 46, 0x40),
    "tcp-offset-beyond": TSO4 + with_byte(TCP4_FRAME, 46, 0xF0)[:80],
    "truncated-tcp": TSO4 + TCP4_FRAME[:50],
    "truncated-ipv4": TSO4 + TCP4_FRAME[:30],
    "truncated-vlan": TSO4 + bytes(Ether(**MACS) / Dot1Q())[:15],
    "truncated-udp": encode_header(0, GSO_UDP_L4, 0, 1448) + bytes(Ether() / IP(proto=17))[:40],
    "over-64k": encode_header() + bytes(65536),
}


@pytest.mark.parametrize("packet", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raises_malformed_packet(packet):
    with pytest.raises(MalformedPacket):
        to_plain_frames(packet)


def fuzz_templates() -> list[bytes]:
    small = payload(150, seed=6)
    return [
        bytes(Ether(**MACS) / IP(**V4) / TCP(flags="FPAC") / Raw(small)),
        bytes(Ether(**MACS) / IPv6(**V6) / TCP(options=[("MSS", 1)]) / Raw(small)),
        bytes(Ether(**MACS) / IP(**V4) / UDP() / Raw(small)),
        bytes(Ether(**MACS) / IPv6(**V6) / UDP() / Raw(small)),
        bytes(Ether(**MACS) / Dot1Q() / Dot1AD() / IP(**V4) / TCP() / Raw(small)),
        bytes(Ether(**MACS) / IP(**V4, ihl=6, options=b"\x01\x01\x01\x00") / UDP() / Raw(small)),
    ]


def test_fuzz_raises_only_malformed_packet():
    """Random headers on random and mutated frames: frames or MalformedPacket, nothing else."""
    rng = random.Random(20240)
    templates = fuzz_templates()
    gso_types = [0, 1, 2, 3, 4, 5, 6, 0x80, 0x81, 0x83, 0x84, 0x85, 0xFF]
    outcomes = {"frames": 0, "malformed": 0}
    for _ in range(20_000):
        if rng.random() < 0.3:
            frame = rng.randbytes(rng.randrange(0, 120))
        else:
            frame = bytearray(rng.choice(templates))
            for _ in range(rng.randrange(0, 4)):  # mostly in the headers
                frame[rng.randrange(rng.choice([80, len(frame)]))] = rng.randrange(256)
            if rng.random() < 0.2:
                frame = frame[: rng.randrange(len(frame) + 1)]
            frame = bytes(frame)
        limit = len(frame) + 8
        header = encode_header(
            flags=rng.randrange(4),
            gso_type=rng.choice(gso_types),
            hdr_len=rng.randrange(0x10000),
            gso_size=rng.choice([0, 1, 7, 8, 9, 64, 1448, rng.randrange(0x10000)]),
            csum_start=rng.choice([34, 38, 54, rng.randrange(limit), rng.randrange(0x10000)]),
            csum_offset=rng.choice([6, 16, rng.randrange(limit), rng.randrange(0x10000)]),
        )
        packet = header + frame
        if rng.random() < 0.1:
            packet = packet[: rng.randrange(40)]
        try:
            frames = to_plain_frames(packet)
        except MalformedPacket:
            outcomes["malformed"] += 1
            continue
        outcomes["frames"] += 1
        assert frames and all(type(f) is bytes and len(f) <= len(packet) - 10 for f in frames)
    assert outcomes["frames"] > 1000 and outcomes["malformed"] > 1000  # both paths exercised
