"""UDP through host sockets (``nat.egress`` Rule 1): one non-blocking UDP socket per guest
endpoint, the flow's bookkeeping in ``FlowTable``."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any, Final

from nat.egress.flows import FlowTable, UdpFlow
from nat.egress.side import HostSide
from nat.egress.sockets import UNREACHABLE_CODE, ask_errors, read_icmp_error
from nat.translate import icmp_error
from wire.ipv6 import Ipv6
from wire.packets import PROTO_UDP, Ipv4, decode_udp, encode_ipv4, encode_udp

BATCH: Final = 64

#: A guest's datagram that may answer a forward's peer: (packet, ip, sport, dport, payload,
#: now) -> True if a forward session took it (``nat.egress.forwards``); IPv4 from this
#: adapter, IPv6 from ``nat.egress.v6``.
SessionAnswer = Callable[[bytes, Ipv4 | Ipv6, int, int, bytes, float], bool]


class UdpAdapter:
    def __init__(self, side: HostSide, flows: FlowTable) -> None:
        self.side = side
        self.flows = flows
        self.answer_session: SessionAnswer = lambda *_: False

    def from_guest(self, packet: bytes, ip: Ipv4, now: float) -> None:
        sport, dport, payload = decode_udp(packet, ip)
        if self.answer_session(packet, ip, sport, dport, payload, now):
            return
        flow = self.flows.udp.get((ip.src, sport))
        if flow is None:
            if self.side.full(packet, ip.src):
                return
            flow = self._open(ip.src, sport, now)
        self.flows.udp_out(flow, ip.dst, dport, len(payload), now)
        sock = flow.handle
        ttl = max(1, ip.ttl - 1)  # the router's hop is taken (Router Rule 3), the host's follow
        if ttl != flow.ttl:  # so a traceroute sees the hops beyond the host (Rule 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            flow.ttl = ttl
        self.send(sock, payload, (self.side.real(ip.dst), dport), packet)

    def send(self, sock: socket.socket, payload: bytes, to: tuple[Any, ...],
             packet: bytes) -> None:
        """Send a guest's datagram; a send the host refuses becomes the ICMP error it means."""
        side = self.side
        try:
            sock.sendto(payload, to)
        except BlockingIOError:
            side.counters["drop-udp-host-busy"] += 1
        except OSError as exc:
            side.counters[f"udp-send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
            code = UNREACHABLE_CODE.get(exc.errno or 0)
            if code is not None:
                side.icmp(icmp_error(packet, 3, code, side.gateway_ip))

    def _open(self, guest_ip: bytes, guest_port: int, now: float) -> UdpFlow:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        ask_errors(sock)  # Rule 1: ICMP errors, to pass on
        try:
            if guest_port < 1024:
                raise OSError
            sock.bind(("0.0.0.0", guest_port))  # Rule 1: keep the guest's port if free
        except OSError:
            sock.bind(("0.0.0.0", 0))
        flow = self.flows.add_udp(guest_ip, guest_port, sock, now)
        self.side.loop.add_reader(sock.fileno(), self._readable, flow)
        self.side.counters["udp-mappings"] += 1
        return flow

    def _readable(self, flow: UdpFlow) -> None:
        side = self.side
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                data, (host, port) = flow.handle.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error came back for one of the guest's datagrams
                out.extend(self._error(flow))
                continue
            src = side.seen(host)
            if not self.flows.udp_in(flow, src, len(data)):
                side.counters["drop-udp-filtered"] += 1
                continue
            out.extend(side.datagram_to_guest(src, port, flow.guest_ip, flow.guest_port, data))
        if out:
            self.flows.udp_answered(flow, side.loop.time())
            side.emit(out)

    def _error(self, flow: UdpFlow) -> list[bytes]:
        """Rule 1: an ICMP error the host got for a guest's datagram, passed on."""
        error = read_icmp_error(flow.handle)
        if error is None:
            return []
        data, dest, icmp_type, code, info, reporter = error
        dst = self.side.seen(dest[0])
        quoted = encode_ipv4(flow.guest_ip, dst, PROTO_UDP,
                             encode_udp(flow.guest_ip, dst, flow.guest_port, dest[1], data))
        return self.side.error_to_guest(flow.guest_ip, quoted, reporter, icmp_type, code, info)

    def close(self, flow: UdpFlow) -> None:
        self.side.loop.remove_reader(flow.handle.fileno())
        flow.handle.close()
