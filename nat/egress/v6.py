"""The host uplink for guests' IPv6: UDP and ping through the host's own IPv6 sockets, as
``nat.egress`` Rules 1 and 2 do for IPv4.

Rule 1: a guest's UDP endpoint (address, port) is one host IPv6 UDP socket, bound to the
        guest's port when it is free (and not privileged), else to one the kernel picks;
        answers are taken from the hosts the guest sent to (address-dependent filtering,
        ``nat.egress.flows`` Rule 1).  The hop limit leaves one less than the guest sent.
Rule 2: a guest's echo requests leave by an ICMPv6 ping socket per (guest, identifier), or,
        where ping sockets are not allowed, by one shared raw ICMPv6 socket (root) with an
        identifier of ours; replies come back with the guest's identifier.  With neither,
        echo is not taken (the gateway answers no route).
Rule 3: the gateway's IPv6 address stands for the host's ``::1``, and ``::1`` as a source is
        shown to guests as the gateway's address; link-local, multicast, unspecified,
        loopback and IPv4-mapped destinations are never forwarded.
Rule 4: answers go to ``emit`` with their MACs unset: the router addresses them by Neighbor
        Discovery (``nat.router6`` Rule 4).
Rule 5: a guest's IPv6 TCP goes to the TCP adapter (``nat.egress.tcp``), whose translator
        (``nat.tcp_splice``) builds IPv6 segments for an IPv6 guest; a connection the host
        cannot make is reset toward the guest.
Rule 6: forwards to IPv6 guests (``nat.egress.forwards``): a guest's datagram that answers a
        forward's peer leaves by the forward's listening socket, not a Rule 1 socket; the
        forward's datagrams reach the guest as this module's own answers do (Rule 4).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Final

from nat.egress.flows import EchoFlow, FlowTable, UdpFlow
from nat.egress.frames import ZERO_MACS
from nat.egress.side import HostSide
from nat.egress.sockets import open_ping
from nat.egress.tcp import TcpAdapter
from nat.egress.udp import SessionAnswer
from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.ipv6 import (
    ECHO_REPLY,
    ECHO_REQUEST,
    PROTO_ICMPV6,
    Ipv6,
    decode_ipv6,
    decode_udp6,
    encode_icmpv6,
    encode_ipv6,
    encode_udp6,
)
from wire.packets import ETH_P_IPV6, PROTO_TCP, PROTO_UDP, encode_ethernet
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN, is_gso

BATCH: Final = 64
LOOPBACK6: Final = socket.inet_pton(socket.AF_INET6, "::1")


def forwardable6(address: bytes) -> bool:
    """Rule 3: not multicast, link-local, unspecified, loopback or IPv4-mapped."""
    return not (address[0] == 0xFF or address[:2] == b"\xfe\x80" or not any(address)
                or address == LOOPBACK6 or address[:12] == bytes(10) + b"\xff\xff")


class HostEgress6:
    def __init__(self, side: HostSide, gateway_mac: bytes, gateway6: bytes,
                 flows: FlowTable, tcp: TcpAdapter) -> None:
        self.side = side
        self.tcp = tcp  # the IPv4 adapter: its splice speaks IPv6 too
        tcp.real6 = self.real
        self.gateway_mac = gateway_mac
        self.gateway6 = gateway6
        self.flows = flows
        #: Rule 6: set by ``nat.egress.forwards``; True when a forward's session took the
        #: datagram.
        self.answer_session: SessionAnswer = lambda *_: False
        self.mode, self._raw = self._open_ping()

    def _open_ping(self) -> tuple[str, socket.socket | None]:
        return open_ping(socket.AF_INET6, socket.IPPROTO_ICMPV6, self._raw_readable,
                         self.side.loop)

    # -- addresses (Rule 3) --------------------------------------------------------------------

    def real(self, dst: bytes) -> str:
        return "::1" if dst == self.gateway6 else socket.inet_ntop(socket.AF_INET6, dst)

    def seen(self, host: str) -> bytes:
        address = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        return self.gateway6 if address == LOOPBACK6 else address

    # -- from guests ---------------------------------------------------------------------------

    def from_guest(self, packet: bytes, ip: Ipv6, now: float) -> bool:
        """A guest's IPv6 packet (virtio-net header + frame, ``ip`` its header in packet
        offsets, whole: ``nat.router6`` reassembles) for the outside or the host's ``::1``;
        False when this uplink does not take it (the router then answers no route)."""
        counters = self.side.counters
        if not forwardable6(ip.dst) and ip.dst != self.gateway6:
            counters["drop-martian6"] += 1
            return True
        try:
            if ip.proto == PROTO_TCP:  # GSO super-frames go to the splice whole
                self.tcp.from_guest(packet, ip, now)
                return True
            if is_gso(packet):  # UDP GSO: the datagrams it stands for
                for frame in to_plain_frames(packet):
                    plain = NO_OFFLOAD + frame
                    self.from_guest(plain, decode_ipv6(plain, VNET_HDR_LEN + 14), now)
                return True
            if ip.proto == PROTO_UDP:
                self._udp(packet, ip, now)
                return True
            if ip.proto == PROTO_ICMPV6 and ip.end - ip.start >= 8 \
                    and packet[ip.start] == ECHO_REQUEST and self.mode != "off":
                self._echo(packet, ip, now)
                return True
        except MalformedPacket:
            counters["malformed6"] += 1
            return True
        return False

    def _udp(self, frame: bytes, ip: Ipv6, now: float) -> None:
        """Rule 1 (Rule 6 first: an answer to a forward's peer)."""
        sport, dport, payload = decode_udp6(frame, ip)
        if self.answer_session(frame, ip, sport, dport, payload, now):
            return
        flow = self.flows.udp.get((ip.src, sport))
        if flow is None:
            if not self.side.has_room():
                self.side.counters["drop-table-full"] += 1
                return
            flow = self._open_udp(ip.src, sport, now)
        self.flows.udp_out(flow, ip.dst, dport, len(payload), now)
        sock = flow.handle
        hops = max(1, ip.hop_limit - 1)
        if hops != flow.ttl:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
            flow.ttl = hops
        try:
            sock.sendto(payload, (self.real(ip.dst), dport))
        except OSError as exc:
            self.side.counters[f"udp6-send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1

    def _open_udp(self, guest_ip: bytes, guest_port: int, now: float) -> UdpFlow:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            if guest_port < 1024:
                raise OSError
            sock.bind(("::", guest_port))
        except OSError:
            sock.bind(("::", 0))
        flow = self.flows.add_udp(guest_ip, guest_port, sock, now)
        self.side.loop.add_reader(sock.fileno(), self._udp_readable, flow)
        self.side.counters["udp6-mappings"] += 1
        return flow

    def _udp_readable(self, flow: UdpFlow) -> None:
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                data, peer = flow.handle.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.side.counters["udp6-error"] += 1
                continue
            src = self.seen(peer[0])
            if not self.flows.udp_in(flow, src, len(data)):
                self.side.counters["drop-udp6-filtered"] += 1
                continue
            out += self.datagram_to_guest(src, peer[1], flow.guest_ip, flow.guest_port, data)
        if out:
            self.flows.udp_answered(flow, self.side.loop.time())
            self.side.emit(out)

    def _echo(self, frame: bytes, ip: Ipv6, now: float) -> None:
        """Rule 2."""
        ident, seq = struct.unpack_from("!HH", frame, ip.start + 4)
        data = frame[ip.start + 8:ip.end]
        flow = self.flows.echo.get((ip.src, ident))
        if flow is None:
            if not self.side.has_room():
                self.side.counters["drop-table-full"] += 1
                return
            flow = self._open_echo(ip.src, ident, now)
        self.flows.echo_out(flow, ip.dst, len(data), now)
        sock = flow.handle or self._raw
        assert sock is not None
        request = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, flow.host_ident, seq) + data
        try:  # the kernel fills in the checksum of ping and raw ICMPv6 sockets
            sock.sendto(request, (self.real(ip.dst), 0))
        except OSError as exc:
            self.side.counters[f"ping6-send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1

    def _open_echo(self, guest_ip: bytes, ident: int, now: float) -> EchoFlow:
        if self.mode != "ping-socket":
            return self.flows.add_echo(guest_ip, ident, None, None, now)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
        sock.setblocking(False)
        sock.bind(("::", 0))
        flow = self.flows.add_echo(guest_ip, ident, sock, sock.getsockname()[1], now)
        self.side.loop.add_reader(sock.fileno(), self._ping_readable, flow)
        return flow

    def _ping_readable(self, flow: EchoFlow) -> None:
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                message, peer = flow.handle.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            out += self._reply(flow, self.seen(peer[0]), message)
        if out:
            self.side.emit(out)

    def _raw_readable(self) -> None:
        assert self._raw is not None
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                message, peer = self._raw.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            if len(message) < 8 or message[0] != ECHO_REPLY:
                continue  # the raw socket hears every ICMPv6 message of the host
            flow = self.flows.echo_by_host_ident.get(struct.unpack_from("!H", message, 4)[0])
            if flow is not None:
                out += self._reply(flow, self.seen(peer[0]), message)
        if out:
            self.side.emit(out)

    def _reply(self, flow: EchoFlow, src: bytes, message: bytes) -> list[bytes]:
        if len(message) < 8 or message[0] != ECHO_REPLY:
            return []
        if not self.flows.echo_in(flow, src, len(message) - 8):
            self.side.counters["drop-echo6-unasked"] += 1
            return []
        body = struct.pack("!HH", flow.guest_ident, struct.unpack_from("!H", message, 6)[0])
        reply = encode_icmpv6(src, flow.guest_ip, ECHO_REPLY, 0, body + message[8:])
        return self._to_guest(src, flow.guest_ip, PROTO_ICMPV6, reply)

    def datagram_to_guest(self, src: bytes, sport: int, dst: bytes, dport: int,
                          data: bytes) -> list[bytes]:
        """A UDP datagram to a guest, its MACs left for the router (Rule 4)."""
        return self._to_guest(src, dst, PROTO_UDP, encode_udp6(src, dst, sport, dport, data))

    def _to_guest(self, src: bytes, dst: bytes, proto: int, payload: bytes) -> list[bytes]:
        """Rule 4: MACs left for the router to fill in."""
        return [NO_OFFLOAD + encode_ethernet(ZERO_MACS[:6], ZERO_MACS[6:], ETH_P_IPV6,
                                             encode_ipv6(src, dst, proto, payload))]

    # -- timers, listing, shutdown ------------------------------------------------------------

    def close_flow(self, flow: Any) -> None:
        if flow.handle is not None:
            self.side.loop.remove_reader(flow.handle.fileno())
            flow.handle.close()

    def rows(self, now: float) -> list[dict[str, Any]]:
        """``show conntrack`` rows of the IPv6 flows."""
        def text(address: bytes) -> str:
            return socket.inet_ntop(socket.AF_INET6, address)

        rows = []
        for (gip, gport), u in self.flows.udp.items():
            peer, port = u.last_peer
            local = u.handle.getsockname()
            rows.append({"proto": "udp", "kind": "host6", "state": "mapped",
                         "original": f"[{text(gip)}]:{gport} -> [{text(peer)}]:{port}",
                         "reply": f"[{text(peer)}]:{port} -> [{local[0]}]:{local[1]}",
                         "seconds_left": round(u.expires - now), "packets": list(u.packets),
                         "bytes": list(u.bytes)})
        for (gip, ident), e in self.flows.echo.items():
            rows.append({"proto": "icmp6", "kind": "host6", "state": self.mode,
                         "original": f"{text(gip)} id {ident} -> {text(e.last_peer)}",
                         "reply": f"{text(e.last_peer)} -> host id {e.host_ident}",
                         "seconds_left": round(e.expires - now), "packets": list(e.packets),
                         "bytes": list(e.bytes)})
        return rows

    def close(self) -> None:
        for flow in self.flows.clear():
            self.close_flow(flow)
        if self._raw is not None:
            self.side.loop.remove_reader(self._raw.fileno())
            self._raw.close()
