"""The TCP splice core: a guest's TCP on a host socket, driven with a hand-advanced clock.

Guest segments are built with wire.packets / nat.tcp_server; the core's packets are read back with
a local parser that checks every header (and every checksum it can) on the way.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import pytest

from nat import tcp_splice
from nat.tcp_seq import seq_le, seq_lt, seq_sub
from nat.tcp_splice import Splice
from wire.checksum import internet_checksum, pseudo_header_sum
from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.packets import ETH_P_IP, PROTO_TCP, encode_ethernet, encode_ipv4
from wire.tcp import ACK, FIN, PSH, RST, SYN, encode_tcp
from wire.vnet import FLAG_NEEDS_CSUM, GSO_TCPV4, NO_OFFLOAD, VNET_HDR, encode_header

GUEST, REMOTE = bytes([192, 168, 122, 10]), bytes([93, 184, 216, 34])
GPORT, RPORT = 40000, 80
GISN, ISN = 5000, 90000  # the guest's and our initial sequence numbers
NOW = 100.0
MSS_1460 = struct.pack("!BBH", 2, 4, 1460)
WS7 = bytes([1, 3, 3, 7])
TCP_HDR = struct.Struct("!HHIIBBHHH")


def data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def guest(seq: int, ack: int = 0, flags: int = ACK, payload: bytes = b"", options: bytes = b"",
          window: int = 65535, padding: bytes = b"") -> bytes:
    """A packet from the guest: no-offload virtio-net header, Ethernet, IPv4, TCP."""
    tcp = encode_tcp(GUEST, REMOTE, GPORT, RPORT, seq, ack, flags, payload, options, window)
    ip = encode_ipv4(GUEST, REMOTE, PROTO_TCP, tcp)
    return NO_OFFLOAD + encode_ethernet(bytes(6), bytes(6), ETH_P_IP, ip) + padding


@dataclass
class Out:
    """One packet the core sent to the guest, checked and taken apart."""

    vnet: tuple[int, ...]
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes


def parse(packet: bytes) -> Out:
    """Check a packet for the guest as the spec wants it, and decode it."""
    vnet, frame = VNET_HDR.unpack_from(packet), packet[10:]
    assert frame[:14] == bytes(12) + b"\x08\x00"  # zero MACs (the router fills them), IPv4
    ip, tcp = frame[14:34], frame[34:]
    assert ip[0] == 0x45 and ip[4:10] == b"\0\0\x40\0\x40\x06"  # IHL 5, id 0, DF, TTL 64, TCP
    assert (ip[12:16], ip[16:20]) == (REMOTE, GUEST)
    assert internet_checksum(ip) == 0 and int.from_bytes(ip[2:4], "big") == len(frame) - 14
    sport, dport, seq, ack, off, flags, window, csum, _ = TCP_HDR.unpack_from(tcp)
    assert (sport, dport) == (RPORT, GPORT)
    hlen = (off >> 4) * 4
    pseudo = pseudo_header_sum(REMOTE, GUEST, PROTO_TCP, len(tcp))
    if vnet == (0,) * 6:
        assert internet_checksum(pseudo + tcp) == 0  # a full checksum
    else:  # GSO super-frame with a CHECKSUM_PARTIAL checksum
        assert vnet[:3] == (FLAG_NEEDS_CSUM, GSO_TCPV4, 34 + hlen) and vnet[4:] == (34, 16)
        assert csum == ~internet_checksum(pseudo) & 0xFFFF
        assert vnet[3] < len(tcp) - hlen
    return Out(vnet, seq, ack, flags, window, tcp[20:hlen], tcp[hlen:])


def outputs(splice: Splice) -> list[Out]:
    return [parse(p) for p in splice.drain()]


def one(splice: Splice) -> Out:
    (out,) = outputs(splice)
    return out


def tick(splice: Splice) -> float:
    """Advance the clock to the splice's next deadline and expire it; the new time."""
    deadline = splice.next_deadline()
    assert deadline is not None
    splice.expire(deadline)
    return deadline


