"""A small passive TCP for request/response services on the gateway (DNS over TCP, RFC 7766),
over IPv4 and IPv6 alike.

Not a general TCP: it only accepts connections, delivers in-order data to an application and
sends its (small) answers back.

Rule 1: a SYN to the service opens a connection (SYN-ACK with our MSS: the station's MTU less
        the IP and TCP headers, 40 bytes over IPv4 and 60 over IPv6); at most ``max_conns``
        exist, a SYN beyond that gets RST (RFC 793 3.4 reset generation; RFC 7766 6.2 says
        servers may limit connections).  Our segments carry at most the peer's MSS too (536
        when its SYN names none: RFC 9293 3.7.1's IPv4 default, below IPv6's 1220).
Rule 2: only in-order data is accepted; anything else is answered with a duplicate ACK so the
        peer retransmits (RFC 793 3.3, "segment acceptability", simplified to exact match).
Rule 3: unacknowledged data is retransmitted after RTO (1 s, doubled each time, RFC 6298 5.5);
        after 5 tries, or ``idle`` seconds without traffic, the connection is reset and forgotten.
Rule 4: a FIN from the peer is acknowledged and answered with our FIN once our data is sent;
        a RST removes the connection at once.
Rule 5: one server takes both address families: the station a segment came to (``nat.gateway``
        for IPv4, ``nat.gateway6`` for IPv6) builds the IP header and the RST for a segment
        nobody takes, the TCP checksum covers the pseudo header of the addresses' family
        (``wire.tcp`` Rule 2), and a connection answers from the address its SYN was sent to
        (the IPv6 gateway has two: in the prefix and link-local).
Rule 6: a segment whose checksum fails is dropped and counted, before anything else looks at
        it (RFC 9293 3.1, MUST-3).  Partial checksums (virtio NEEDS_CSUM) are finished by the
        router port before the gateway sees a TCP segment; ours are always complete.
"""

from __future__ import annotations

import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from nat.tcp_splice import MIN_MSS, decode_syn_options
from wire.ipv6 import Ipv6
from wire.packets import PROTO_TCP, Ipv4
from wire.tcp import ACK, FIN, PSH, RST, SYN, TCP_HEADERS, checksum_ok, decode_tcp, encode_tcp

#: The IP header a station speaks: IPv4 (``nat.gateway``) or IPv6 (``nat.gateway6``).
Ip = TypeVar("Ip", Ipv4, Ipv6, contravariant=True)


class Station(Protocol[Ip]):
    """What the server needs of the station a segment came to (Rule 5): its link's MTU, its
    counters, frames from it (the IP header its family's), and its RST for a segment nobody
    takes."""

    mtu: int
    counters: Counter[str]

    def ip_frame(self, dst_mac: bytes, dst_ip: bytes, proto: int, payload: bytes,
                 source: bytes | None = None) -> bytes: ...

    def tcp_reset(self, frame: bytes, ip: Ip) -> list[bytes]: ...


RTO, MAX_TRIES = 1.0, 5

Key = tuple[bytes, int]  # (peer IP, peer port)
#: The application: (key, in-order bytes, now) -> bytes to send now (b"" for nothing yet).
App = Callable[[Key, bytes, float], bytes]


@dataclass(slots=True)
class Connection:
    station: Station[Any]
    """Where the SYN came (Rule 5): it builds our segments' frames."""
    local_ip: bytes
    """The address the SYN was sent to: ours on this connection."""
    mss: int
    """The most data we put in one segment (Rule 1)."""
    peer_mac: bytes
    peer_ip: bytes
    peer_port: int
    snd_una: int
    snd_nxt: int
    rcv_nxt: int
    established: bool = False
    peer_closed: bool = False
    fin_sent: bool = False
    unacked: bytes = b""
    rto: float = RTO
    retransmit_at: float | None = None
    tries: int = 0
    last_seen: float = 0.0
    out: list[bytes] = field(default_factory=list)


