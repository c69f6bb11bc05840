"""A guest's TCP connection spliced onto a host TCP socket: the sans-I/O translator core.

The ``host`` egress carries a guest's TCP over a host socket (as libslirp and passt do).  The guest
speaks real TCP; an I/O adapter owns the host socket and calls in here with bytes and ``now``.
This core imports no socket, no asyncio, no clock: it answers with packets for the guest
(``to_guest``), bytes for the host (``to_host``) and flags (``shutdown_host``, ``abort_host``,
``closed``), and exposes ``next_deadline()`` / ``expire(now)``.

Rule 1: a guest packet is parsed at offsets by the wire decoders: truncated headers, IHL or
        data offset < 5 or beyond the IP total length (which ends the payload, Ethernet padding
        excluded), a bad IPv4 header checksum, SYN+FIN raise ``MalformedPacket``.  TCP checksums
        are not verified: GSO frames from the guest carry a partial one (virtio NEEDS_CSUM).
Rule 2: handshake.  Outbound: the guest's SYN gives its ISN, MSS (536 if absent, RFC 9293 3.7.1)
        and window-scale option; while the adapter connects, retransmitted SYNs are ignored.  Then
        SYN-ACK (host connected), RST|ACK (refused) or an ICMP error the adapter builds
        (unreachable).  Inbound (port forward): we send the SYN.  We offer MSS and window scale
        only (no timestamps, no SACK); scaling is used only if both sides sent it (RFC 7323 2.2)
        and the window of a SYN is never scaled.
Rule 3: receiving (RFC 9293 3.10.7.4, simplified): in-order data only; the part of a segment
        before RCV.NXT is trimmed, out-of-order data is dropped and answered with a duplicate ACK,
        anything beyond the window we advertised is cut off.  In-order data and FIN are ACKed
        once per ``drain()`` (the adapter drains after each batch it reads, as GRO makes one
        ACK per batch); duplicates and out-of-order segments are ACKed at once.  Our window
        is the free buffer >> our shift and never shrinks (RFC 9293 3.8.6.2.2); after the host
        drains a small window, a window update.
Rule 4: sending: ``room()`` = the guest's window and our buffer less what is in flight.  Host
        bytes go out at once, in MSS-sized plain segments or GSO super-frames (PSH on the last),
        and stay in the retransmission buffer until acknowledged.
Rule 5: an ACK of new data advances SND.UNA and restarts the retransmission timer (RFC 6298 5.3);
        the third duplicate ACK retransmits from SND.UNA (fast retransmit, RFC 5681 3.2).  Window
        updates are taken from every acceptable ACK (no SND.WL1/WL2: a virtual link does not
        reorder).
Rule 6: retransmission timeout (RFC 6298): 1 s in the handshake, then MIN_RTO = 0.2 s on the local
        link (a deviation from RFC 6298 2.4's 1 s minimum, as Linux uses 200 ms), doubled on each
        timeout (5.5) up to 60 s.  A timeout resends all in flight the window allows (go-back-N).
        The SYN or SYN-ACK is tried SYN_TRIES times, anything else gives up at the MAX_TIMEOUTS-th
        consecutive timeout: RST to the guest, abort the host socket.
Rule 7: persist (RFC 9293 3.8.6.1): guest window 0, nothing in flight and no host EOF: an ACK
        with SEQ = SND.NXT - 1 every RTO (doubling, 60 s cap) makes the guest tell its window.
Rule 8: closing: a guest FIN (in order) is ACKed; once ``to_host`` is drained the adapter shuts
        the host socket's sending side.  Host EOF sends our FIN after the data.  Both FINs seen,
        ours ACKed and ``to_host`` empty: closed.  RST from the guest aborts the host socket; a
        broken host socket sends RST to the guest.
Rule 9: idle: nothing from the guest or the host for ``established_timeout`` (established, both
        directions open) or ``transitory_timeout`` (any other state): RST, abort, forget.
Rule 10: once ``closed`` nothing more is sent and guest segments are ignored.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from typing import Any, Final

from nat.tcp_seq import SEQ_MASK, Unacked, seq_add, seq_le, seq_lt, seq_sub
from wire.checksum import internet_checksum, pseudo_header_sum
from wire.errors import MalformedPacket
from wire.ipv6 import IPV6, Ipv6, pseudo_header6
from wire.packets import ETH_P_IP, ETH_P_IPV6, IPV4, IPV4_FRAGMENTED, PROTO_TCP, Ipv4, decode_ipv4
from wire.tcp import ACK, FIN, PSH, RST, SYN, TCP, decode_tcp
from wire.vnet import FLAG_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VNET_HDR, VNET_HDR_LEN

PORTS: Final = struct.Struct("!HH")
U16: Final = struct.Struct("!H")
MSS_OPTION: Final = struct.Struct("!BBH")
WSCALE_OPTION: Final = bytes([1, 3, 3])  # NOP, kind 3, length 3 (the shift follows)

WSCALE: Final = 7  # our shift when scaling is agreed
MAX_WSCALE: Final = 14  # RFC 7323 2.3: a larger shift is used as 14
DEFAULT_MSS: Final = 536  # RFC 9293 3.7.1: no MSS option
MIN_MSS: Final = 64  # floor for a guest's MSS option (Linux clamps to 48)
INITIAL_RTO: Final = 1.0  # RFC 6298 2.1
MIN_RTO: Final = 0.2  # Rule 6: local link, as Linux
MAX_RTO: Final = 60.0  # RFC 6298 2.5
SYN_TRIES: Final = 5
MAX_TIMEOUTS: Final = 12
#: Payload of one GSO super-frame before rounding down to a multiple of the MSS: the Ethernet frame
#: (14 + 20 + 20 + payload) must stay within 64 KiB (wire.gso.MAX_FRAME, Linux's GSO limit).
MAX_GSO_PAYLOAD: Final = 0xFFFF - 14 - 20 - 20

IP_AT: Final = VNET_HDR_LEN + 14  # IP header offset in a packet
TCP_AT: Final = IP_AT + 20  # TCP header offset in the IPv4 packets we build
CSUM_START: Final = TCP_AT - VNET_HDR_LEN  # from the start of the Ethernet frame
ZERO_MAC: Final = bytes(6)

#: (seq, ack, flags, window, TCP header offset, payload offset, payload end) of a guest packet.
Segment = tuple[int, int, int, int, int, int, int]


def decode_segment(packet: bytes, ip: Ipv4 | Ipv6 | None = None) -> Segment:
    """Rule 1: the TCP segment in a vswitch packet (virtio-net header, Ethernet, IP, TCP);
    ``ip`` is its IPv4 or IPv6 header when the caller decoded it already."""
    if ip is None:
        if len(packet) < IP_AT or U16.unpack_from(packet, IP_AT - 2)[0] != ETH_P_IP:
            raise MalformedPacket("not an IPv4 frame")
        ip = decode_ipv4(packet, IP_AT)
    fragmented = ip.fragment is not None if isinstance(ip, Ipv6) \
        else ip.fragment & IPV4_FRAGMENTED
    if ip.proto != PROTO_TCP or fragmented:
        raise MalformedPacket("not TCP, or a fragment")
    _, _, seq, ack, flags, window, tcp_at, payload_at, end = decode_tcp(packet, ip)
    return seq, ack, flags, window, tcp_at, payload_at, end


def decode_syn_options(options: bytes) -> tuple[int, int | None]:
    """(MSS, window shift or None) from a SYN's options (RFC 9293 3.1, 3.7.1; RFC 7323 2.2-2.3)."""
    mss, shift, i = DEFAULT_MSS, None, 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2 or i + options[i + 1] > len(options):
            raise MalformedPacket("TCP option length")
        length = options[i + 1]
        if kind == 2 and length == 4:
            mss = U16.unpack_from(options, i + 2)[0]
        elif kind == 3 and length == 3:
            shift = min(options[i + 2], MAX_WSCALE)
        i += length
    return mss, shift