@pytest.fixture
def our_isn(monkeypatch: pytest.MonkeyPatch):
    """Make our ISN predictable: ``our_isn(n)`` sets it (default ISN)."""

    def set_isn(n: int = ISN) -> None:
        monkeypatch.setattr(tcp_splice.secrets, "randbits", lambda bits: n)

    set_isn()
    return set_isn


def established(wscale: bool = True, window: int = 65535, gisn: int = GISN, isn: int = ISN,
                mss_option: bytes = MSS_1460, **kw: object) -> Splice:
    """An outbound splice through the handshake (needs the our_isn fixture for ``isn``)."""
    syn = guest(gisn, 0, SYN, options=mss_option + (WS7 if wscale else b""), window=64240)
    splice = Splice.outbound(syn, NOW, **kw)
    splice.host_connected(NOW)
    splice.drain()
    splice.from_guest(guest(gisn + 1, isn + 1, ACK, window=window), NOW)
    assert splice.state == "established" and splice.drain() == []
    return splice


# --- sequence arithmetic ----------------------------------------------------------------------


def test_sequence_numbers_compare_across_the_wrap():
    assert seq_lt(2**32 - 1, 0) and seq_lt(2**32 - 10, 5) and not seq_lt(5, 2**32 - 10)
    assert seq_le(7, 7) and not seq_lt(7, 7)
    assert seq_sub(3, 2**32 - 2) == 5


# --- opening ----------------------------------------------------------------------------------


def test_outbound_handshake_with_window_scale(our_isn):
    syn = guest(GISN, 0, SYN, options=MSS_1460 + WS7, window=64240)
    splice = Splice.outbound(syn, NOW)
    assert splice.state == "connecting" and splice.drain() == [] and splice.room() == 0
    assert splice.syn_packet == syn
    splice.from_guest(syn, NOW + 1)  # the guest retransmits its SYN while we connect: nothing
    assert splice.drain() == []
    splice.host_connected(NOW + 1.5)
    synack = one(splice)  # SYN-ACK: our MSS and, since the guest offered it, window scale 7
    assert (synack.seq, synack.ack, synack.flags) == (ISN, GISN + 1, SYN | ACK)
    assert synack.options == MSS_1460 + WS7 and synack.window == 65535  # SYN: never scaled
    assert splice.state == "syn-received" and splice.room() == 0
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK, window=502), NOW + 1.6)
    assert splice.state == "established" and splice.drain() == []
    assert splice.room() == 502 << 7  # the guest's window, scaled by its shift


def test_outbound_handshake_without_window_scale(our_isn):
    splice = Splice.outbound(guest(GISN, 0, SYN, options=MSS_1460), NOW, mss=8960)
    splice.host_connected(NOW)
    synack = one(splice)  # no WS in the guest's SYN: none in ours (RFC 7323 2.2)
    assert synack.options == struct.pack("!BBH", 2, 4, 8960)
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK, b"x" * 10, window=30000), NOW)
    assert one(splice).window == 65535  # unscaled and capped
    assert splice.room() == 30000 - 0


def test_lost_synack_is_sent_again_for_a_retransmitted_syn_and_on_rto(our_isn):
    syn = guest(GISN, 0, SYN, options=MSS_1460)
    splice = Splice.outbound(syn, NOW)
    splice.host_connected(NOW)
    first = splice.drain()
    splice.from_guest(syn, NOW + 0.5)
    assert splice.drain() == first
    assert splice.next_deadline() == NOW + 1.0  # handshake RTO 1 s
    splice.expire(NOW + 1.0)
    assert splice.drain() == first and splice.next_deadline() == NOW + 3.0


def test_refused_connect_answers_rst_ack(our_isn):
    splice = Splice.outbound(guest(GISN, 0, SYN), NOW)
    splice.host_refused(NOW)
    rst = one(splice)
    assert (rst.seq, rst.ack, rst.flags) == (0, GISN + 1, RST | ACK)
    assert splice.closed and splice.state == "closed" and splice.next_deadline() is None


def test_unreachable_leaves_the_icmp_error_to_the_adapter(our_isn):
    syn = guest(GISN, 0, SYN)
    splice = Splice.outbound(syn, NOW)
    splice.host_unreachable(1, NOW)
    assert splice.drain() == [] and splice.closed
    assert splice.icmp_unreachable == 1 and splice.syn_packet == syn