class TcpServer:
    def __init__(self, port: int, app: App, max_conns: int = 128, idle: float = 10.0) -> None:
        self.port = port
        self.app = app
        self.max_conns = max_conns
        self.idle = idle
        self.conns: dict[Key, Connection] = {}
        self.refused = 0

    def handle_segment(self, gateway: Station[Ip], frame: bytes, ip: Ip,
                       now: float) -> list[bytes]:
        """Frames answering one segment: steps per Rules 1-6."""
        sport, _, seq, ack, flags, _, start, data, end = decode_tcp(frame, ip)
        if not checksum_ok(frame, ip):  # Rule 6
            gateway.counters["tcp-bad-checksum"] += 1
            return []
        payload = frame[data:end]
        key = (ip.src, sport)
        conn = self.conns.get(key)
        # Rule 4: RST
        if flags & RST:
            self.conns.pop(key, None)
            return []
        # Rule 1: SYN opens
        if conn is None:
            if not flags & SYN or flags & ACK:
                return gateway.tcp_reset(frame, ip)
            if len(self.conns) >= self.max_conns:
                self.refused += 1
                return gateway.tcp_reset(frame, ip)
            iss = secrets.randbits(32)
            ours = min(gateway.mtu - TCP_HEADERS[len(ip.dst)], 0xFFFF)  # Rule 1
            theirs, _ = decode_syn_options(frame[start + 20:data])
            conn = Connection(gateway, ip.dst, max(MIN_MSS, min(ours, theirs)), frame[6:12],
                              ip.src, sport, iss, iss + 1, seq + 1, last_seen=now)
            self.conns[key] = conn
            gateway.counters["tcp-connections"] += 1
            mss = struct.pack("!BBH", 2, 4, ours)
            return [self._segment(conn, iss, SYN | ACK, options=mss)]
        conn.last_seen = now
        if flags & SYN:  # a retransmitted SYN: say SYN-ACK again
            return [self._segment(conn, conn.snd_una, SYN | ACK)] if not conn.established else []
        out: list[bytes] = []
        if flags & ACK:
            self._acknowledged(conn, ack, now)
        # Rule 2: in-order data only
        if payload or flags & FIN:
            if seq != conn.rcv_nxt:
                return [self._segment(conn, conn.snd_nxt, ACK)]
            conn.rcv_nxt += len(payload)
            if flags & FIN:
                conn.rcv_nxt += 1
                conn.peer_closed = True
            answer = self.app(key, payload, now) if payload else b""
            out += self._send(conn, answer, now)
            if not answer:
                out.append(self._segment(conn, conn.snd_nxt, ACK))
        out += self._maybe_fin(conn, now)
        return out

    def send(self, key: Key, data: bytes, now: float) -> list[bytes]:
        """Data the application produced later (an upstream answered)."""
        conn = self.conns.get(key)
        if conn is None or conn.fin_sent:
            return []
        return self._send(conn, data, now) + self._maybe_fin(conn, now)

    def _send(self, conn: Connection, data: bytes, now: float) -> list[bytes]:
        if not data:
            return []
        segments = []
        for i in range(0, len(data), conn.mss):
            chunk = data[i:i + conn.mss]
            segments.append(self._segment(conn, conn.snd_nxt, PSH | ACK, chunk))
            conn.snd_nxt += len(chunk)
        conn.unacked += data
        if conn.retransmit_at is None:
            conn.retransmit_at = now + conn.rto
        return segments

    def _maybe_fin(self, conn: Connection, now: float) -> list[bytes]:
        if conn.peer_closed and not conn.unacked and not conn.fin_sent:
            conn.fin_sent = True
            fin = self._segment(conn, conn.snd_nxt, FIN | ACK)
            conn.snd_nxt += 1
            conn.retransmit_at = now + conn.rto
            return [fin]
        return []

    def _acknowledged(self, conn: Connection, ack: int, now: float) -> None:
        acked = (ack - conn.snd_una) & 0xFFFFFFFF
        if acked == 0 or acked > (conn.snd_nxt - conn.snd_una) & 0xFFFFFFFF:
            return
        if not conn.established:
            conn.established = True
            acked -= 1  # our SYN
            conn.snd_una += 1
        conn.unacked = conn.unacked[acked:]
        conn.snd_una = ack
        conn.tries, conn.rto = 0, RTO
        conn.retransmit_at = now + conn.rto if conn.unacked else None
        if conn.fin_sent and conn.snd_una == conn.snd_nxt:
            self.conns.pop((conn.peer_ip, conn.peer_port), None)  # our FIN acked: closed

    def _segment(self, conn: Connection, seq: int, flags: int, payload: bytes = b"",
                 options: bytes = b"") -> bytes:
        tcp = encode_tcp(conn.local_ip, conn.peer_ip, self.port, conn.peer_port, seq,
                         conn.rcv_nxt, flags, payload, options)
        return conn.station.ip_frame(conn.peer_mac, conn.peer_ip, PROTO_TCP, tcp,
                                     source=conn.local_ip)

    def next_deadline(self) -> float | None:
        if not self.conns:
            return None
        times = [c.retransmit_at for c in self.conns.values() if c.retransmit_at is not None]
        times += [c.last_seen + self.idle for c in self.conns.values()]
        return min(times, default=None)

    def expire(self, now: float) -> list[bytes]:
        """Rule 3: retransmit what is due; drop connections that gave up or went idle."""
        out: list[bytes] = []
        for key, conn in list(self.conns.items()):
            if now >= conn.last_seen + self.idle or conn.tries >= MAX_TRIES:
                del self.conns[key]
                out.append(self._segment(conn, conn.snd_nxt, RST | ACK))
                continue
            if conn.retransmit_at is None or now < conn.retransmit_at:
                continue
            conn.tries += 1
            conn.rto *= 2
            conn.retransmit_at = now + conn.rto
            if not conn.established:
                out.append(self._segment(conn, conn.snd_una, SYN | ACK))
            elif conn.unacked:
                out.append(self._segment(conn, conn.snd_una, PSH | ACK, conn.unacked[:conn.mss]))
            elif conn.fin_sent:
                out.append(self._segment(conn, conn.snd_nxt - 1, FIN | ACK))
        return out
