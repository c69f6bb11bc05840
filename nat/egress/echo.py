"""ICMP echo through the host (``nat.egress`` Rule 2): an unprivileged ping socket per guest
echo flow where ``net.ipv4.ping_group_range`` allows, else one raw socket shared by all, else
none (echo requests get ICMP 3/13 and one warning is logged)."""

from __future__ import annotations

import errno
import logging
import socket
import struct
from typing import Final

from nat.egress.flows import EchoFlow, FlowTable
from nat.egress.frames import U16, fragments
from nat.egress.side import HostSide
from nat.egress.sockets import ask_errors, open_ping, read_icmp_error
from nat.translate import admin_prohibited
from wire.packets import (
    ICMP_ECHO_REQUEST,
    PROTO_ICMP,
    Ipv4,
    decode_icmp,
    encode_icmp,
    encode_ipv4,
    ipv4_ihl,
)

log = logging.getLogger("vswitch.egress")
BATCH: Final = 64


class EchoAdapter:
    def __init__(self, side: HostSide, flows: FlowTable) -> None:
        self.side = side
        self.flows = flows
        self._raw_ttl = -1  # the raw socket's IP_TTL now (-1: not set yet)
        self.mode, self._raw = self._open_ping()
        if self.mode == "off":
            log.warning("ping to the outside is off: this user may not open ping sockets and "
                        "has no CAP_NET_RAW.  Allow it with sysctl net.ipv4.ping_group_range="
                        "\"0 2147483647\" (or include this user's group)")

    def _open_ping(self) -> tuple[str, socket.socket | None]:
        return open_ping(socket.AF_INET, socket.IPPROTO_ICMP, self._raw_readable,
                         self.side.loop)

    def from_guest(self, packet: bytes, ip: Ipv4, now: float) -> None:
        side = self.side
        icmp = decode_icmp(packet, ip)
        if icmp.type != ICMP_ECHO_REQUEST:
            side.counters["drop-icmp-not-echo"] += 1  # errors about host flows are the host's
            return
        ident, seq = icmp.word >> 16, icmp.word & 0xFFFF
        data = packet[icmp.start + 8:icmp.end]
        if self.mode == "off":
            side.counters["drop-ping-unavailable"] += 1
            side.icmp(admin_prohibited(packet, side.gateway_ip))
            return
        flow = self.flows.echo.get((ip.src, ident))
        if flow is None:
            if side.full(packet, ip.src):
                return
            try:
                flow = self._open(ip.src, ident, now)
            except OSError as exc:  # EMFILE, or ping sockets no longer allowed after a drop
                side.counters[f"socket-errors-{errno.errorcode.get(exc.errno or 0, 'error')}"] \
                    += 1
                side.icmp(admin_prohibited(packet, side.gateway_ip))
                return
        self.flows.echo_out(flow, ip.dst, len(data), now)
        request = encode_icmp(8, 0, struct.pack("!HH", flow.host_ident, seq) + data)
        sock = flow.handle or self._raw
        assert sock is not None
        ttl = max(1, ip.ttl - 1)  # as for UDP (Rule 1): ping -t and traceroute -I see beyond
        if ttl != (flow.ttl if flow.handle is not None else self._raw_ttl):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            if flow.handle is not None:
                flow.ttl = ttl
            else:
                self._raw_ttl = ttl
        try:
            sock.sendto(request, (side.real(ip.dst), 0))
        except OSError as exc:
            side.counters[f"ping-send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1

    def _open(self, guest_ip: bytes, ident: int, now: float) -> EchoFlow:
        if self.mode != "ping-socket":
            return self.flows.add_echo(guest_ip, ident, None, None, now)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        try:
            sock.setblocking(False)
            ask_errors(sock)  # Rule 2: errors, to pass on
            sock.bind(("0.0.0.0", 0))
        except OSError:
            sock.close()
            raise
        host_ident = sock.getsockname()[1]  # the identifier the kernel gave this socket
        flow = self.flows.add_echo(guest_ip, ident, sock, host_ident, now)
        self.side.loop.add_reader(sock.fileno(), self._ping_readable, flow)
        return flow

    def _ping_readable(self, flow: EchoFlow) -> None:
        sock = flow.handle
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                message, (host, _) = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error for one of the guest's echo requests
                error = read_icmp_error(sock)
                if error is not None:
                    sent, dest, icmp_type, code, info, reporter = error
                    out.extend(self._error(flow, socket.inet_aton(dest[0]), sent, icmp_type,
                                           code, info, reporter))
                continue
            out.extend(self._reply(flow, self.side.seen(host), message))
        if out:
            self.side.emit(out)

    def _raw_readable(self) -> None:
        assert self._raw is not None
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                datagram, (host, _) = self._raw.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            ihl = ipv4_ihl(datagram, 0) if datagram else 0
            message = datagram[ihl:]
            if len(message) >= 36 and message[0] in (3, 11, 12):  # an error quoting an echo?
                out.extend(self._raw_error(message, host))
                continue
            if len(message) < 8 or message[0] != 0:
                continue
            flow = self.flows.echo_by_host_ident.get(U16.unpack_from(message, 4)[0])
            if flow is not None:
                out.extend(self._reply(flow, self.side.seen(host), message))
        if out:
            self.side.emit(out)

    def _raw_error(self, message: bytes, reporter: str) -> list[bytes]:
        """An ICMP error the raw socket heard: passed on if it quotes one of our echo requests
        to a host the guest pinged."""
        inner = message[8:]
        inner_ihl = ipv4_ihl(inner, 0)
        if inner[9] != PROTO_ICMP or len(inner) < inner_ihl + 8 or inner[inner_ihl] != 8:
            return []
        flow = self.flows.echo_by_host_ident.get(U16.unpack_from(inner, inner_ihl + 4)[0])
        dst = inner[16:20]
        if flow is None or self.side.seen(socket.inet_ntoa(dst)) not in flow.peers:
            return []
        info = struct.unpack_from("!I", message, 4)[0]
        return self._error(flow, dst, inner[inner_ihl:], message[0], message[1], info,
                           reporter)

    def _error(self, flow: EchoFlow, dst: bytes, sent: bytes, icmp_type: int, code: int,
               info: int, reporter: str) -> list[bytes]:
        """Rule 2: an ICMP error about an echo request, quoting it as the guest sent it."""
        if len(sent) < 8:
            return []
        request = sent[:4] + U16.pack(flow.guest_ident) + sent[6:]
        seen = self.side.seen(socket.inet_ntoa(dst))
        quoted = encode_ipv4(flow.guest_ip, seen, PROTO_ICMP, request)
        return self.side.error_to_guest(flow.guest_ip, quoted, reporter, icmp_type, code, info)

    def _reply(self, flow: EchoFlow, src: bytes, message: bytes) -> list[bytes]:
        """An echo reply for a guest: only from a host it pinged (the shared raw socket hears
        every reply in the namespace, another program's with the same identifier too)."""
        if len(message) < 8 or message[0] != 0 or not self.flows.echo_in(flow, src,
                                                                          len(message) - 8):
            return []
        reply = encode_icmp(0, 0, U16.pack(flow.guest_ident) + message[6:])
        return fragments(src, flow.guest_ip, PROTO_ICMP, reply, self.side.next_ident(),
                         self.side.mtu)

    def close_flow(self, flow: EchoFlow) -> None:
        if flow.handle is not None:
            self.side.loop.remove_reader(flow.handle.fileno())
            flow.handle.close()

    def close(self) -> None:
        if self._raw is not None:
            self.side.loop.remove_reader(self._raw.fileno())
            self._raw.close()
            self._raw = None