def test_guest_mss_defaults_to_536():
    splice = Splice.outbound(guest(GISN, 0, SYN), NOW)  # RFC 9293 3.7.1: no option, 536
    assert splice.send_mss == 536


def test_outbound_needs_a_syn():
    with pytest.raises(MalformedPacket):
        Splice.outbound(guest(GISN, 0, SYN | ACK), NOW)


# --- guest to host ----------------------------------------------------------------------------


def test_in_order_data_out_of_order_dropped_overlap_trimmed(our_isn):
    splice = established()
    stream = data(3000)
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK | PSH, stream[:1000]), NOW)
    ack = one(splice)  # every data segment is ACKed at once
    assert (ack.seq, ack.ack, ack.flags) == (ISN + 1, GISN + 1001, ACK)
    assert ack.window == ((1 << 20) - 1000) >> 7
    assert splice.to_host == stream[:1000]
    # Out of order (a gap at 1001..2000): dropped, and a duplicate ACK asks for the gap.
    splice.from_guest(guest(GISN + 2001, ISN + 1, ACK, stream[2000:3000]), NOW)
    assert one(splice).ack == GISN + 1001 and splice.to_host == stream[:1000]
    # A segment starting 500 bytes back: only its new half is taken.
    splice.from_guest(guest(GISN + 501, ISN + 1, ACK, stream[500:2000]), NOW)
    assert one(splice).ack == GISN + 2001 and splice.to_host == stream[:2000]
    # An old duplicate changes nothing but is ACKed.
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK, stream[:1000]), NOW)
    assert one(splice).ack == GISN + 2001 and splice.to_host == stream[:2000]
    assert splice.packets_from_guest == 6 and splice.bytes_from_guest == 4500


def test_ethernet_padding_is_not_data(our_isn):
    splice = established()
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK, b"hi", padding=bytes(16)), NOW)
    assert splice.to_host == b"hi"


def test_gso_superframe_from_the_guest_with_partial_checksum(our_isn):
    splice = established()
    payload = data(60000)
    packet = bytearray(guest(GISN + 1, ISN + 1, ACK | PSH, payload))
    packet[10 + 34 + 16:10 + 34 + 18] = b"\x12\x34"  # a partial checksum: not verified
    packet[:10] = encode_header(FLAG_NEEDS_CSUM, GSO_TCPV4, 54, 1460, 34, 16)
    splice.from_guest(bytes(packet), NOW)
    assert splice.to_host == payload and one(splice).ack == GISN + 60001


def test_window_shrinks_then_host_sent_sends_window_updates(our_isn):
    splice = established(wscale=False, buffer=16384)
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK, data(10000)), NOW)
    assert one(splice).window == 6384
    # 7000 more: only the 6384 bytes of the advertised window are taken.
    splice.from_guest(guest(GISN + 10001, ISN + 1, ACK, data(7000, 2)), NOW)
    full = one(splice)
    assert (full.ack, full.window, len(splice.to_host)) == (GISN + 16385, 0, 16384)
    splice.from_guest(guest(GISN + 16385, ISN + 1, ACK, b"z"), NOW)  # a zero-window probe
    assert one(splice).window == 0 and len(splice.to_host) == 16384
    splice.host_sent(1000, NOW)  # 1000 free: less than 2 MSS and a quarter: no update yet
    assert splice.drain() == []
    splice.host_sent(2000, NOW)  # 3000 free >= 2 * 1460: tell the guest
    update = one(splice)
    assert (update.seq, update.ack, update.window, update.flags) == (
        ISN + 1, GISN + 16385, 3000, ACK)
    splice.host_sent(500, NOW)  # 3500: still below a quarter, grew by less than 2 MSS
    assert splice.drain() == []
    splice.host_sent(1000, NOW)  # 4500 >= 16384 / 4
    assert one(splice).window == 4500
    splice.host_sent(5000, NOW)  # the window is no longer small: the next ACK will say it
    assert splice.drain() == []


