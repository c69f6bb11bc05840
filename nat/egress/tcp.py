"""TCP through host sockets (``nat.egress`` Rules 3 and 6): each guest connection is a host
TCP socket and a ``nat.tcp_splice.Splice``; this adapter does what the splice asks of the
socket and hands its packets to the guest."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from nat.egress.frames import UNKNOWN_MACS, ip_packet
from nat.egress.side import HostSide
from nat.egress.sockets import UNREACHABLE_CODE, UNREACHABLE_CODE6, ask_errors, local_address
from nat.tcp_splice import Splice
from nat.translate import admin_prohibited, icmp_error
from wire.errors import MalformedPacket
from wire.ipv6 import Ipv6
from wire.packets import PROTO_TCP, Ipv4, address_port
from wire.tcp import TCP_HEADERS, reset_for

READ_CHUNK: Final = 256 * 1024
RECENT, LINGER = 1024, 30.0  # closed TCP flows still listed, and for how long
FLOW_BUFFER, MIN_BUFFER = 1 << 20, 64 << 10  # bytes a TCP flow may hold each way (Rule 6)

Key = tuple[bytes, int, bytes, int]  # guest address and port, remote address and port


@dataclass(eq=False, slots=True)
class TcpFlow:
    key: Key
    splice: Splice
    sock: socket.socket
    connecting: bool
    inbound: bool = False
    dirty: bool = False
    held: int = 0  # bytes the splice held at the last sync (Rule 6)
    reading: bool = False
    writing: bool = False
    host_eof: bool = False
    timer: asyncio.TimerHandle | None = None
    deadline: float | None = None
    icmp6: list[bytes] | None = None  # a failed IPv6 connect: its ICMPv6 error (v6 Rule 5)


class TcpAdapter:
    def __init__(self, side: HostSide, established: float, transitory: float,
                 buffer_budget: int) -> None:
        self.side = side
        self.timeouts = {"established_timeout": established, "transitory_timeout": transitory}
        self.buffer_budget = buffer_budget
        self.buffered = 0  # bytes all TCP flows hold (Rule 6)
        self.flows: dict[Key, TcpFlow] = {}
        self.recent: dict[Key, tuple[dict[str, Any], float]] = {}
        self._dirty: list[TcpFlow] = []  # flows with guest segments not yet synced (Rule 3)
        #: Where an IPv6 destination is on the host (``nat.egress.v6`` Rule 3), when guests
        #: have IPv6.
        self.real6: Callable[[bytes], str] = lambda dst: socket.inet_ntop(socket.AF_INET6, dst)
        #: What an IPv6 guest's SYN gets when the host's connect fails with an error (not
        #: refused): (SYN, socket, error) -> the ICMPv6 error to the guest, none to reset it
        #: (``nat.egress.v6`` Rule 5).
        self.connect_failed6: Callable[[bytes, socket.socket, int], list[bytes]] = \
            lambda *_: []
        #: An IPv6 guest's SYN no host socket could be made for, and why: counted and answered
        #: (``nat.egress.v6`` Rule 8).
        self.no_socket6: Callable[[bytes, OSError], None] = lambda *_: None

    def __len__(self) -> int:
        return len(self.flows)

    def from_guest(self, packet: bytes, ip: Ipv4 | Ipv6, now: float) -> None:
        """A guest's TCP segment (IPv4, or IPv6 from ``nat.egress.v6``)."""
        side = self.side
        if ip.end - ip.start < 20:
            raise MalformedPacket("TCP header truncated")
        sport, dport = struct.unpack_from("!HH", packet, ip.start)
        key = (ip.src, sport, ip.dst, dport)
        flow = self.flows.get(key)
        if flow is not None:
            if flow.splice.macs[0] == 0xFF:  # an inbound flow hears its guest the first time
                flow.splice.macs = packet[16:22] + packet[10:16]
            flow.splice.from_guest(packet, now, ip)
            if not flow.dirty:  # synced once after the batch being read (Rule 3)
                flow.dirty = True
                if not self._dirty:
                    side.loop.call_soon(self._flush)
                self._dirty.append(flow)
            return
        flags = packet[ip.start + 13]
        six = isinstance(ip, Ipv6)
        if flags & 0x12 != 0x02 and six:
            side.counters["tcp6-no-flow"] += 1  # (an IPv6 RST is not built here yet)
            return
        if flags & 0x12 != 0x02 and isinstance(ip, Ipv4):  # not a SYN: nobody here
            reset = reset_for(ip.dst, packet, ip)  # (RFC 9293 3.10.7.1)
            if reset is not None:
                side.counters["tcp-resets"] += 1
                side.emit([ip_packet(ip.dst, ip.src, PROTO_TCP, reset)])
            return
        if side.full(packet, ip.src):
            return
        try:
            sock = self._socket(six)
        except OSError as exc:  # IPv6 off on the host, out of descriptors: as a full table
            if six:
                self.no_socket6(packet, exc)  # (nat.egress.v6 Rule 8)
            else:
                side.counters[f"socket-errors-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
                side.icmp(admin_prohibited(packet, side.gateway_ip))
            return
        splice = Splice.outbound(packet, now, ip=ip, mss=side.mtu - TCP_HEADERS[len(ip.dst)],
                                 buffer=self._flow_buffer(),
                                 established_timeout=self.timeouts["established_timeout"],
                                 transitory_timeout=self.timeouts["transitory_timeout"])
        splice.macs = packet[16:22] + packet[10:16]  # to the guest, from the gateway
        flow = TcpFlow(key, splice, sock, connecting=True)
        self.flows[key] = flow
        side.quota.hold(ip.src)  # Rule 6
        side.counters["tcp-connects"] += 1
        err = sock.connect_ex((self.real6(ip.dst) if six else side.real(ip.dst), dport))
        if err in (0, errno.EINPROGRESS):
            side.loop.add_writer(sock.fileno(), self._connected, flow)
            flow.writing = True
        else:
            self._connect_result(flow, err)
        self._sync(flow)

    @staticmethod
    def _socket(six: bool) -> socket.socket:
        """A non-blocking host TCP socket for a guest's connection (closed again if it cannot
        be set up)."""
        sock = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if six:  # the ICMPv6 error that fails the connect, if one does (nat.egress.v6 Rule 5)
                ask_errors(sock)
        except OSError:
            sock.close()
            raise
        return sock

    def open_inbound(self, key: Key, sock: socket.socket, now: float) -> bool:
        """A connection a forward accepted (Rule 5): a splice that opens toward the guest (an
        IPv6 one for a 16-byte guest address); False when the flow exists or the table is
        full."""
        side = self.side
        old = self.flows.get(key)
        if old is not None and old.inbound and _same_local(old.sock, sock):
            # the kernel accepted the same peer address and port on the same listening
            # address again, so the peer's old connection is over on the host side; the
            # guest's end of it is reset (another listener's is a clash: refused below)
            side.counters["tcp-forward-peer-port-reused"] += 1
            old.splice.host_reset(now)
            self._sync(old)
        if key in self.flows or not side.has_room():
            return False
        mss = side.mtu - TCP_HEADERS[len(key[0])]  # IPv6's header is 20 bytes more
        splice = Splice.inbound(key[0], key[1], key[2], key[3], now, mss=mss,
                                buffer=self._flow_buffer(), **self.timeouts)
        splice.macs = UNKNOWN_MACS
        flow = TcpFlow(key, splice, sock, connecting=False, inbound=True)
        self.flows[key] = flow
        self._sync(flow)
        return True

    def _flush(self) -> None:
        """Sync the flows guest segments arrived for in the last batch: their bytes go to the
        host in one send, and each guest gets one ACK carrying the window after it."""
        flows, self._dirty = self._dirty, []
        for flow in flows:
            flow.dirty = False
            if flow.sock.fileno() >= 0:
                self._sync(flow)

    def _connected(self, flow: TcpFlow) -> None:
        self.side.loop.remove_writer(flow.sock.fileno())
        flow.writing = False
        self._connect_result(flow, flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        self._sync(flow)

    def _connect_result(self, flow: TcpFlow, err: int) -> None:
        now = self.side.loop.time()
        counters = self.side.counters
        flow.connecting = False
        splice = flow.splice
        icmp6: list[bytes] = []
        if splice.v6:  # nat.egress.v6 Rule 5: the error that failed the connect, if any
            if err not in (0, errno.ECONNREFUSED) and splice.syn_packet is not None:
                icmp6 = self.connect_failed6(splice.syn_packet, flow.sock, err)
            ask_errors(flow.sock, False)  # no more (connected, errors stay soft; the queue empties)
        if err == 0:
            splice.host_connected(now)
        elif err == errno.ECONNREFUSED:
            counters["tcp-refused"] += 1
            splice.host_refused(now)
        elif splice.v6:  # the ICMPv6 error quoting the SYN, or a RST if there is none
            counters[f"tcp6-connect-{errno.errorcode.get(err, 'error')}"] += 1
            if icmp6:
                flow.icmp6 = icmp6
                splice.host_unreachable(UNREACHABLE_CODE6.get(err, 3), now)
            else:
                splice.host_refused(now)
        else:
            counters[f"tcp-connect-{errno.errorcode.get(err, 'error')}"] += 1
            splice.host_unreachable(UNREACHABLE_CODE.get(err, 1), now)

    def _readable(self, flow: TcpFlow) -> None:
        splice = flow.splice
        now = self.side.loop.time()
        for _ in range(4):
            room = splice.room()
            if room <= 0 or splice.closed:
                break
            try:
                data = flow.sock.recv(min(room, READ_CHUNK))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                splice.host_reset(now)
                break
            if not data:
                flow.host_eof = True
                splice.host_eof(now)
                break
            splice.host_data(data, now)
            if len(data) < min(room, READ_CHUNK):
                break
        self._sync(flow)

    def _writable(self, flow: TcpFlow) -> None:
        self.side.loop.remove_writer(flow.sock.fileno())
        flow.writing = False
        self._sync(flow)

    def _timer(self, flow: TcpFlow) -> None:
        flow.timer = None
        flow.deadline = None
        flow.splice.expire(self.side.loop.time())
        self._sync(flow)

    def _flow_buffer(self) -> int:
        return FLOW_BUFFER if self.buffered < self.buffer_budget else MIN_BUFFER  # Rule 6

    def _sync(self, flow: TcpFlow) -> None:
        """Do what the splice wants done on the host socket, and send what it has for the guest."""
        side = self.side
        loop = side.loop
        splice, sock = flow.splice, flow.sock
        now = loop.time()
        splice.buffer = self._flow_buffer()
        if splice.to_host and not flow.connecting and not flow.writing and not splice.closed:
            try:
                sent = sock.send(splice.to_host)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = -1
                splice.host_reset(now)
            if sent >= 0:
                if sent:
                    splice.host_sent(sent, now)
                if splice.to_host:  # the socket is full: wait until it takes more
                    loop.add_writer(sock.fileno(), self._writable, flow)
                    flow.writing = True
        if splice.shutdown_host:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            splice.host_shutdown_done()
        packets = splice.drain()
        if packets:
            (side.emit if splice.macs[0] == 0xFF else side.deliver)(packets)
        if splice.closed:
            if splice.icmp_unreachable is not None and flow.icmp6:  # an IPv6 SYN's error
                side.emit(flow.icmp6)
            elif splice.icmp_unreachable is not None and splice.syn_packet is not None:
                side.icmp(icmp_error(splice.syn_packet, 3, splice.icmp_unreachable,
                                     flow.key[2]))
            self.close_flow(flow, abort=splice.abort_host)
            return
        held = splice.held()  # Rule 6
        self.buffered += held - flow.held
        flow.held = held
        want_read = not flow.connecting and not flow.host_eof and splice.room() > 0
        if want_read != flow.reading:
            if want_read:
                loop.add_reader(sock.fileno(), self._readable, flow)
            else:
                loop.remove_reader(sock.fileno())
            flow.reading = want_read
        deadline = splice.next_deadline()
        if deadline != flow.deadline:
            if flow.timer is not None:
                flow.timer.cancel()
            flow.timer = None if deadline is None else loop.call_at(deadline, self._timer, flow)
            flow.deadline = deadline

    def close_flow(self, flow: TcpFlow, abort: bool) -> None:
        loop = self.side.loop
        self.buffered -= flow.held
        flow.held = 0
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
            if not flow.inbound:  # Rule 6: a forward's flows spend no guest's quota
                self.side.quota.release(flow.key[0])
            # listed a little longer, as conntrack -L shows TIME_WAIT: a teaching aid only
            if len(self.recent) >= RECENT:
                self.recent.pop(next(iter(self.recent)))
            row = self.row(flow, loop.time())
            row["state"] = "closed" + (" (reset)" if abort or flow.splice.failed else "")
            self.recent[flow.key] = (row, loop.time() + LINGER)
        if flow.timer is not None:
            flow.timer.cancel()
        fd = flow.sock.fileno()
        if fd >= 0:
            if flow.reading:
                loop.remove_reader(fd)
            if flow.writing:
                loop.remove_writer(fd)
            if abort:  # SO_LINGER 0: close() sends RST (RFC 9293 3.10.4 ABORT)
                flow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
        flow.sock.close()

    def expire(self, now: float) -> None:
        """Closed flows stop being listed (the flows themselves time themselves)."""
        self.recent = {k: v for k, v in self.recent.items() if v[1] > now}

    def row(self, flow: TcpFlow, now: float) -> dict[str, Any]:
        sp, (gip, gport, rip, rport) = flow.splice, flow.key
        half = "+guest-fin" if sp.guest_fin else ""
        half += "+host-fin" if sp.host_fin else ""
        return {"proto": "tcp", "kind": "host-forward" if flow.inbound else "host",
                "state": sp.state + half,
                "original": f"{address_port(gip, gport)} -> {address_port(rip, rport)}",
                "reply": f"{address_port(rip, rport)} -> {local_address(flow.sock)}",
                "seconds_left": round(sp.expires_at(now) - now),
                "packets": [sp.packets_from_guest, sp.packets_to_guest],
                "bytes": [sp.bytes_from_guest, sp.bytes_to_guest]}

    def rows(self, now: float) -> list[dict[str, Any]]:
        rows = [self.row(flow, now) for flow in self.flows.values()]
        return rows + [row | {"seconds_left": round(until - now)}
                       for row, until in self.recent.values()]

    def close(self) -> None:
        for flow in list(self.flows.values()):
            self.close_flow(flow, abort=True)


def _same_local(old: socket.socket, new: socket.socket) -> bool:
    """Whether two accepted sockets share their local address and port (a closed one: yes)."""
    try:
        return bool(old.getsockname() == new.getsockname())
    except OSError:
        return True
