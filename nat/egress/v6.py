"""The host uplink for guests' IPv6: UDP and ping through the host's own IPv6 sockets, as
``nat.egress`` Rules 1 and 2 do for IPv4.

Rule 1: a guest's UDP endpoint (address, port) is one host IPv6 UDP socket, bound to the
        guest's port when it is free (and not privileged), else to one the kernel picks;
        answers are taken from the hosts the guest sent to (address-dependent filtering,
        ``nat.egress.flows`` Rule 1).  The hop limit leaves one less than the guest sent (the
        router's hop), so a UDP traceroute sees the routers beyond the host (Rule 7).
Rule 2: a guest's echo requests leave by an ICMPv6 ping socket per (guest, identifier), or,
        where ping sockets are not allowed, by one shared raw ICMPv6 socket (root) with an
        identifier of ours; replies come back with the guest's identifier.  With neither,
        echo is not taken (``nat.router6`` answers no route for what the egress does not
        take).  The hop limit is the guest's less one, as for UDP.
Rule 3: the gateway's IPv6 address stands for the host's ``::1``, and ``::1`` as a source is
        shown to guests as the gateway's address; link-local, multicast, unspecified,
        loopback and IPv4-mapped destinations are never forwarded.
Rule 4: answers go to ``emit`` with their MACs unset: the router addresses them by Neighbor
        Discovery (``nat.router6`` Rule 4).
Rule 5: a guest's IPv6 TCP goes to the TCP adapter (``nat.egress.tcp``), whose translator
        (``nat.tcp_splice``) builds IPv6 segments for an IPv6 guest.  A connection the host is
        refused is reset toward the guest; one it cannot make otherwise (no route, address
        unreachable, prohibited, timed out) gets, quoting the guest's SYN, the ICMPv6 error the
        host got for its own SYN (its socket asks for them while it connects; Linux fails a
        connect in SYN-SENT on any), passed on as Rule 7 does, else destination unreachable
        from the destination with the code the connect's error means (RFC 4443 3.1: 0 no
        route, 1 prohibited, 3 address unreachable or timed out).
Rule 6: forwards to IPv6 guests (``nat.egress.forwards``): a guest's datagram that answers a
        forward's peer leaves by the forward's listening socket, not a Rule 1 socket; the
        forward's datagrams reach the guest as this module's own answers do (Rule 4).
Rule 7: ICMPv6 errors.  The UDP and ping sockets ask for the errors the host gets about what
        they send (``IPV6_RECVERR``); the shared raw socket hears them itself, and takes those
        quoting one of its echo requests to a host the guest pinged.  Each goes on to the guest
        as its own router would pass it on: from the router that sent it, as the guest sees it
        (Rule 3), quoting the guest's datagram as the guest sent it (its addresses, port or
        identifier), as much as fits in 1280 bytes (``nat.translate6.icmp6_error``: RFC 4443
        2.4(c), and none where 2.4(e) forbids one).  The types of RFC 4443 3.1-3.4 go on:
        destination unreachable with the code received (0-6), packet too big with the MTU
        received but never below 1280 (RFC 8200 5), time exceeded (the hop limits of Rules 1
        and 2 expiring beyond the host), parameter problem with its pointer (the quote is laid
        out as the host's datagram was).  A send the host refuses (no route, prohibited) gets
        destination unreachable from the gateway, as Rule 5 maps connect errors.  Counted as
        ``icmp6-TYPE/CODE-to-guest``.
Rule 8: a host socket the host cannot make for a guest's new UDP, ping or TCP flow (IPv6
        disabled on the host: EAFNOSUPPORT; out of descriptors: EMFILE) is counted as
        ``socket6-errors-ERRNO``, and the guest's packet gets destination unreachable,
        administratively prohibited (RFC 4443 3.1 code 1), from the gateway, as an IPv4 guest
        gets ICMP 3/13 when no host socket may be opened (``nat.egress`` Rule 6).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Final

from nat.egress.flows import EchoFlow, FlowTable, UdpFlow
from nat.egress.frames import IP, U16, ZERO_MACS
from nat.egress.side import HostSide
from nat.egress.sockets import UNREACHABLE_CODE6, ask_errors, open_ping, read_icmp_error
from nat.egress.tcp import TcpAdapter
from nat.egress.udp import SessionAnswer
from nat.translate6 import icmp6_error
from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.ipv6 import (
    DEST_UNREACHABLE,
    ECHO_REPLY,
    ECHO_REQUEST,
    MIN_MTU,
    PACKET_TOO_BIG,
    PARAMETER_PROBLEM,
    PROTO_ICMPV6,
    TIME_EXCEEDED,
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
#: The ICMPv6 errors passed on to guests (Rule 7, RFC 4443 3.1-3.4).
ERRORS: Final = frozenset({DEST_UNREACHABLE, PACKET_TOO_BIG, TIME_EXCEEDED, PARAMETER_PROBLEM})


def forwardable6(address: bytes) -> bool:
    """Rule 3: not multicast, link-local, unspecified, loopback or IPv4-mapped."""
    return not (address[0] == 0xFF or address[:2] == b"\xfe\x80" or not any(address)
                or address == LOOPBACK6 or address[:12] == bytes(10) + b"\xff\xff")


class HostEgress6:
    def __init__(self, side: HostSide, gateway6: bytes, flows: FlowTable,
                 tcp: TcpAdapter) -> None:
        self.side = side
        self.tcp = tcp  # the IPv4 adapter: its splice speaks IPv6 too
        tcp.real6 = self.real
        tcp.connect_failed6 = self.connect_failed
        tcp.no_socket6 = self.no_socket
        side.refuse6 = self.refuse
        self.gateway6 = gateway6
        self.flows = flows
        #: Rule 6: set by ``nat.egress.forwards``; True when a forward's session took the
        #: datagram.
        self.answer_session: SessionAnswer = lambda *_: False
        self._raw_hops = -1  # the raw socket's IPV6_UNICAST_HOPS now (-1: not set yet)
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
            if self.side.full(frame, ip.src):
                return
            flow = self._open_udp(frame, ip.src, sport, now)
            if flow is None:
                return
        self.flows.udp_out(flow, ip.dst, dport, len(payload), now)
        flow.ttl = self._hop_limit(flow.handle, ip, flow.ttl)
        self._send(flow.handle, payload, (self.real(ip.dst), dport), frame, "udp6")

    @staticmethod
    def _hop_limit(sock: socket.socket, ip: Ipv6, now: int) -> int:
        """Rules 1 and 2: the guest's hop limit less the router's hop, set on ``sock`` if it is
        not what the socket has (``now``); the socket's setting is returned."""
        hops = max(1, ip.hop_limit - 1)
        if hops != now:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
        return hops

    def _send(self, sock: socket.socket, data: bytes, to: tuple[str, int], frame: bytes,
              what: str) -> None:
        """A guest's datagram or echo request sent by ``sock``; one the host refuses is counted
        and gets the destination unreachable its error means, from the gateway (Rule 7)."""
        try:
            sock.sendto(data, to)
        except OSError as exc:
            self.side.counters[f"{what}-send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
            code = UNREACHABLE_CODE6.get(exc.errno or 0)
            error = [] if code is None else self.error_to_guest(frame, DEST_UNREACHABLE, code,
                                                                0, self.gateway6)
            if error:
                self.side.emit(error)

    def _socket(self, frame: bytes, kind: int, proto: int = 0,
                port: int = 0) -> socket.socket | None:
        """A non-blocking host IPv6 socket that asks for its errors (Rule 7), bound to ``port``
        when it is free and not privileged, else to one the kernel picks; None when the host
        cannot make one (Rule 8: ``frame``, the guest's, is answered)."""
        try:
            sock = socket.socket(socket.AF_INET6, kind, proto)
        except OSError as exc:
            self.no_socket(frame, exc)
            return None
        try:
            sock.setblocking(False)
            ask_errors(sock)
            try:
                if port < 1024:
                    raise OSError
                sock.bind(("::", port))
            except OSError:
                sock.bind(("::", 0))
        except OSError as exc:
            sock.close()
            self.no_socket(frame, exc)
            return None
        return sock

    def refuse(self, frame: bytes) -> None:
        """Rule 8: a new flow the table has no room for, or over its guest's quota
        (``nat.egress`` Rule 6): destination unreachable, administratively prohibited."""
        error = self.error_to_guest(frame, DEST_UNREACHABLE, 1, 0, self.gateway6)
        if error:
            self.side.emit(error)

    def no_socket(self, frame: bytes, exc: OSError) -> None:
        """Rule 8: no host socket for the flow ``frame`` (a guest's) opens."""
        self.side.counters[f"socket6-errors-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
        error = self.error_to_guest(frame, DEST_UNREACHABLE, 1, 0, self.gateway6)
        if error:
            self.side.emit(error)

    def _open_udp(self, frame: bytes, guest_ip: bytes, guest_port: int,
                  now: float) -> UdpFlow | None:
        sock = self._socket(frame, socket.SOCK_DGRAM, port=guest_port)
        if sock is None:
            return None
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
            except OSError:  # an ICMPv6 error came back for one of the guest's datagrams
                out += self._udp_error(flow)
                continue
            src = self.seen(peer[0])
            if not self.flows.udp_in(flow, src, len(data)):
                self.side.counters["drop-udp6-filtered"] += 1
                continue
            out += self.datagram_to_guest(src, peer[1], flow.guest_ip, flow.guest_port, data)
        if out:
            self.flows.udp_answered(flow, self.side.loop.time())
            self.side.emit(out)

    def _udp_error(self, flow: UdpFlow) -> list[bytes]:
        """Rule 7: an ICMPv6 error the host got for one of the guest's datagrams."""
        error = read_icmp_error(flow.handle)
        if error is None:
            self.side.counters["udp6-error"] += 1
            return []
        data, dest, icmp_type, code, info, reporter = error
        dst = self.seen(dest[0])
        quoted = self._frame(flow.guest_ip, dst, PROTO_UDP,
                             encode_udp6(flow.guest_ip, dst, flow.guest_port, dest[1], data))
        return self.error_to_guest(quoted, icmp_type, code, info, self.seen(reporter))

    def _echo(self, frame: bytes, ip: Ipv6, now: float) -> None:
        """Rule 2."""
        ident, seq = struct.unpack_from("!HH", frame, ip.start + 4)
        data = frame[ip.start + 8:ip.end]
        flow = self.flows.echo.get((ip.src, ident))
        if flow is None:
            if self.side.full(frame, ip.src):
                return
            flow = self._open_echo(frame, ip.src, ident, now)
            if flow is None:
                return
        self.flows.echo_out(flow, ip.dst, len(data), now)
        if flow.handle is not None:
            sock = flow.handle
            flow.ttl = self._hop_limit(sock, ip, flow.ttl)
        else:
            assert self._raw is not None
            sock = self._raw
            self._raw_hops = self._hop_limit(sock, ip, self._raw_hops)
        request = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, flow.host_ident, seq) + data
        # the kernel fills in the checksum of ping and raw ICMPv6 sockets
        self._send(sock, request, (self.real(ip.dst), 0), frame, "ping6")

    def _open_echo(self, frame: bytes, guest_ip: bytes, ident: int,
                   now: float) -> EchoFlow | None:
        if self.mode != "ping-socket":
            return self.flows.add_echo(guest_ip, ident, None, None, now)
        sock = self._socket(frame, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
        if sock is None:
            return None
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
            except OSError:  # an ICMPv6 error for one of the guest's echo requests
                error = read_icmp_error(flow.handle)
                if error is not None:
                    sent, dest, icmp_type, code, info, reporter = error
                    out += self._echo_error(flow, dest[0], sent, icmp_type, code, info, reporter)
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
            if len(message) >= 56 and message[0] in ERRORS:  # 8 + 40 + an echo request's 8
                out += self._raw_error(message, peer[0])
                continue
            if len(message) < 8 or message[0] != ECHO_REPLY:
                continue  # the raw socket hears every ICMPv6 message of the host
            flow = self.flows.echo_by_host_ident.get(struct.unpack_from("!H", message, 4)[0])
            if flow is not None:
                out += self._reply(flow, self.seen(peer[0]), message)
        if out:
            self.side.emit(out)

    def _raw_error(self, message: bytes, reporter: str) -> list[bytes]:
        """Rule 7: an ICMPv6 error the raw socket heard, passed on if it quotes one of our echo
        requests (as we send them: no extension header) to a host the guest pinged."""
        inner = message[8:]
        if inner[6] != PROTO_ICMPV6 or inner[40] != ECHO_REQUEST:
            return []
        flow = self.flows.echo_by_host_ident.get(U16.unpack_from(inner, 44)[0])
        dest = socket.inet_ntop(socket.AF_INET6, inner[24:40])
        if flow is None or self.seen(dest) not in flow.peers:
            return []
        info = struct.unpack_from("!I", message, 4)[0]
        return self._echo_error(flow, dest, inner[40:], message[0], message[1], info, reporter)

    def _echo_error(self, flow: EchoFlow, dest: str, sent: bytes, icmp_type: int, code: int,
                    info: int, reporter: str) -> list[bytes]:
        """Rule 7: an ICMPv6 error about an echo request the host sent to ``dest``, quoting the
        request as the guest sent it (its identifier)."""
        if len(sent) < 8:
            return []
        dst = self.seen(dest)
        request = encode_icmpv6(flow.guest_ip, dst, ECHO_REQUEST, 0,
                                U16.pack(flow.guest_ident) + sent[6:])
        quoted = self._frame(flow.guest_ip, dst, PROTO_ICMPV6, request)
        return self.error_to_guest(quoted, icmp_type, code, info, self.seen(reporter))

    def error_to_guest(self, packet: bytes, icmp_type: int, code: int, info: int,
                       source: bytes) -> list[bytes]:
        """Rule 7: an ICMPv6 error from ``source`` about ``packet`` (a guest's frame, or one
        rebuilt as the guest sent it), for the router to address (Rule 4); ``info`` is what
        the host's error carried after its checksum.  [] for a type not passed on, or where
        RFC 4443 2.4(e) forbids an error, or a guest's frame whose offloads do not add up
        (counted)."""
        if icmp_type not in ERRORS:
            return []
        word = max(info, MIN_MTU) if icmp_type == PACKET_TOO_BIG \
            else info if icmp_type == PARAMETER_PROBLEM else 0
        try:
            error = icmp6_error(packet, icmp_type, code, source, word)
        except MalformedPacket:  # (a connect's result comes in a callback: nobody else catches)
            self.side.counters["malformed6"] += 1
            return []
        if error is None:
            return []
        self.side.counters[f"icmp6-{icmp_type}/{code}-to-guest"] += 1
        return [error]

    def connect_failed(self, syn: bytes, sock: socket.socket, err: int) -> list[bytes]:
        """Rule 5: what a guest's SYN gets when the host's connect failed with ``err`` (not
        refused): the ICMPv6 error the host got for its SYN, else destination unreachable
        from the destination with the code ``err`` means ([] for an error that means none)."""
        error = read_icmp_error(sock)
        if error is not None:
            _, _, icmp_type, code, info, reporter = error
            return self.error_to_guest(syn, icmp_type, code, info, self.seen(reporter))
        code = UNREACHABLE_CODE6.get(err, 3)
        return self.error_to_guest(syn, DEST_UNREACHABLE, code, 0, syn[IP + 24:IP + 40])

    def _reply(self, flow: EchoFlow, src: bytes, message: bytes) -> list[bytes]:
        if len(message) < 8 or message[0] != ECHO_REPLY:
            return []
        if not self.flows.echo_in(flow, src, len(message) - 8):
            self.side.counters["drop-echo6-unasked"] += 1
            return []
        body = struct.pack("!HH", flow.guest_ident, struct.unpack_from("!H", message, 6)[0])
        reply = encode_icmpv6(src, flow.guest_ip, ECHO_REPLY, 0, body + message[8:])
        return [self._frame(src, flow.guest_ip, PROTO_ICMPV6, reply)]

    def datagram_to_guest(self, src: bytes, sport: int, dst: bytes, dport: int,
                          data: bytes) -> list[bytes]:
        """A UDP datagram to a guest, its MACs left for the router (Rule 4)."""
        return [self._frame(src, dst, PROTO_UDP, encode_udp6(src, dst, sport, dport, data))]

    @staticmethod
    def _frame(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
        """Rule 4: an IPv6 packet as a frame with no offloads, its MACs left for the router to
        fill in."""
        return NO_OFFLOAD + encode_ethernet(ZERO_MACS[:6], ZERO_MACS[6:], ETH_P_IPV6,
                                            encode_ipv6(src, dst, proto, payload))

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