def test_a_buffer_shrunk_by_the_adapter_narrows_windows_and_never_rewinds(our_isn):
    """The adapter's memory budget may shrink ``buffer`` below what the flow holds: the window
    goes to 0 (never negative), data beyond the room is cut off, RCV.NXT never moves back, and
    room() for host data follows the new size (each direction has its own buffer)."""
    splice = established(wscale=False, buffer=16384)
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK, data(10000)), NOW)
    assert one(splice).window == 6384
    splice.buffer = 4096  # now below the 10000 held
    splice.from_guest(guest(GISN + 10001, ISN + 1, ACK, data(3000, 2)), NOW)
    out = one(splice)
    assert (out.ack, out.window, len(splice.to_host)) == (GISN + 10001, 0, 10000)
    assert splice.room() == 4096 and splice.held() == 10000
    splice.host_sent(10000, NOW)
    splice.buffer = 16384
    splice.from_guest(guest(GISN + 10001, ISN + 1, ACK, data(3000, 2)), NOW)
    assert one(splice).ack == GISN + 13001 and splice.held() == 3000


# --- host to guest ----------------------------------------------------------------------------


def test_small_host_data_is_one_plain_segment(our_isn):
    splice = established()
    splice.host_data(b"hello", NOW)
    out = one(splice)
    assert out.vnet == (0,) * 6 and (out.seq, out.ack, out.flags) == (ISN + 1, GISN + 1, ACK | PSH)
    assert out.payload == b"hello" and splice.bytes_to_guest == 5
    assert splice.packets_to_guest == 2  # the SYN-ACK and this one


@pytest.mark.parametrize("mss_option,size", [(MSS_1460, 200000),
                                              (struct.pack("!BBH", 2, 4, 536), 70000)])
def test_large_host_data_becomes_gso_chunks_that_segment_cleanly(our_isn, mss_option, size):
    splice = established(mss_option=mss_option)
    mss = splice.send_mss
    payload = data(size)
    splice.host_data(payload, NOW)
    packets = splice.drain()
    chunk = (65535 - 54) // mss * mss
    assert len(packets) == -(-size // chunk)
    seq, joined = ISN + 1, b""
    for n, packet in enumerate(packets):
        out = parse(packet)
        assert out.vnet[3] == mss and out.seq == seq and len(out.payload) <= chunk
        assert out.flags == (ACK | PSH if n == len(packets) - 1 else ACK)
        for frame in to_plain_frames(packet):
            tcp = frame[34:]
            pseudo = pseudo_header_sum(REMOTE, GUEST, PROTO_TCP, len(tcp))
            assert internet_checksum(pseudo + tcp) == 0 and internet_checksum(frame[14:34]) == 0
            assert TCP_HDR.unpack_from(tcp)[2] == seq and len(tcp) - 20 <= mss
            seq += len(tcp) - 20
            joined += tcp[20:]
    assert joined == payload
    assert to_plain_frames(packets[-1])[-1][34 + 13] == ACK | PSH  # PSH on the burst's end


def test_our_packets_pass_scapy(our_isn):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    splice = Splice.outbound(guest(GISN, 0, SYN, options=MSS_1460 + WS7), NOW)
    splice.host_connected(NOW)
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK), NOW)
    splice.host_data(data(1000), NOW)
    splice.host_data(data(5000), NOW)
    packets = splice.drain()
    frames = [packets[0][10:], packets[1][10:]] + to_plain_frames(packets[2])
    for frame in frames:
        pkt = Ether(frame)
        del pkt[IP].chksum, pkt[TCP].chksum, pkt[IP].len
        assert bytes(pkt) == frame  # scapy computes the same lengths and checksums
    assert Ether(frames[0])[TCP].options == [("MSS", 1460), ("NOP", None), ("WScale", 7)]


def test_room_follows_the_scaled_guest_window_and_the_buffer(our_isn):
    splice = established(window=1000)  # 1000 << 7 = 128000 bytes
    assert splice.room() == 128000
    splice.host_data(data(50000), NOW)
    assert splice.room() == 78000
    splice.host_data(data(100000), NOW)  # only room() is taken
    assert splice.room() == 0 and splice.snd_nxt == ISN + 1 + 128000
    splice.drain()
    splice.from_guest(guest(GISN + 1, ISN + 1 + 128000, ACK, window=65535), NOW)
    assert splice.room() == 1 << 20  # bound by the buffer, not the 8 MB window
    small = established(window=65535, wscale=False, buffer=4096)
    assert small.room() == 4096
    small.host_eof(NOW)
    assert small.room() == 0


