"""Port forwards on the host uplink (``nat.egress`` Rule 5): each ``[[forward]]`` port is a
listening host socket, IPv4 or IPv6 whatever the guest's family.  An accepted TCP connection
becomes a splice opened toward the guest; a UDP datagram goes to the guest from its peer, and
the guest's answers leave by the listening socket (a session, timed out like a UDP mapping).

How a peer appears to the guest:
  an IPv4 guest sees an IPv4 peer as itself, and loopback and IPv6 peers as the host address
  (``HostSide.seen``, ``nat.egress`` Rule 4);
  an IPv6 guest (a forward to an address of the guest prefix, ``nat.egress.v6``) sees an IPv6
  peer as itself, ``::1`` as the gateway's IPv6 address (``nat.egress.v6`` Rule 3), and every
  other peer, IPv4 (or IPv4-mapped), link-local, as the gateway's IPv6 address, as passt and
  slirp show host connections coming from the gateway: an IPv4 address cannot be the source
  of an IPv6 packet, and Linux TCP drops segments from IPv4-mapped sources.  The guest's
  answers to the gateway's address reach us through the gateway (``nat.gateway6`` Rule 7).
Peers shown as one address share its port space: a second peer with the same port, while the
first one's flow or session lasts, is refused (TCP) or taken for the first (UDP).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from typing import Any, Final

from nat.egress.side import HostSide
from nat.egress.sockets import local_address
from nat.egress.tcp import TcpAdapter
from nat.egress.udp import UdpAdapter
from nat.egress.v6 import HostEgress6, forwardable6
from wire.ipv6 import Ipv6
from wire.packets import PROTO_TCP, Ipv4, address_port

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
                 udp_timeout: float, v6: HostEgress6 | None = None) -> None:
        """``v6``: the IPv6 side of the host uplink, when guests have IPv6 (forwards to IPv6
        guests need it)."""
        self.side = side
        self.tcp = tcp
        self.udp = udp
        self.v6 = v6
        self.udp_timeout = udp_timeout
        self.listeners: dict[tuple[int, str, int], Listener] = {}
        self.sessions: dict[tuple[bytes, int, bytes, int], UdpSession] = {}
        udp.answer_session = self.answer
        if v6 is not None:
            v6.answer_session = self.answer

    def seen(self, guest_ip: bytes, host: str) -> bytes:
        """How the peer ``host`` (as a socket gives it) appears to the guest (the module's
        rule)."""
        if len(guest_ip) == 4:
            return self.side.seen(host)
        assert self.v6 is not None
        if ":" in host:
            address = self.v6.seen(host)  # ::1 is the gateway's address
            if forwardable6(address):
                return address
        return self.v6.gateway6

    def add(self, proto: int, ports: range, listen: str, guest_ip: bytes,
            guest_port: int) -> list[Listener]:
        """Listen on every port of ``ports``; all or nothing (OSError names the failure;
        ValueError: an IPv6 guest, and guests have no IPv6)."""
        if len(guest_ip) == 16 and self.v6 is None:
            raise ValueError("the guest network has no IPv6 prefix (network.subnet6)")
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
            key = (listener.guest_ip, listener.guest_port,
                   self.seen(listener.guest_ip, peer[0]), peer[1])
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
            src = self.seen(listener.guest_ip, peer[0])
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
            if len(listener.guest_ip) == 4:
                to_guest = side.datagram_to_guest
            else:
                assert self.v6 is not None  # add takes IPv6 guests only with it
                to_guest = self.v6.datagram_to_guest
            out.extend(to_guest(src, peer[1], listener.guest_ip, listener.guest_port, data))
        if out:
            side.emit(out)

    def answer(self, packet: bytes, ip: Ipv4 | Ipv6, sport: int, dport: int, payload: bytes,
               now: float) -> bool:
        """A guest's datagram to a forward's peer leaves by the listening socket."""
        session = self.sessions.get((ip.src, sport, ip.dst, dport))
        if session is None:
            return False
        if isinstance(ip, Ipv6):
            try:
                session.listener.sock.sendto(payload, session.remote)
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, "error")
                self.side.counters[f"udp6-forward-send-{name}"] += 1
        else:
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
        def peer(remote: tuple[Any, ...]) -> str:
            host, port = remote[:2]
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

        return [{"proto": "udp", "kind": "host-forward", "state": "mapped",
                 "original": f"{peer(s.remote)} -> {local_address(s.listener.sock)}",
                 "reply": f"{address_port(gip, gport)} -> {address_port(rip, rport)}",
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