class Splice:
    """One guest TCP connection spliced onto a host socket."""

    def __init__(self, guest_ip: bytes, guest_port: int, remote_ip: bytes, remote_port: int,
                 now: float, mss: int = 1460, buffer: int = 1 << 20,
                 established_timeout: float = 7440.0, transitory_timeout: float = 240.0) -> None:
        self.guest_ip, self.guest_port = guest_ip, guest_port
        self.remote_ip, self.remote_port = remote_ip, remote_port
        self.mss = mss
        #: Bytes held each way at most; the adapter may change it at any time (a memory budget
        #: over all connections): a smaller one narrows the windows offered from then on, the
        #: right edge already offered is kept (Rule 3), and data beyond it is cut off.
        self.buffer = buffer
        self.established_timeout = established_timeout
        self.transitory_timeout = transitory_timeout
        # What the adapter reads.
        self.to_guest: list[bytes] = []
        self.to_host = bytearray()
        self.shutdown_host = False
        self.abort_host = False
        self.closed = False
        self.failed: str | None = None
        self.icmp_unreachable: int | None = None
        self.syn_packet: bytes | None = None
        self.state = "connecting"
        self.guest_fin = False
        self.host_fin = False
        self.packets_from_guest = self.bytes_from_guest = 0
        self.packets_to_guest = self.bytes_to_guest = 0
        # Send sequence space (RFC 9293 3.3.1); SND.WND in bytes, already scaled.
        self.iss = self.snd_una = self.snd_nxt = self.snd_wnd = self.snd_shift = 0
        self.send_mss = DEFAULT_MSS
        self.gso_chunk = MAX_GSO_PAYLOAD // DEFAULT_MSS * DEFAULT_MSS
        self.fin_sent = False
        #: Ethernet destination and source of packets to the guest: zeros until the adapter
        #: knows them (the router then addresses the packets by its ARP cache).
        self.macs = ZERO_MAC + ZERO_MAC
        self._unacked = Unacked()  # data from SND.UNA on
        # Receive sequence space.
        self.irs = self.rcv_nxt = self.rcv_shift = 0
        self._ack_due = False  # in-order data or a window update awaits an ACK (Rule 3)
        self._rcv_edge = 0  # RCV.NXT + the window last advertised: the right edge never shrinks
        self._last_window = 0  # the window last advertised, in bytes
        self._offer_wscale = False
        # Timers.
        self.rto = INITIAL_RTO
        self._timeouts = self._dupacks = 0
        self._rtx_at: float | None = None
        self._persist_rto = MIN_RTO
        self._persist_at: float | None = None
        self._last_activity = now
        self._host_shut = False
        # IPv6 (a 16-byte guest address): a 40-byte header, its own pseudo header (congruent
        # to the IPv4 one's sum plus the length, so the same arithmetic serves) and GSO type
        self.v6 = len(guest_ip) == 16
        self._tcp_at = TCP_AT + 20 if self.v6 else TCP_AT
        self._max_gso = MAX_GSO_PAYLOAD - 20 if self.v6 else MAX_GSO_PAYLOAD
        pseudo = pseudo_header6 if self.v6 else pseudo_header_sum
        self._pseudo = int.from_bytes(pseudo(remote_ip, guest_ip, PROTO_TCP, 0), "big")

    # --- opening (Rule 2) ---------------------------------------------------------------------

    @classmethod
    def outbound(cls, syn_packet: bytes, now: float, *, ip: Ipv4 | Ipv6 | None = None,
                 **kw: Any) -> Splice:
        """The guest's SYN to a remote: state "connecting" while the adapter connects; ``ip``
        is its IP header (an IPv6 one makes an IPv6 splice)."""
        seg = decode_segment(syn_packet, ip)
        seq, _, flags, window, tcp_at, payload_at, end = seg
        if flags & (SYN | ACK | RST) != SYN:
            raise MalformedPacket("outbound() needs a SYN without ACK or RST")
        guest_port, remote_port = PORTS.unpack_from(syn_packet, tcp_at)
        if ip is not None:
            guest_ip, remote_ip = ip.src, ip.dst
        else:
            guest_ip = syn_packet[IP_AT + 12:IP_AT + 16]
            remote_ip = syn_packet[IP_AT + 16:IP_AT + 20]
        self = cls(guest_ip, guest_port, remote_ip, remote_port, now, **kw)
        self.syn_packet = bytes(syn_packet)
        self.packets_from_guest, self.bytes_from_guest = 1, end - payload_at
        self._offer_wscale = self._peer_syn(seq, window, syn_packet[tcp_at + 20:payload_at])
        return self

    @classmethod
    def inbound(cls, guest_ip: bytes, guest_port: int, remote_ip: bytes, remote_port: int,
                now: float, **kw: Any) -> Splice:
        """A host connection accepted for a port forward: SYN to the guest, state "syn-sent"."""
        self = cls(guest_ip, guest_port, remote_ip, remote_port, now, **kw)
        self.state, self._offer_wscale = "syn-sent", True
        self._open(now)
        return self

    def host_connected(self, now: float) -> None:
        """The adapter's connect succeeded: SYN-ACK to the guest."""
        if self.state == "connecting" and not self.closed:
            self.state = "syn-received"
            self._last_activity = now
            self._open(now)

    def host_refused(self, now: float) -> None:
        """Connection refused: RST|ACK to the guest (RFC 9293 3.10.7.1), SEQ 0, ACK its ISN+1."""
        if self.state == "connecting" and not self.closed:
            self._emit(0, RST | ACK)
            self._close()

    def host_unreachable(self, icmp_code: int, now: float) -> None:
        """No route, host down...: the adapter answers ``syn_packet`` with this ICMP code."""
        if self.state == "connecting" and not self.closed:
            self.icmp_unreachable = icmp_code
            self._close()

    def _open(self, now: float) -> None:
        self.iss = secrets.randbits(32)
        self.snd_una, self.snd_nxt = self.iss, seq_add(self.iss, 1)
        self._send_syn()
        self._rtx_at = now + self.rto

    def _send_syn(self) -> None:
        options = MSS_OPTION.pack(2, 4, min(self.mss, 0xFFFF))
        if self._offer_wscale:
            options += WSCALE_OPTION + bytes([WSCALE])
        flags = SYN if self.state == "syn-sent" else SYN | ACK
        self._emit(self.iss, flags, b"", options, min(0xFFFF, self.buffer))

    def _peer_syn(self, seq: int, window: int, options: bytes) -> bool:
        """Take the guest's ISN, MSS, window and shift from its SYN; True if it sent a shift."""
        mss, shift = decode_syn_options(options)
        self.irs, self.rcv_nxt = seq, seq_add(seq, 1)
        self.send_mss = max(MIN_MSS, min(mss, self.mss, MAX_GSO_PAYLOAD))
        self.gso_chunk = self._max_gso // self.send_mss * self.send_mss
        self.snd_wnd = window  # RFC 7323 2.2: the window field of a SYN is never scaled
        if shift is not None:
            self.snd_shift, self.rcv_shift = shift, WSCALE
        self._last_window = min(0xFFFF, self.buffer)
        self._rcv_edge = seq_add(self.rcv_nxt, self._last_window)
        return shift is not None

    def _established(self) -> None:
        self.state = "established"
        self.snd_una = self.snd_nxt
        self.rto, self._timeouts, self._rtx_at = MIN_RTO, 0, None

    # --- segments from the guest --------------------------------------------------------------

    def from_guest(self, packet: bytes, now: float, ip: Ipv4 | Ipv6 | None = None) -> None:
        """One segment from the guest (RFC 9293 3.10.7, simplified per Rules 2, 3, 5 and 8);
        ``ip``: its IPv4 header, when the caller decoded it already."""
        if self.closed:  # Rule 10
            return
        seg = decode_segment(packet, ip)
        self.packets_from_guest += 1
        self.bytes_from_guest += seg[6] - seg[5]
        self._last_activity = now
        _HANDLERS[self.state](self, packet, seg, now)
        self._settle(now)

    def _in_connecting(self, packet: bytes, seg: Segment, now: float) -> None:
        # Rule 2: a retransmitted SYN waits for the host's answer; a RST means the guest gave up.
        if seg[2] & RST and self._rst_acceptable(seg[0]):
            self._abort(None, reset_guest=False)

    def _in_syn_sent(self, packet: bytes, seg: Segment, now: float) -> None:
        seq, ack, flags, window, tcp_at, payload_at, _ = seg
        if flags & ACK and ack != self.snd_nxt:  # RFC 9293 3.10.7.3: an unacceptable ACK
            if not flags & RST:
                self._emit(ack, RST)
            return
        if flags & RST:
            if flags & ACK:
                self._abort("refused by guest", reset_guest=False)
            return
        if flags & SYN and flags & ACK:
            self._peer_syn(seq, window, packet[tcp_at + 20:payload_at])
            self._established()
            self._emit(self.snd_nxt, ACK)

    def _in_syn_received(self, packet: bytes, seg: Segment, now: float) -> None:
        seq, ack, flags = seg[0], seg[1], seg[2]
        if flags & RST:
            if self._rst_acceptable(seq):
                self._abort(None, reset_guest=False)
            return
        if flags & SYN:
            if not flags & ACK and seq == self.irs:  # our SYN-ACK was lost: say it again
                self._send_syn()
            return
        if not flags & ACK:
            return
        if ack != self.snd_nxt:  # RFC 9293 3.10.7.4, SYN-RECEIVED: <SEQ=SEG.ACK><CTL=RST>
            self._emit(ack, RST)
            return
        self._established()
        self._in_established(packet, seg, now)  # the ACK may carry data or a FIN

    def _in_established(self, packet: bytes, seg: Segment, now: float) -> None:
        seq, ack, flags, window, _, payload_at, end = seg
        if flags & RST:  # RFC 9293 3.10.7.4 second check: RST in the window
            if self._rst_acceptable(seq):
                self._abort(None, reset_guest=False)
            return
        if flags & SYN or not flags & ACK:  # unexpected: challenge ACK (RFC 5961 4, 7)
            self._emit(self.snd_nxt, ACK)
            return
        # Rule 5: ACK processing
        if seq_lt(self.snd_nxt, ack):  # acknowledges something not sent: ACK, drop
            self._emit(self.snd_nxt, ACK)
            return
        if seq_le(self.snd_una, ack):
            wnd = window << self.snd_shift
            if ack != self.snd_una:
                self._acked(ack, now)
            elif (payload_at == end and not flags & FIN and wnd == self.snd_wnd
                  and self.snd_nxt != self.snd_una):
                self._dupacks += 1
                if self._dupacks == 3:  # RFC 5681 3.2: fast retransmit
                    self._retransmit(self.gso_chunk)
            self.snd_wnd = wnd
        # Rule 3: data and FIN
        if payload_at != end or flags & FIN:
            self._receive(packet, seq, payload_at, end, flags & FIN != 0)

    def _rst_acceptable(self, seq: int) -> bool:
        """RFC 9293 3.10.7.4: a RST counts if its SEQ is RCV.NXT or inside the receive window."""
        return seq == self.rcv_nxt or seq_sub(seq, self.rcv_nxt) < seq_sub(self._rcv_edge,
                                                                          self.rcv_nxt)

    def _acked(self, ack: int, now: float) -> None:
        self._unacked.drop(seq_sub(ack, self.snd_una))  # one more than the data if FIN acked
        self.snd_una = ack
        self.rto, self._timeouts, self._dupacks = MIN_RTO, 0, 0
        self._rtx_at = now + self.rto if self.snd_nxt != self.snd_una else None  # RFC 6298 5.3

    def _receive(self, packet: bytes, seq: int, payload_at: int, end: int, fin: bool) -> None:
        """Rule 3: in-order data to ``to_host``, trimmed and cut to the window; always ACK."""
        skip = seq_sub(self.rcv_nxt, seq)  # bytes of the segment already received
        length = end - payload_at
        if not self.guest_fin and skip <= length:  # else after the guest's FIN, out of order or old
            window = seq_sub(self._rcv_edge, self.rcv_nxt)
            free = max(0, self.buffer - len(self.to_host))  # the adapter may shrink buffer
            take = min(length - skip, free, window if window < 1 << 31 else 0)
            self.to_host += memoryview(packet)[payload_at + skip:payload_at + skip + take]
            self.rcv_nxt = seq_add(self.rcv_nxt, take)
            if fin and take == length - skip:
                self.rcv_nxt = seq_add(self.rcv_nxt, 1)
                self.guest_fin = True
                take += 1
            if take:  # Rule 3: in order: one ACK for all that arrives before the next drain()
                self._ack_due = True
                return
        self._emit(self.snd_nxt, ACK)  # a duplicate, out of order, or no room: ACK at once

    # --- the host socket ----------------------------------------------------------------------

    def held(self) -> int:
        """Bytes this connection holds: for the host, and sent to the guest but not acked."""
        return len(self.to_host) + len(self._unacked)

    def room(self) -> int:
        """Rule 4: bytes the adapter may read from the host socket now."""
        if self.state != "established" or self.host_fin or self.closed:
            return 0
        in_flight = seq_sub(self.snd_nxt, self.snd_una)
        return max(0, min(self.snd_wnd - in_flight, self.buffer - in_flight))

    def host_data(self, data: bytes, now: float) -> None:
        """Rule 4: bytes read from the host (at most ``room()`` are taken) go to the guest."""
        take = min(len(data), self.room())
        if take <= 0:
            return
        piece = data if take == len(data) else data[:take]
        self._unacked.append(piece)
        self._send_data(self.snd_nxt, piece)
        self.snd_nxt = seq_add(self.snd_nxt, take)
        self._last_activity = now
        self._settle(now)

    def host_sent(self, n: int, now: float) -> None:
        """The adapter wrote the first ``n`` bytes of ``to_host``; maybe a window update."""
        if self.closed or n <= 0:
            return
        del self.to_host[:n]
        self._last_activity = now
        if self.state == "established" and not self.guest_fin:
            before, quarter = self._last_window, min(self.buffer, 0xFFFF << self.rcv_shift) // 4
            free = max(0, self.buffer - len(self.to_host))
            after = min(0xFFFF, free >> self.rcv_shift) << self.rcv_shift
            if (before < quarter or before == 0) and after > before and (
                    after >= quarter or after - before >= 2 * self.mss):
                self._ack_due = True  # the window update goes out with the next drain()
        self._settle(now)

    def host_eof(self, now: float) -> None:
        """Rule 8: the host closed its sending side; our FIN follows the data (see _settle)."""
        if not self.closed and not self.host_fin:
            self.host_fin = True
            self._last_activity = now
            self._settle(now)

    def host_shutdown_done(self) -> None:
        """The adapter did shutdown(SHUT_WR) on the host socket."""
        self.shutdown_host, self._host_shut = False, True

    def host_reset(self, now: float) -> None:
        """Rule 8: the host connection broke: RST to the guest."""
        if not self.closed:
            self._reset_guest()
            self._close()

    # --- timers (Rules 6, 7, 9) ---------------------------------------------------------------

    def expires_at(self, now: float) -> float:
        """Rule 9: when the connection is dropped as idle."""
        if self.closed:
            return now
        busy = self.state == "established" and not self.guest_fin and not self.host_fin
        timeout = self.established_timeout if busy else self.transitory_timeout
        return self._last_activity + timeout

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        times = [t for t in (self._rtx_at, self._persist_at) if t is not None]
        times.append(self.expires_at(0.0))
        return min(times)

    def expire(self, now: float) -> None:
        if self.closed:
            return
        if now >= self.expires_at(now):  # Rule 9
            self._abort("idle")
            return
        if self._rtx_at is not None and now >= self._rtx_at:
            self._timeout(now)
        if self._persist_at is not None and now >= self._persist_at and not self.closed:
            # Rule 7: probe with SEQ = SND.NXT - 1; the guest answers with its window.
            self._emit(seq_sub(self.snd_nxt, 1), ACK)
            self._persist_rto = min(self._persist_rto * 2, MAX_RTO)
            self._persist_at = now + self._persist_rto
        self._settle(now)

    def _timeout(self, now: float) -> None:
        """Rule 6: back off (RFC 6298 5.5) and go back N, or give up."""
        self._timeouts += 1
        handshake = self.state in ("syn-sent", "syn-received")
        if self._timeouts >= (SYN_TRIES if handshake else MAX_TIMEOUTS):
            self._abort("guest did not answer" if handshake else "retransmission limit")
            return
        self.rto = min(self.rto * 2, MAX_RTO)
        self._rtx_at = now + self.rto
        self._dupacks = 0
        if handshake:
            self._send_syn()
        else:  # at least one segment even into a zero window (RFC 9293 3.8.6.1)
            self._retransmit(max(self.snd_wnd, self.send_mss))

    def _retransmit(self, limit: int) -> None:
        """Resend up to ``limit`` bytes from SND.UNA, and our FIN if it is in flight too."""
        n = min(len(self._unacked), limit)
        if n:
            self._send_data(self.snd_una, self._unacked.first(n))
        if self.fin_sent and self.snd_una != self.snd_nxt and n == len(self._unacked):
            self._emit(seq_sub(self.snd_nxt, 1), FIN | ACK)

    def _settle(self, now: float) -> None:
        """After every event: pending FIN, host shutdown, graceful close, timers (Rules 6-8)."""
        if self.closed or self.state != "established":
            return
        if self.host_fin and not self.fin_sent:  # Rule 8: FIN after all data sent
            self._emit(self.snd_nxt, FIN | ACK)
            self.snd_nxt = seq_add(self.snd_nxt, 1)
            self.fin_sent = True
        if self.guest_fin and not self.to_host and not self._host_shut:
            self.shutdown_host = True
        in_flight = self.snd_nxt != self.snd_una
        if self.guest_fin and self.fin_sent and not in_flight and not self.to_host:
            self._close()
            return
        if not in_flight:
            self._rtx_at = None
        elif self._rtx_at is None:  # RFC 6298 5.1
            self._rtx_at = now + self.rto
        if self.snd_wnd == 0 and not in_flight and not self.host_fin:  # Rule 7
            if self._persist_at is None:
                self._persist_at = now + self._persist_rto
        else:
            self._persist_at, self._persist_rto = None, MIN_RTO

    def _abort(self, reason: str | None, reset_guest: bool = True) -> None:
        """Close with RST on the host socket (and to the guest, unless it sent the RST)."""
        if reset_guest:
            self._reset_guest()
        self.abort_host, self.failed = True, reason
        self._close()

    def _reset_guest(self) -> None:
        if self.state == "connecting":
            self._emit(0, RST | ACK)
        elif self.state != "syn-sent" and not self.closed:  # a guest that never answered: nothing
            self._emit(self.snd_nxt, RST | ACK)

    def _close(self) -> None:
        self.closed, self.state = True, "closed"
        self._rtx_at = self._persist_at = None

    # --- output -------------------------------------------------------------------------------

    def drain(self) -> list[bytes]:
        """The packets for the guest produced so far (the list is cleared), ending with the ACK
        still due (Rule 3): an adapter that drains once per batch of guest segments sends one
        ACK for the batch, with the window as it is after the host took what it could."""
        if self._ack_due and not self.closed:
            self._emit(self.snd_nxt, ACK)
        out, self.to_guest = self.to_guest, []
        return out

    def _advertise(self) -> int:
        """Rule 3: the window field: free buffer >> our shift; the right edge never moves left."""
        field = min(0xFFFF, max(0, self.buffer - len(self.to_host)) >> self.rcv_shift)
        self._last_window = field << self.rcv_shift
        edge = seq_add(self.rcv_nxt, self._last_window)
        if seq_lt(self._rcv_edge, edge):
            self._rcv_edge = edge
        return field

    def _send_data(self, seq: int, data: bytes) -> None:
        """Rule 4: ``data`` from ``seq`` as GSO chunks of at most ``gso_chunk``; PSH at the end."""
        view = memoryview(data)  # slices without copies: _emit copies each payload once
        for start in range(0, len(data), self.gso_chunk):
            last = start + self.gso_chunk >= len(data)
            self._emit(seq_add(seq, start), ACK | PSH if last else ACK,
                       view[start:start + self.gso_chunk])

    def _emit(self, seq: int, flags: int, payload: bytes | memoryview = b"",
              options: bytes = b"", window: int | None = None) -> None:
        """Append one packet for the guest: plain with a full checksum, or a GSO super-frame."""
        self._ack_due = False  # every segment we send acknowledges all received
        hlen = 20 + len(options)
        tcp_len = hlen + len(payload)
        tcp_at = self._tcp_at
        packet = bytearray(tcp_at + hlen)
        gso = len(payload) > self.send_mss
        if gso:
            start = tcp_at - VNET_HDR_LEN
            VNET_HDR.pack_into(packet, 0, FLAG_NEEDS_CSUM, GSO_TCPV6 if self.v6 else GSO_TCPV4,
                               start + hlen, self.send_mss, start, 16)
        packet[VNET_HDR_LEN:VNET_HDR_LEN + 12] = self.macs
        if self.v6:
            U16.pack_into(packet, VNET_HDR_LEN + 12, ETH_P_IPV6)
            IPV6.pack_into(packet, IP_AT, 6 << 28, tcp_len, PROTO_TCP, 64,
                                  self.remote_ip, self.guest_ip)
        else:
            U16.pack_into(packet, VNET_HDR_LEN + 12, ETH_P_IP)
            IPV4.pack_into(packet, IP_AT, 0x45, 0, 20 + tcp_len, 0, 0x4000, 64, PROTO_TCP, 0,
                           self.remote_ip, self.guest_ip)
            U16.pack_into(packet, IP_AT + 10, internet_checksum(packet[IP_AT:TCP_AT]))
        TCP.pack_into(packet, tcp_at, self.remote_port, self.guest_port, seq & SEQ_MASK,
                      self.rcv_nxt if flags & ACK else 0, hlen << 2, flags,
                      self._advertise() if window is None else window, 0, 0)
        packet[tcp_at + 20:] = options
        pseudo = self._pseudo + tcp_len
        if gso:  # CHECKSUM_PARTIAL: the folded pseudo header sum, not complemented
            U16.pack_into(packet, tcp_at + 16, pseudo % 0xFFFF or 0xFFFF)
            self.to_guest.append(b"".join((packet, payload)))  # the one copy of the payload
        else:
            packet += payload
            U16.pack_into(packet, tcp_at + 16,
                          internet_checksum(memoryview(packet)[tcp_at:], pseudo))
            self.to_guest.append(bytes(packet))
        self.packets_to_guest += 1
        self.bytes_to_guest += len(payload)


_HANDLERS: Final[dict[str, Callable[[Splice, bytes, Segment, float], None]]] = {
    "connecting": Splice._in_connecting,
    "syn-sent": Splice._in_syn_sent,
    "syn-received": Splice._in_syn_received,
    "established": Splice._in_established,
}