# --- retransmission ---------------------------------------------------------------------------


def test_rto_goes_back_n_and_backs_off(our_isn):
    splice = established()
    stream = data(3000)
    splice.host_data(stream[:1000], NOW)
    splice.host_data(stream[1000:], NOW + 0.1)
    assert len(splice.drain()) == 2
    assert splice.next_deadline() == pytest.approx(NOW + 0.2)  # MIN_RTO, from the first send
    assert tick(splice) == pytest.approx(NOW + 0.2)
    again = one(splice)  # everything in flight, from SND.UNA, as one GSO frame
    assert (again.seq, again.payload) == (ISN + 1, stream) and again.vnet[1] == GSO_TCPV4
    assert splice.next_deadline() == pytest.approx(NOW + 0.6)  # doubled
    assert tick(splice) == pytest.approx(NOW + 0.6)
    assert one(splice).seq == ISN + 1
    assert splice.next_deadline() == pytest.approx(NOW + 1.4)
    # An ACK of new data: the backoff resets, the timer restarts for the rest.
    splice.from_guest(guest(GISN + 1, ISN + 1 + 1460), NOW + 1.0)
    assert splice.drain() == [] and splice.next_deadline() == pytest.approx(NOW + 1.2)
    assert tick(splice) == pytest.approx(NOW + 1.2)
    rest = one(splice)
    assert (rest.seq, rest.payload) == (ISN + 1461, stream[1460:])
    splice.from_guest(guest(GISN + 1, ISN + 3001), NOW + 1.3)
    assert splice.next_deadline() == NOW + 1.3 + 7440  # nothing in flight: only the idle timer


def test_retransmission_gives_up_after_12_timeouts(our_isn):
    splice = established()
    splice.host_data(b"lost", NOW)
    splice.drain()
    rtos = []
    now = NOW
    while not splice.closed:
        deadline = splice.next_deadline()
        assert deadline is not None
        rtos.append(round(deadline - now, 6))
        now = deadline
        splice.expire(now)
        if not splice.closed:
            assert one(splice).payload == b"lost"
    assert rtos == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60, 60, 60]
    rst = one(splice)
    assert (rst.seq, rst.flags) == (ISN + 5, RST | ACK)
    assert splice.abort_host and splice.failed == "retransmission limit"


def test_fast_retransmit_on_the_third_duplicate_ack(our_isn):
    splice = established()
    stream = data(5000)
    for i in range(0, 5000, 1000):
        splice.host_data(stream[i:i + 1000], NOW)
    assert len(splice.drain()) == 5
    splice.from_guest(guest(GISN + 1, ISN + 1001), NOW)  # new data acked
    for _ in range(2):
        splice.from_guest(guest(GISN + 1, ISN + 1001), NOW)
        assert splice.drain() == []
    splice.from_guest(guest(GISN + 1, ISN + 1001), NOW)  # third duplicate
    out = one(splice)
    assert (out.seq, out.payload) == (ISN + 1001, stream[1000:])
    splice.from_guest(guest(GISN + 1, ISN + 1001, window=60000), NOW)  # a window update only
    assert splice.drain() == []


def test_persist_probes_a_zero_window(our_isn):
    splice = established()
    splice.host_data(b"abc", NOW)
    splice.drain()
    splice.from_guest(guest(GISN + 1, ISN + 4, window=0), NOW)
    assert splice.room() == 0 and splice.next_deadline() == pytest.approx(NOW + 0.2)
    assert tick(splice) == pytest.approx(NOW + 0.2)
    probe = one(splice)
    assert (probe.seq, probe.ack, probe.flags, probe.payload) == (ISN + 3, GISN + 1, ACK, b"")
    assert splice.next_deadline() == pytest.approx(NOW + 0.6)
    splice.from_guest(guest(GISN + 1, ISN + 4, window=0), NOW + 0.3)  # still closed
    assert tick(splice) == pytest.approx(NOW + 0.6)
    assert one(splice).seq == ISN + 3 and splice.next_deadline() == pytest.approx(NOW + 1.4)
    splice.from_guest(guest(GISN + 1, ISN + 4, window=100), NOW + 1.0)  # open again
    assert splice.room() == 12800 and splice.next_deadline() == NOW + 1.0 + 7440


