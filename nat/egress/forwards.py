"""Port forwards on the host uplink (``nat.egress`` Rule 5): each ``[[forward]]`` port is a
listening host socket.  An accepted TCP connection becomes a splice opened toward the guest; a
UDP datagram goes to the guest from its real source, and the guest's answers leave by the
listening socket (a session, timed out like a UDP mapping)."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from typing import Any, Final

from nat.egress.side import HostSide
from nat.egress.sockets import local_address
from nat.egress.tcp import TcpAdapter
from nat.egress.udp import UdpAdapter
from wire.packets import PROTO_TCP, Ipv4

BATCH: Final = 64


@dataclass(eq=False, slots=True)
class Listener:
    proto: int
    listen: str
    port: int
    guest_ip: bytes
    guest_port: int
    sock: socket.socket


@dataclass(eq=False, slots=True)
class UdpSession:
    """A remote peer talking to a guest through a UDP forward."""

    listener: Listener
    remote: tuple[Any, ...]
    expires: float
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])


class Forwards:
    def __init__(self, side: HostSide, tcp: TcpAdapter, udp: UdpAdapter,
                 udp_timeout: float) -> None:
        self.side = side
        self.tcp = tcp
        self.udp = udp
        self.udp_timeout = udp_timeout
        self.listeners: dict[tuple[int, str, int], Listener] = {}
        self.sessions: dict[tuple[bytes, int, bytes, int], UdpSession] = {}
        udp.answer_session = self.answer

    def add(self, proto: int, ports: range, listen: str, guest_ip: bytes,
            guest_port: int) -> list[Listener]:
        """Listen on every port of ``ports``; all or nothing (OSError names the failure)."""
        opened: list[Listener] = []
        try:
            for offset, port in enumerate(ports):
                if (proto, listen, port) in self.listeners:
                    raise OSError(errno.EADDRINUSE, f"{listen} port {port} is already forwarded")
                family = socket.AF_INET6 if ":" in listen else socket.AF_INET
                kind = socket.SOCK_STREAM if proto == PROTO_TCP else socket.SOCK_DGRAM
                sock = socket.socket(family, kind)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((listen, port))
                    if kind == socket.SOCK_STREAM:
                        sock.listen(128)
                except OSError as exc:
                    sock.close()
                    hint = ("; ports below 1024 need CAP_NET_BIND_SERVICE, or sysctl "
                            "net.ipv4.ip_unprivileged_port_start" if exc.errno == errno.EACCES
                            else "")
                    raise OSError(exc.errno, f"cannot listen on {listen} port {port}: "
                                  f"{exc.strerror}{hint}") from None
                sock.setblocking(False)
                opened.append(Listener(proto, listen, port, guest_ip, guest_port + offset, sock))
        except OSError:
            for listener in opened:
                listener.sock.close()
            raise
        for listener in opened:
            self.listeners[(proto, listen, listener.port)] = listener
            handler = self._accept if proto == PROTO_TCP else self._datagrams
            self.side.loop.add_reader(listener.sock.fileno(), handler, listener)
        return opened

    def remove(self, proto: int, ports: range, listen: str) -> None:
        """Stop listening; connections and sessions already open go on."""
        missing = [p for p in ports if (proto, listen, p) not in self.listeners]
        if missing:
            raise KeyError(f"no forward on {listen} port {missing[0]}")
        for port in ports:
            listener = self.listeners.pop((proto, listen, port))
            self.side.loop.remove_reader(listener.sock.fileno())
            if proto == PROTO_TCP:
                listener.sock.close()  # UDP sessions still answer through it; closed at expiry

    def _accept(self, listener: Listener) -> None:
        side = self.side
        now = side.loop.time()
        for _ in range(BATCH):
            try:
                sock, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                side.counters["accept-errors"] += 1
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = (listener.guest_ip, listener.guest_port, side.seen(peer[0]), peer[1])
            if not self.tcp.open_inbound(key, sock, now):
                side.counters["drop-forward-busy"] += 1
                sock.close()
                continue
            side.counters["tcp-forwarded"] += 1

    def _datagrams(self, listener: Listener) -> None:
        side = self.side
        now = side.loop.time()
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                data, peer = listener.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            src = side.seen(peer[0])
            key = (listener.guest_ip, listener.guest_port, src, peer[1])
            session = self.sessions.get(key)
            if session is None:
                if len(self.sessions) >= side.max_flows:
                    side.counters["drop-forward-busy"] += 1
                    continue
                session = self.sessions[key] = UdpSession(listener, peer, 0.0)
            session.expires = now + self.udp_timeout
            session.packets[0] += 1
            session.bytes[0] += len(data)
            out.extend(side.datagram_to_guest(src, peer[1], listener.guest_ip,
                                              listener.guest_port, data))
        if out:
            side.emit(out)

    def answer(self, packet: bytes, ip: Ipv4, sport: int, dport: int, payload: bytes,
               now: float) -> bool:
        """A guest's datagram to a forward's peer leaves by the listening socket."""
        session = self.sessions.get((ip.src, sport, ip.dst, dport))
        if session is None:
            return False
        self.udp.send(session.listener.sock, payload, session.remote, packet)
        session.expires = now + self.udp_timeout
        session.packets[1] += 1
        session.bytes[1] += len(payload)
        return True

    def expire(self, now: float) -> None:
        for peer, session in list(self.sessions.items()):
            if session.expires <= now:
                del self.sessions[peer]
                listener = session.listener
                if (listener.sock.fileno() >= 0 and self.listeners.get(
                        (listener.proto, listener.listen, listener.port)) is not listener
                        and not any(s.listener is listener for s in self.sessions.values())):
                    listener.sock.close()

    def rows(self, now: float) -> list[dict[str, Any]]:
        def ep(address: bytes, port: int) -> str:
            return f"{socket.inet_ntoa(address)}:{port}"

        return [{"proto": "udp", "kind": "host-forward", "state": "mapped",
                 "original": f"{s.remote[0]}:{s.remote[1]} -> {local_address(s.listener.sock)}",
                 "reply": f"{ep(gip, gport)} -> {ep(rip, rport)}",
                 "seconds_left": round(s.expires - now), "packets": list(s.packets),
                 "bytes": list(s.bytes)}
                for (gip, gport, rip, rport), s in self.sessions.items()]

    def close(self) -> None:
        for listener in self.listeners.values():
            self.side.loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        self.listeners.clear()
        for session in self.sessions.values():
            session.listener.sock.close()
        self.sessions.clear()