# --- closing ----------------------------------------------------------------------------------


def test_guest_closes_first(our_isn):
    splice = established()
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK | FIN, b"bye"), NOW)
    ack = one(splice)
    assert ack.ack == GISN + 5 and splice.guest_fin
    assert not splice.shutdown_host  # to_host still holds "bye"
    splice.host_sent(3, NOW)
    assert splice.shutdown_host
    splice.host_shutdown_done()
    assert not splice.shutdown_host
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK | FIN, b"bye"), NOW)  # retransmitted FIN
    assert one(splice).ack == GISN + 5 and splice.to_host == b""
    splice.host_data(b"answer", NOW)  # the host still talks
    assert one(splice).payload == b"answer"
    assert splice.next_deadline() == pytest.approx(NOW + 0.2)
    splice.host_eof(NOW)
    fin = one(splice)
    assert (fin.seq, fin.flags) == (ISN + 7, FIN | ACK)
    splice.from_guest(guest(GISN + 5, ISN + 7), NOW)  # data acked, not the FIN
    assert not splice.closed
    splice.from_guest(guest(GISN + 5, ISN + 8), NOW)
    assert splice.closed and not splice.abort_host and splice.failed is None
    assert splice.drain() == []


def test_host_closes_first_and_fin_is_retransmitted(our_isn):
    splice = established()
    splice.host_data(b"data", NOW)
    splice.host_eof(NOW)
    assert [o.flags for o in outputs(splice)] == [ACK | PSH, FIN | ACK]
    assert splice.room() == 0
    splice.expire(NOW + 0.2)  # nothing acked: the data and the FIN again
    again = [(o.seq, o.flags) for o in outputs(splice)]
    assert again == [(ISN + 1, ACK | PSH), (ISN + 5, FIN | ACK)]
    splice.from_guest(guest(GISN + 1, ISN + 5), NOW + 0.3)  # the data acked
    splice.expire(NOW + 0.5)
    assert [(o.seq, o.flags) for o in outputs(splice)] == [(ISN + 5, FIN | ACK)]
    splice.from_guest(guest(GISN + 1, ISN + 6), NOW + 0.6)
    assert not splice.closed and splice.next_deadline() == NOW + 0.6 + 240  # half closed
    splice.from_guest(guest(GISN + 1, ISN + 6, ACK | FIN, b"last"), NOW + 1)
    assert one(splice).ack == GISN + 6 and not splice.closed  # "last" not yet written
    splice.host_sent(4, NOW + 1)
    assert splice.closed and splice.failed is None


def test_fin_from_host_waits_for_the_handshake(our_isn):
    splice = Splice.inbound(GUEST, GPORT, REMOTE, RPORT, NOW)
    splice.drain()
    splice.host_eof(NOW)
    assert splice.drain() == []
    splice.from_guest(guest(GISN, ISN + 1, SYN | ACK, options=MSS_1460), NOW)
    assert [(o.seq, o.flags) for o in outputs(splice)] == [(ISN + 1, ACK), (ISN + 1, FIN | ACK)]


def test_rst_from_guest_aborts_the_host_socket(our_isn):
    splice = established()
    splice.from_guest(guest(GISN + 1 + (1 << 24), 0, RST), NOW)  # far outside the window
    assert not splice.closed
    splice.from_guest(guest(GISN + 1, 0, RST), NOW)
    assert splice.closed and splice.abort_host and splice.drain() == []
    splice.from_guest(guest(GISN + 1, ISN + 1, ACK, b"late"), NOW)  # closed: nothing
    assert splice.drain() == [] and splice.to_host == b""


def test_host_reset_sends_rst_to_the_guest(our_isn):
    splice = established()
    splice.host_data(b"abc", NOW)
    splice.drain()
    splice.host_reset(NOW)
    rst = one(splice)
    assert (rst.seq, rst.ack, rst.flags) == (ISN + 4, GISN + 1, RST | ACK) and splice.closed


def test_syn_in_established_gets_a_challenge_ack(our_isn):
    splice = established()
    splice.from_guest(guest(GISN + 77, 0, SYN), NOW)
    ack = one(splice)
    assert (ack.seq, ack.ack, ack.flags) == (ISN + 1, GISN + 1, ACK) and not splice.closed


def test_idle_timeouts(our_isn):
    splice = established()
    assert splice.expires_at(NOW) == NOW + 7440
    splice.expire(NOW + 7439)
    assert splice.drain() == []
    splice.expire(NOW + 7440)
    rst = one(splice)
    assert rst.flags == RST | ACK and splice.abort_host and splice.failed == "idle"
    half = established()
    half.from_guest(guest(GISN + 1, ISN + 1, ACK | FIN), NOW + 5)
    half.drain()
    assert half.next_deadline() == NOW + 5 + 240  # half closed: transitory
    half.expire(NOW + 245)
    assert one(half).flags == RST | ACK and half.failed == "idle"


# --- inbound (port forward) -------------------------------------------------------------------


def test_inbound_handshake(our_isn):
    splice = Splice.inbound(GUEST, GPORT, REMOTE, RPORT, NOW)
    syn = one(splice)
    assert (syn.seq, syn.ack, syn.flags) == (ISN, 0, SYN) and syn.options == MSS_1460 + WS7
    assert splice.state == "syn-sent" and splice.room() == 0
    ws5 = bytes([1, 3, 3, 5])
    synack = guest(GISN, ISN + 1, SYN | ACK, options=struct.pack("!BBH", 2, 4, 1400) + ws5,
                   window=1000)
    splice.from_guest(synack, NOW + 0.1)
    ack = one(splice)
    assert (ack.seq, ack.ack, ack.flags) == (ISN + 1, GISN + 1, ACK)
    assert ack.window == (1 << 20) >> 7
    assert splice.state == "established" and splice.send_mss == 1400
    assert splice.room() == 1000  # the window of a SYN is not scaled
    splice.from_guest(guest(GISN + 1, ISN + 1, window=1000), NOW + 0.2)
    assert splice.room() == 1000 << 5


def test_inbound_refused_by_guest(our_isn):
    splice = Splice.inbound(GUEST, GPORT, REMOTE, RPORT, NOW)
    splice.drain()
    splice.from_guest(guest(0, ISN + 1, RST | ACK), NOW)
    assert splice.closed and splice.failed == "refused by guest" and splice.drain() == []


def test_inbound_wrong_ack_in_synack_is_reset(our_isn):
    splice = Splice.inbound(GUEST, GPORT, REMOTE, RPORT, NOW)
    splice.drain()
    splice.from_guest(guest(GISN, 12345, SYN | ACK), NOW)
    rst = one(splice)
    assert (rst.seq, rst.flags) == (12345, RST) and splice.state == "syn-sent"


def test_inbound_gives_up_after_5_syns(our_isn):
    splice = Splice.inbound(GUEST, GPORT, REMOTE, RPORT, NOW)
    sent = []
    while not splice.closed:
        sent += [(o.seq, o.flags) for o in outputs(splice)]
        deadline = splice.next_deadline()
        assert deadline is not None
        splice.expire(deadline)
        last = deadline
    assert sent == [(ISN, SYN)] * 5 and splice.drain() == []  # no RST: the guest never answered
    assert last == NOW + 1 + 2 + 4 + 8 + 16 and splice.failed == "guest did not answer"


# --- wraparound -------------------------------------------------------------------------------


def test_sequence_numbers_wrap(our_isn):
    our_isn(2**32 - 1000)
    splice = established(gisn=2**32 - 500, isn=2**32 - 1000)
    stream = data(2000)
    splice.from_guest(guest(2**32 - 499, 2**32 - 999, ACK, stream), NOW)
    assert one(splice).ack == 1501 and splice.to_host == stream
    splice.from_guest(guest(1501, 2**32 - 999, ACK, b"more"), NOW)  # after the wrap
    assert one(splice).ack == 1505 and splice.to_host == stream + b"more"
    splice.host_data(stream + stream, NOW)
    (packet,) = splice.drain()
    seqs = [TCP_HDR.unpack_from(f, 34)[2] for f in to_plain_frames(packet)]
    assert seqs[0] == 2**32 - 999 and seqs[1] == 461 and seqs[-1] == (seqs[0] + 2 * 1460) % 2**32
    splice.from_guest(guest(1505, 2**32 - 999 + 2000), NOW)  # acks 2000, wrapped
    assert splice.room() == (1 << 20) - 2000 and splice.snd_una == 1001
    splice.from_guest(guest(1505, 3001), NOW)
    assert splice.next_deadline() == NOW + 7440


# --- malformed --------------------------------------------------------------------------------


def corrupt(packet: bytes, at: int, value: bytes) -> bytes:
    return packet[:at] + value + packet[at + len(value):]


@pytest.mark.parametrize("packet", [
    guest(1, 1)[:50],  # TCP header truncated
    guest(1, 1)[:30],  # IP header truncated
    corrupt(guest(1, 1), 24, b"\x44"),  # IHL 4
    corrupt(guest(1, 1), 26, b"\x00\x50"),  # IP total length beyond the frame
    corrupt(guest(1, 1), 44 + 12, b"\x40"),  # data offset 4
    corrupt(guest(1, 1, payload=b"abcd"), 44 + 12, b"\x70"),  # data offset past the payload
    guest(1, 0, SYN | FIN),
    corrupt(guest(1, 1), 22, b"\x86\xdd"),  # not IPv4
], ids=["tcp-trunc", "ip-trunc", "ihl", "total", "doff-low", "doff-high", "syn-fin", "ipv6"])
def test_malformed_segments_raise(our_isn, packet):
    splice = established()
    with pytest.raises(MalformedPacket):
        splice.from_guest(packet, NOW)
    assert splice.drain() == [] and not splice.closed


def test_an_ipv6_guest_gets_ipv6_segments_and_gso_frames_that_scapy_and_gso_accept():
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from wire.ipv6 import decode_ipv6

    syn = NO_OFFLOAD + bytes(Ether(src="52:54:00:00:00:10", dst="52:54:00:00:00:01")
                             / IPv6(src="fd42::10", dst="2001:db8::80")
                             / TCP(sport=40000, dport=80, flags="S", seq=1000,
                                   options=[("MSS", 1440), ("WScale", 7)]))
    ip = decode_ipv6(syn, 24)
    splice = Splice.outbound(syn, NOW, ip=ip, mss=1440)
    splice.macs = syn[16:22] + syn[10:16]
    splice.host_connected(NOW)
    (synack,) = splice.drain()
    frame = Ether(synack[10:])
    assert frame[IPv6].src == "2001:db8::80" and frame[TCP].flags == "SA"
    again = Ether(synack[10:])
    del again[TCP].chksum  # scapy recomputes the checksum and agrees
    assert Ether(bytes(again))[TCP].chksum == frame[TCP].chksum
    ack = NO_OFFLOAD + bytes(Ether(src="52:54:00:00:00:10", dst="52:54:00:00:00:01")
                             / IPv6(src="fd42::10", dst="2001:db8::80")
                             / TCP(sport=40000, dport=80, flags="A", seq=1001,
                                   ack=frame[TCP].seq + 1, window=4000))
    splice.from_guest(ack, NOW, decode_ipv6(ack, 24))
    splice.host_data(bytes(range(256)) * 40, NOW)  # 10240 bytes: more than one segment
    sent = [p for p in splice.drain() if len(p) > 100]
    assert sent and sent[0][1] == 4  # GSO_TCPV6
    segments = to_plain_frames(sent[0])
    assert len(segments) > 1
    for segment in segments:
        seg = Ether(segment)
        check = seg[TCP].chksum
        del seg[TCP].chksum
        assert Ether(bytes(seg))[TCP].chksum == check
