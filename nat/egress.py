"""The host uplink (``[uplink] type = "host"``, the default): guests reach the outside through
the host's own sockets, with no privileges, no iptables rule and no ``ip_forward``.

This is the I/O adapter; the TCP logic is the sans-I/O ``nat.tcp_splice``.  Packets from guests
come from the router (``Router.from_guest``); what goes back to guests is handed to ``emit``,
which addresses it by the router's ARP cache.

Rule 1: UDP.  Each guest endpoint (address, port) is one host UDP socket, so the mapping is
        endpoint-independent (RFC 4787 REQ-1) because the socket's port is; the guest's port is
        kept when the host has it free and it is >= 1024 (REQ-3 allows either).  Filtering is
        address-dependent by default (REQ-8, ``[nat] filtering``): a datagram from a host the
        guest never sent to is dropped.  A mapping lives ``[nat] udp`` seconds after its last
        datagram (REQ-5).  Datagrams larger than the guest link's MTU are fragmented (RFC 791);
        fragments from guests are reassembled first (``nat.reassembly``: a socket sends whole
        datagrams only), for UDP, echo and TCP alike.
        ICMP errors the host receives for a guest's datagrams (IP_RECVERR) go on to the guest,
        and datagrams leave with the guest's TTL less our hop, so a UDP traceroute through the
        host uplink sees the routers beyond it.
Rule 2: ICMP echo.  An unprivileged ping socket (SOCK_DGRAM, IPPROTO_ICMP) per guest (address,
        identifier) where ``net.ipv4.ping_group_range`` allows; else one raw ICMP socket shared by
        all, with an identifier of ours per guest echo flow (needs CAP_NET_RAW); else echo
        requests get ICMP 3/13 and one warning is logged at start.  As for UDP, requests carry
        the guest's TTL less our hop, and the errors they cause go on to the guest.
Rule 3: TCP.  A guest SYN starts a non-blocking connect; ``nat.tcp_splice.Splice`` carries the
        connection: SYN-ACK only once connected, RST when refused, ICMP unreachable otherwise;
        flow control both ways (the adapter reads the host socket only while ``room()`` > 0 and
        writes what the socket takes).  Segments from a guest are synced once per batch read
        (a ``call_soon`` after the port's read callback): one send to the host, one ACK back.
Rule 4: the host address (default: the gateway's, as libslirp and passt do) stands for the
        host's loopback: TCP and UDP to it go to 127.0.0.1; what comes from loopback or from an
        IPv6 peer appears to guests to come from it.  Destinations the router must never forward
        (0/8, 127/8, multicast, class E: RFC 1812 5.3.7) are dropped and counted.
Rule 5: forwards.  Each ``[[forward]]`` port is a listening host socket (IPv4 or IPv6 address).
        An accepted TCP connection becomes a splice opened toward the guest; a UDP datagram is
        sent to the guest from its real source, and the guest's answers leave by the listening
        socket (a session, timed out like a UDP mapping).
Rule 6: limits.  At most ``max_flows`` host sockets (the conntrack size, and the process's file
        limit); beyond it new flows are dropped, counted and answered with ICMP 3/13 (RFC 5508
        REQ-8), existing flows go on.  TCP flows hold at most FLOW_BUFFER bytes each way, and
        all together about ``buffer_budget``: over it, every flow that syncs gets MIN_BUFFER
        (its windows narrow), until the total falls below it again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from nat.reassembly import Reassembly
from nat.tcp_splice import Splice
from nat.translate import admin_prohibited, icmp_error
from wire.errors import MalformedPacket
from wire.gso import fragment_ipv4, to_plain_frames
from wire.packets import (
    ETH_P_IP,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    Ipv4,
    decode_ipv4,
    encode_icmp,
    encode_icmp_error,
    encode_ipv4,
    encode_udp,
)
from wire.tcp import reset_for
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN, is_gso

log = logging.getLogger("vswitch.egress")

IP: Final = VNET_HDR_LEN + 14
ZERO_MACS: Final = bytes(12)  # the router fills in the guest's MAC (Router.to_guests)
#: A TCP flow whose guest's MAC is not known yet (an inbound one, until the guest answers):
#: a multicast destination never used, so the check is one byte; the router replaces it.
UNKNOWN_MACS: Final = b"\xff" * 12
BATCH: Final = 64
READ_CHUNK: Final = 256 * 1024
LOOPBACK: Final = "127.0.0.1"
PEERS_PER_MAPPING: Final = 256
RECENT, LINGER = 1024, 30.0  # closed TCP flows still listed, and for how long
FLOW_BUFFER, MIN_BUFFER = 1 << 20, 64 << 10  # bytes a TCP flow may hold each way (Rule 6)
UNREACHABLE_CODE: Final = {errno.ENETUNREACH: 0, errno.EHOSTUNREACH: 1, errno.ETIMEDOUT: 1,
                           errno.EACCES: 13, errno.EPERM: 13}
U16: Final = struct.Struct("!H")
IP_RECVERR: Final = 11  # <linux/in.h>
SO_EE_ORIGIN_ICMP: Final = 2  # <linux/errqueue.h>
#: struct sock_extended_err: errno, origin, type, code, pad, info, data; the offender follows
EXT_ERR: Final = struct.Struct("=IBBBBII")

Emit = Callable[[list[bytes]], None]


def ip_packet(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0) -> bytes:
    """A packet to a guest: no offloads, MACs left for the router, DF set."""
    return (NO_OFFLOAD + ZERO_MACS + U16.pack(ETH_P_IP)
            + encode_ipv4(src, dst, proto, payload, ident=ident))


def fragments(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int,
              mtu: int) -> list[bytes]:
    """``payload`` to a guest in one packet, or as IPv4 fragments that fit ``mtu``."""
    if 20 + len(payload) <= mtu:
        return [ip_packet(src, dst, proto, payload, ident)]
    frame = ZERO_MACS + U16.pack(ETH_P_IP) + encode_ipv4(src, dst, proto, payload, ident=ident,
                                                         dont_fragment=False)
    return [NO_OFFLOAD + f for f in fragment_ipv4(frame, 14, 34, mtu - 20)]


def local_address(sock: socket.socket, peer: str | None = None) -> str:
    """``host:port`` a host socket uses, for ``show conntrack``; an unbound address is shown as
    the source the host would use toward ``peer``."""
    try:
        host, port = sock.getsockname()[:2]
        if host in ("0.0.0.0", "::") and peer is not None:
            host = route_source(peer)
    except OSError:
        return "?"
    return f"{host}:{port}"


def route_source(peer: str) -> str:
    """The host's source address toward ``peer`` (a UDP connect sends nothing)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((peer, 9))
        return str(probe.getsockname()[0])
    finally:
        probe.close()


def read_icmp_error(sock: socket.socket) -> tuple[bytes, tuple[Any, ...], int, int, int,
                                                  str] | None:
    """The next ICMP error on ``sock``'s error queue (IP_RECVERR): (the data sent, its
    destination, type, code, info, the reporting router), or None."""
    try:
        data, ancillary, _, dest = sock.recvmsg(576, 512, socket.MSG_ERRQUEUE)
    except OSError:
        return None
    for level, kind, value in ancillary:
        if level != socket.SOL_IP or kind != IP_RECVERR or len(value) < EXT_ERR.size + 8:
            continue
        _, origin, icmp_type, code, _, info, _ = EXT_ERR.unpack_from(value)
        if origin == SO_EE_ORIGIN_ICMP:
            reporter = socket.inet_ntoa(value[EXT_ERR.size + 4:EXT_ERR.size + 8])
            return data, dest, icmp_type, code, info, reporter
    return None


def forwardable(address: bytes) -> bool:
    """RFC 1812 5.3.7: never forward to 0/8, 127/8, multicast or class E."""
    return address[0] not in (0, 127) and address[0] < 224


@dataclass(eq=False, slots=True)
class UdpFlow:
    sock: socket.socket
    guest_ip: bytes
    guest_port: int
    expires: float
    peers: set[bytes] = field(default_factory=set)
    last_peer: tuple[bytes, int] = (bytes(4), 0)
    ttl: int = -1  # the socket's IP_TTL now (-1: not set yet)
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])


@dataclass(eq=False, slots=True)
class EchoFlow:
    guest_ip: bytes
    guest_ident: int
    host_ident: int
    sock: socket.socket | None  # the ping socket; None with the shared raw socket
    expires: float
    last_peer: bytes = bytes(4)
    peers: set[bytes] = field(default_factory=set)  # where the guest sent echo requests
    ttl: int = -1  # the ping socket's IP_TTL now (-1: not set yet)
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])


@dataclass(eq=False, slots=True)
class TcpFlow:
    key: tuple[bytes, int, bytes, int]
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
    """A remote peer talking to a guest through a UDP forward (Rule 5)."""

    listener: Listener
    remote: tuple[Any, ...]
    expires: float
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])


class HostEgress:
    def __init__(self, loop: asyncio.AbstractEventLoop, emit: Emit, deliver: Emit,
                 gateway_ip: bytes, host_address: bytes | None, mtu: int = 1500,
                 max_flows: int = 262144,
                 endpoint_independent: bool = False, udp_timeout: float = 300.0,
                 icmp_timeout: float = 60.0, tcp_established: float = 7440.0,
                 tcp_transitory: float = 240.0, fragment_timeout: float = 30.0,
                 buffer_budget: int = 256 << 20) -> None:
        self.loop = loop
        self.emit = emit  # to guests, addressed by the router's ARP cache
        self.deliver = deliver  # to guests, already addressed (a TCP flow knows its guest's MAC)
        self.gateway_ip = gateway_ip
        self.host_address = host_address
        self.mtu = mtu
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:  # one socket per flow: take what the hard limit allows
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        self.max_flows = max(16, min(max_flows, soft - 256))
        self.endpoint_independent = endpoint_independent
        self.udp_timeout = udp_timeout
        self.icmp_timeout = icmp_timeout
        self.tcp_timeouts = {"established_timeout": tcp_established,
                             "transitory_timeout": tcp_transitory}
        self.buffer_budget = buffer_budget
        self.buffered = 0  # bytes all TCP flows hold (Rule 6)
        self.udp: dict[tuple[bytes, int], UdpFlow] = {}
        self.sessions: dict[tuple[bytes, int, bytes, int], UdpSession] = {}
        self.echo: dict[tuple[bytes, int], EchoFlow] = {}
        self.echo_by_ident: dict[int, EchoFlow] = {}
        self.tcp: dict[tuple[bytes, int, bytes, int], TcpFlow] = {}
        self.reassembly = Reassembly(fragment_timeout)
        self._dirty: list[TcpFlow] = []  # flows with guest segments not yet synced (Rule 3)
        self.listeners: dict[tuple[int, str, int], Listener] = {}
        self.recent: dict[tuple[bytes, int, bytes, int], tuple[dict[str, Any], float]] = {}
        self.counters: Counter[str] = Counter()
        self._ident = 0
        self._next_echo_ident = 1
        self._raw_ttl = -1  # the raw socket's IP_TTL now (-1: not set yet)
        self.ping_mode, self._raw = self._open_ping()
        if self.ping_mode == "off":
            log.warning("ping to the outside is off: this user may not open ping sockets and "
                        "has no CAP_NET_RAW.  Allow it with sysctl net.ipv4.ping_group_range="
                        "\"0 2147483647\" (or include this user's group)")

    # -- the guest side ------------------------------------------------------------------------

    def from_guest(self, packet: bytes, now: float) -> None:
        """A guest's packet routed out (Router Rule 1); answers come through ``emit``."""
        try:
            ip = decode_ipv4(packet, IP)
        except MalformedPacket:
            self.counters["malformed"] += 1
            return
        if ip.fragment & 0x3FFF:  # Rule 1
            if is_gso(packet):
                self.counters["malformed"] += 1  # a fragment cannot be a GSO frame
                return
            whole = self.reassembly.add(packet[:ip.end], now, IP)
            if whole is not None:
                self.from_guest(NO_OFFLOAD + whole[VNET_HDR_LEN:], now)
            return
        if is_gso(packet) and ip.proto != PROTO_TCP:  # UDP GSO: the datagrams it stands for
            try:
                frames = to_plain_frames(packet)
            except MalformedPacket:
                self.counters["malformed"] += 1
                return
            for frame in frames:
                self.from_guest(NO_OFFLOAD + frame, now)
            return
        dst = ip.dst
        if not forwardable(dst):
            self.counters["drop-martian"] += 1  # Rule 4
            return
        try:
            if ip.proto == PROTO_TCP:
                self._tcp_from_guest(packet, ip, now)
            elif ip.proto == PROTO_UDP:
                self._udp_from_guest(packet, ip, now)
            elif ip.proto == PROTO_ICMP:
                self._echo_from_guest(packet, ip, now)
            else:
                self.counters["drop-protocol"] += 1
                self._icmp(icmp_error(packet, 3, 2, dst))  # protocol unreachable
        except MalformedPacket:
            self.counters["malformed"] += 1

    def _real(self, dst: bytes) -> str:
        """Where a guest's destination is on the host (Rule 4)."""
        return LOOPBACK if dst == self.host_address else socket.inet_ntoa(dst)

    def _seen(self, host: str) -> bytes:
        """How a host peer's address appears to guests (Rule 4)."""
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        if ":" in host or host.startswith("127."):
            return self.host_address or self.gateway_ip
        return socket.inet_aton(host)

    def _full(self, packet: bytes) -> bool:
        """Rule 6: no room for another host socket."""
        if len(self.udp) + len(self.echo) + len(self.tcp) < self.max_flows:
            return False
        self.counters["drop-table-full"] += 1
        self._icmp(admin_prohibited(packet, self.gateway_ip))
        return True

    def _icmp(self, error: bytes | None) -> None:
        if error is not None:
            self.emit([NO_OFFLOAD + ZERO_MACS + error[VNET_HDR_LEN + 12:]])

    # -- UDP (Rules 1 and 5) -------------------------------------------------------------------

    def _udp_from_guest(self, packet: bytes, ip: Ipv4, now: float) -> None:
        if ip.end - ip.start < 8:
            raise MalformedPacket("UDP header truncated")
        sport, dport, length, _ = struct.unpack_from("!HHHH", packet, ip.start)
        if length < 8 or ip.start + length > ip.end:
            raise MalformedPacket("UDP length < 8 or beyond the IP payload")
        payload = packet[ip.start + 8:ip.start + length]
        session = self.sessions.get((ip.src, sport, ip.dst, dport))
        if session is not None:  # an answer to a forward's peer (Rule 5)
            self._send_udp(session.listener.sock, payload, session.remote, packet)
            session.expires = now + self.udp_timeout
            session.packets[1] += 1
            session.bytes[1] += len(payload)
            return
        flow = self.udp.get((ip.src, sport))
        if flow is None:
            if self._full(packet):
                return
            flow = self._new_udp(ip.src, sport, now)
        flow.expires = now + self.udp_timeout
        if len(flow.peers) < PEERS_PER_MAPPING:
            flow.peers.add(ip.dst)
        flow.last_peer = (ip.dst, dport)
        flow.packets[0] += 1
        flow.bytes[0] += len(payload)
        ttl = max(1, ip.ttl - 1)  # the router's hop is taken (Router Rule 3), the host's follow
        if ttl != flow.ttl:  # so a traceroute sees the hops beyond the host (Rule 1)
            flow.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            flow.ttl = ttl
        self._send_udp(flow.sock, payload, (self._real(ip.dst), dport), packet)

    def _send_udp(self, sock: socket.socket, payload: bytes, to: tuple[Any, ...],
                  packet: bytes) -> None:
        try:
            sock.sendto(payload, to)
        except BlockingIOError:
            self.counters["drop-udp-host-busy"] += 1
        except OSError as exc:
            self.counters[f"udp-send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
            code = UNREACHABLE_CODE.get(exc.errno or 0)
            if code is not None:
                self._icmp(icmp_error(packet, 3, code, self.gateway_ip))

    def _new_udp(self, guest_ip: bytes, guest_port: int, now: float) -> UdpFlow:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)  # Rule 1: ICMP errors, to pass on
        try:
            if guest_port < 1024:
                raise OSError
            sock.bind(("0.0.0.0", guest_port))  # Rule 1: keep the guest's port if free
        except OSError:
            sock.bind(("0.0.0.0", 0))
        flow = UdpFlow(sock, guest_ip, guest_port, now + self.udp_timeout)
        self.udp[(guest_ip, guest_port)] = flow
        self.loop.add_reader(sock.fileno(), self._udp_readable, flow)
        self.counters["udp-mappings"] += 1
        return flow

    def _udp_readable(self, flow: UdpFlow) -> None:
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                data, (host, port) = flow.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error came back for one of the guest's datagrams
                out.extend(self._udp_error(flow))
                continue
            src = self._seen(host)
            if not self.endpoint_independent and src not in flow.peers:
                self.counters["drop-udp-filtered"] += 1
                continue
            flow.packets[1] += 1
            flow.bytes[1] += len(data)
            out.extend(self._udp_to_guest(src, port, flow.guest_ip, flow.guest_port, data))
        if out:
            flow.expires = self.loop.time() + self.udp_timeout
            self.emit(out)

    def _udp_error(self, flow: UdpFlow) -> list[bytes]:
        """Rule 1: an ICMP error the host got for a guest's datagram, passed on."""
        error = read_icmp_error(flow.sock)
        if error is None:
            return []
        data, dest, icmp_type, code, info, reporter = error
        dst = self._seen(dest[0])
        quoted = encode_ipv4(flow.guest_ip, dst, PROTO_UDP,
                             encode_udp(flow.guest_ip, dst, flow.guest_port, dest[1], data))
        return self._error_to_guest(flow.guest_ip, quoted, reporter, icmp_type, code, info)

    def _error_to_guest(self, guest_ip: bytes, quoted: bytes, reporter: str, icmp_type: int,
                        code: int, info: int) -> list[bytes]:
        """An ICMP error about a guest's packet, as the guest's own router would pass it on:
        from the router that reported it, quoting the packet as the guest sent it (RFC 792;
        RFC 1812 4.3.2.3: at most 576 bytes)."""
        word = struct.pack("!HH", 0, info & 0xFFFF) if (icmp_type, code) == (3, 4) \
            else bytes(4)  # frag needed carries the next-hop MTU (RFC 1191)
        self.counters[f"icmp-{icmp_type}/{code}-to-guest"] += 1
        error = encode_icmp_error(icmp_type, code, quoted, word)
        return [ip_packet(self._seen(reporter), guest_ip, PROTO_ICMP, error)]

    def _udp_to_guest(self, src: bytes, sport: int, dst: bytes, dport: int,
                      data: bytes) -> list[bytes]:
        self._ident = (self._ident + 1) & 0xFFFF
        return fragments(src, dst, PROTO_UDP, encode_udp(src, dst, sport, dport, data),
                         self._ident, self.mtu)

    # -- ICMP echo (Rule 2) --------------------------------------------------------------------

    def _open_ping(self) -> tuple[str, socket.socket | None]:
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
            return "ping-socket", None
        except OSError:
            pass
        try:
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except OSError:
            return "off", None
        raw.setblocking(False)
        self.loop.add_reader(raw.fileno(), self._raw_readable)
        return "raw", raw

    def _echo_from_guest(self, packet: bytes, ip: Ipv4, now: float) -> None:
        if ip.end - ip.start < 8:
            raise MalformedPacket("ICMP header truncated")
        if packet[ip.start] != 8:
            self.counters["drop-icmp-not-echo"] += 1  # errors about host flows are the host's
            return
        ident, seq = struct.unpack_from("!HH", packet, ip.start + 4)
        data = packet[ip.start + 8:ip.end]
        if self.ping_mode == "off":
            self.counters["drop-ping-unavailable"] += 1
            self._icmp(admin_prohibited(packet, self.gateway_ip))
            return
        flow = self.echo.get((ip.src, ident))
        if flow is None:
            if self._full(packet):
                return
            flow = self._new_echo(ip.src, ident, now)
        flow.expires = now + self.icmp_timeout
        flow.last_peer = ip.dst
        if len(flow.peers) < PEERS_PER_MAPPING:
            flow.peers.add(ip.dst)
        flow.packets[0] += 1
        flow.bytes[0] += len(data)
        request = encode_icmp(8, 0, struct.pack("!HH", flow.host_ident, seq) + data)
        sock = flow.sock or self._raw
        assert sock is not None
        ttl = max(1, ip.ttl - 1)  # as for UDP (Rule 1): ping -t and traceroute -I see beyond
        if ttl != (flow.ttl if flow.sock is not None else self._raw_ttl):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            if flow.sock is not None:
                flow.ttl = ttl
            else:
                self._raw_ttl = ttl
        try:
            sock.sendto(request, (self._real(ip.dst), 0))
        except OSError as exc:
            self.counters[f"ping-send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1

    def _new_echo(self, guest_ip: bytes, ident: int, now: float) -> EchoFlow:
        sock = None
        host_ident = 0
        if self.ping_mode == "ping-socket":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)  # Rule 2: errors, to pass on
            sock.bind(("0.0.0.0", 0))
            host_ident = sock.getsockname()[1]  # the identifier the kernel gave this socket
        else:
            while self._next_echo_ident in self.echo_by_ident:
                self._next_echo_ident = self._next_echo_ident % 0xFFFF + 1
            host_ident = self._next_echo_ident
            self._next_echo_ident = self._next_echo_ident % 0xFFFF + 1
        flow = EchoFlow(guest_ip, ident, host_ident, sock, now + self.icmp_timeout)
        self.echo[(guest_ip, ident)] = flow
        self.echo_by_ident[host_ident] = flow
        if sock is not None:
            self.loop.add_reader(sock.fileno(), self._ping_readable, flow)
        return flow

    def _ping_readable(self, flow: EchoFlow) -> None:
        assert flow.sock is not None
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                message, (host, _) = flow.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error for one of the guest's echo requests
                error = read_icmp_error(flow.sock)
                if error is not None:
                    sent, dest, icmp_type, code, info, reporter = error
                    out.extend(self._echo_error(flow, socket.inet_aton(dest[0]), sent,
                                                icmp_type, code, info, reporter))
                continue
            out.extend(self._echo_reply(flow, self._seen(host), message))
        if out:
            self.emit(out)

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
            ihl = (datagram[0] & 0x0F) * 4 if datagram else 0
            message = datagram[ihl:]
            if len(message) >= 36 and message[0] in (3, 11, 12):  # an error quoting an echo?
                out.extend(self._raw_error(message, host))
                continue
            if len(message) < 8 or message[0] != 0:
                continue
            flow = self.echo_by_ident.get(U16.unpack_from(message, 4)[0])
            if flow is not None:
                out.extend(self._echo_reply(flow, self._seen(host), message))
        if out:
            self.emit(out)

    def _raw_error(self, message: bytes, reporter: str) -> list[bytes]:
        """An ICMP error the raw socket heard: passed on if it quotes one of our echo requests
        to a host the guest pinged."""
        inner = message[8:]
        inner_ihl = (inner[0] & 0x0F) * 4
        if inner[9] != PROTO_ICMP or len(inner) < inner_ihl + 8 or inner[inner_ihl] != 8:
            return []
        flow = self.echo_by_ident.get(U16.unpack_from(inner, inner_ihl + 4)[0])
        dst = inner[16:20]
        if flow is None or self._seen(socket.inet_ntoa(dst)) not in flow.peers:
            return []
        info = struct.unpack_from("!I", message, 4)[0]
        return self._echo_error(flow, dst, inner[inner_ihl:], message[0], message[1], info,
                                reporter)

    def _echo_error(self, flow: EchoFlow, dst: bytes, sent: bytes, icmp_type: int, code: int,
                    info: int, reporter: str) -> list[bytes]:
        """Rule 2: an ICMP error about an echo request, quoting it as the guest sent it."""
        if len(sent) < 8:
            return []
        request = sent[:4] + U16.pack(flow.guest_ident) + sent[6:]
        seen = self._seen(socket.inet_ntoa(dst))
        quoted = encode_ipv4(flow.guest_ip, seen, PROTO_ICMP, request)
        return self._error_to_guest(flow.guest_ip, quoted, reporter, icmp_type, code, info)

    def _echo_reply(self, flow: EchoFlow, src: bytes, message: bytes) -> list[bytes]:
        """An echo reply for a guest: only from a host it pinged (the shared raw socket hears
        every reply in the namespace, another program's with the same identifier too)."""
        if len(message) < 8 or message[0] != 0 or src not in flow.peers:
            return []
        flow.packets[1] += 1
        flow.bytes[1] += len(message) - 8
        reply = encode_icmp(0, 0, U16.pack(flow.guest_ident) + message[6:])
        self._ident = (self._ident + 1) & 0xFFFF
        return fragments(src, flow.guest_ip, PROTO_ICMP, reply, self._ident, self.mtu)

    # -- TCP (Rule 3) --------------------------------------------------------------------------

    def _tcp_from_guest(self, packet: bytes, ip: Ipv4, now: float) -> None:
        if ip.end - ip.start < 20:
            raise MalformedPacket("TCP header truncated")
        sport, dport = struct.unpack_from("!HH", packet, ip.start)
        key = (ip.src, sport, ip.dst, dport)
        flow = self.tcp.get(key)
        if flow is not None:
            if flow.splice.macs[0] == 0xFF:  # an inbound flow hears its guest the first time
                flow.splice.macs = packet[16:22] + packet[10:16]
            flow.splice.from_guest(packet, now)
            if not flow.dirty:  # synced once after the batch being read (Rule 3)
                flow.dirty = True
                if not self._dirty:
                    self.loop.call_soon(self._flush)
                self._dirty.append(flow)
            return
        flags = packet[ip.start + 13]
        if flags & 0x12 != 0x02:  # not a SYN: nobody here (RFC 9293 3.10.7.1)
            reset = reset_for(ip.dst, packet, ip)
            if reset is not None:
                self.counters["tcp-resets"] += 1
                self.emit([ip_packet(ip.dst, ip.src, PROTO_TCP, reset)])
            return
        if self._full(packet):
            return
        splice = Splice.outbound(packet, now, mss=self.mtu - 40, buffer=self._flow_buffer(),
                                 **self.tcp_timeouts)
        splice.macs = packet[16:22] + packet[10:16]  # to the guest, from the gateway
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flow = TcpFlow(key, splice, sock, connecting=True)
        self.tcp[key] = flow
        self.counters["tcp-connects"] += 1
        err = sock.connect_ex((self._real(ip.dst), dport))
        if err in (0, errno.EINPROGRESS):
            self.loop.add_writer(sock.fileno(), self._tcp_connected, flow)
            flow.writing = True
        else:
            self._connect_result(flow, err)
        self._sync(flow)

    def _flush(self) -> None:
        """Sync the flows guest segments arrived for in the last batch: their bytes go to the
        host in one send, and each guest gets one ACK carrying the window after it."""
        flows, self._dirty = self._dirty, []
        for flow in flows:
            flow.dirty = False
            if flow.sock.fileno() >= 0:
                self._sync(flow)

    def _tcp_connected(self, flow: TcpFlow) -> None:
        self.loop.remove_writer(flow.sock.fileno())
        flow.writing = False
        self._connect_result(flow, flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        self._sync(flow)

    def _connect_result(self, flow: TcpFlow, err: int) -> None:
        now = self.loop.time()
        flow.connecting = False
        if err == 0:
            flow.splice.host_connected(now)
        elif err == errno.ECONNREFUSED:
            self.counters["tcp-refused"] += 1
            flow.splice.host_refused(now)
        else:
            self.counters[f"tcp-connect-{errno.errorcode.get(err, 'error')}"] += 1
            flow.splice.host_unreachable(UNREACHABLE_CODE.get(err, 1), now)

    def _tcp_readable(self, flow: TcpFlow) -> None:
        splice = flow.splice
        now = self.loop.time()
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

    def _tcp_writable(self, flow: TcpFlow) -> None:
        self.loop.remove_writer(flow.sock.fileno())
        flow.writing = False
        self._sync(flow)

    def _tcp_timer(self, flow: TcpFlow) -> None:
        flow.timer = None
        flow.deadline = None
        flow.splice.expire(self.loop.time())
        self._sync(flow)

    def _flow_buffer(self) -> int:
        return FLOW_BUFFER if self.buffered < self.buffer_budget else MIN_BUFFER  # Rule 6

    def _sync(self, flow: TcpFlow) -> None:
        """Do what the splice wants done on the host socket, and send what it has for the guest."""
        splice, sock = flow.splice, flow.sock
        now = self.loop.time()
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
                    self.loop.add_writer(sock.fileno(), self._tcp_writable, flow)
                    flow.writing = True
        if splice.shutdown_host:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            splice.host_shutdown_done()
        packets = splice.drain()
        if packets:
            (self.emit if splice.macs[0] == 0xFF else self.deliver)(packets)
        if splice.closed:
            if splice.icmp_unreachable is not None and splice.syn_packet is not None:
                self._icmp(icmp_error(splice.syn_packet, 3, splice.icmp_unreachable,
                                      flow.key[2]))
            self._close_tcp(flow, abort=splice.abort_host)
            return
        held = splice.held()  # Rule 6
        self.buffered += held - flow.held
        flow.held = held
        want_read = not flow.connecting and not flow.host_eof and splice.room() > 0
        if want_read != flow.reading:
            if want_read:
                self.loop.add_reader(sock.fileno(), self._tcp_readable, flow)
            else:
                self.loop.remove_reader(sock.fileno())
            flow.reading = want_read
        deadline = splice.next_deadline()
        if deadline != flow.deadline:
            if flow.timer is not None:
                flow.timer.cancel()
            flow.timer = None if deadline is None else self.loop.call_at(
                deadline, self._tcp_timer, flow)
            flow.deadline = deadline

    def _close_tcp(self, flow: TcpFlow, abort: bool) -> None:
        self.buffered -= flow.held
        flow.held = 0
        if self.tcp.get(flow.key) is flow:
            del self.tcp[flow.key]
            # listed a little longer, as conntrack -L shows TIME_WAIT: a teaching aid only
            if len(self.recent) >= RECENT:
                self.recent.pop(next(iter(self.recent)))
            row = self._tcp_row(flow, self.loop.time())
            row["state"] = "closed" + (" (reset)" if abort or flow.splice.failed else "")
            self.recent[flow.key] = (row, self.loop.time() + LINGER)
        if flow.timer is not None:
            flow.timer.cancel()
        fd = flow.sock.fileno()
        if fd >= 0:
            if flow.reading:
                self.loop.remove_reader(fd)
            if flow.writing:
                self.loop.remove_writer(fd)
            if abort:  # SO_LINGER 0: close() sends RST (RFC 9293 3.10.4 ABORT)
                flow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
        flow.sock.close()

    # -- forwards (Rule 5) ---------------------------------------------------------------------

    def add_forward(self, proto: int, ports: range, listen: str, guest_ip: bytes,
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
            handler = self._accept if proto == PROTO_TCP else self._forward_datagrams
            self.loop.add_reader(listener.sock.fileno(), handler, listener)
        return opened

    def remove_forward(self, proto: int, ports: range, listen: str) -> None:
        """Stop listening; connections and sessions already open go on."""
        missing = [p for p in ports if (proto, listen, p) not in self.listeners]
        if missing:
            raise KeyError(f"no forward on {listen} port {missing[0]}")
        for port in ports:
            listener = self.listeners.pop((proto, listen, port))
            self.loop.remove_reader(listener.sock.fileno())
            if proto == PROTO_TCP:
                listener.sock.close()  # UDP sessions still answer through it; closed at expiry

    def _accept(self, listener: Listener) -> None:
        now = self.loop.time()
        for _ in range(BATCH):
            try:
                sock, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["accept-errors"] += 1
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = (listener.guest_ip, listener.guest_port, self._seen(peer[0]), peer[1])
            if key in self.tcp or len(self.udp) + len(self.echo) + len(self.tcp) >= self.max_flows:
                self.counters["drop-forward-busy"] += 1
                sock.close()
                continue
            splice = Splice.inbound(key[0], key[1], key[2], key[3], now, mss=self.mtu - 40,
                                    buffer=self._flow_buffer(), **self.tcp_timeouts)
            splice.macs = UNKNOWN_MACS
            flow = TcpFlow(key, splice, sock, connecting=False, inbound=True)
            self.tcp[key] = flow
            self.counters["tcp-forwarded"] += 1
            self._sync(flow)

    def _forward_datagrams(self, listener: Listener) -> None:
        now = self.loop.time()
        out: list[bytes] = []
        for _ in range(BATCH):
            try:
                data, peer = listener.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            src = self._seen(peer[0])
            key = (listener.guest_ip, listener.guest_port, src, peer[1])
            session = self.sessions.get(key)
            if session is None:
                if len(self.sessions) >= self.max_flows:
                    self.counters["drop-forward-busy"] += 1
                    continue
                session = self.sessions[key] = UdpSession(listener, peer, 0.0)
            session.expires = now + self.udp_timeout
            session.packets[0] += 1
            session.bytes[0] += len(data)
            out.extend(self._udp_to_guest(src, peer[1], listener.guest_ip, listener.guest_port,
                                          data))
        if out:
            self.emit(out)

    def forwards(self) -> list[Listener]:
        return list(self.listeners.values())

    # -- timers, listing, shutdown -------------------------------------------------------------

    def expire(self, now: float) -> None:
        """UDP mappings, echo flows and forward sessions past their timeouts (TCP times itself)."""
        self.recent = {k: v for k, v in self.recent.items() if v[1] > now}
        for first in self.reassembly.expire(now):  # ICMP 11/1 (nat.reassembly Rule R4)
            self._icmp(icmp_error(first, 11, 1, self.gateway_ip))
        for key, flow in list(self.udp.items()):
            if flow.expires <= now:
                del self.udp[key]
                self.loop.remove_reader(flow.sock.fileno())
                flow.sock.close()
        for ident, echo in list(self.echo.items()):
            if echo.expires <= now:
                del self.echo[ident]
                self.echo_by_ident.pop(echo.host_ident, None)
                if echo.sock is not None:
                    self.loop.remove_reader(echo.sock.fileno())
                    echo.sock.close()
        for peer, session in list(self.sessions.items()):
            if session.expires <= now:
                del self.sessions[peer]
                listener = session.listener
                if (listener.sock.fileno() >= 0 and self.listeners.get(
                        (listener.proto, listener.listen, listener.port)) is not listener
                        and not any(s.listener is listener for s in self.sessions.values())):
                    listener.sock.close()

    def __len__(self) -> int:
        return len(self.udp) + len(self.echo) + len(self.tcp) + len(self.sessions)

    def _tcp_row(self, flow: TcpFlow, now: float) -> dict[str, Any]:
        sp, (gip, gport, rip, rport) = flow.splice, flow.key
        half = "+guest-fin" if sp.guest_fin else ""
        half += "+host-fin" if sp.host_fin else ""
        return {"proto": "tcp", "kind": "host-forward" if flow.inbound else "host",
                "state": sp.state + half,
                "original": f"{socket.inet_ntoa(gip)}:{gport} -> {socket.inet_ntoa(rip)}:{rport}",
                "reply": f"{socket.inet_ntoa(rip)}:{rport} -> {local_address(flow.sock)}",
                "seconds_left": round(sp.expires_at(now) - now),
                "packets": [sp.packets_from_guest, sp.packets_to_guest],
                "bytes": [sp.bytes_from_guest, sp.bytes_to_guest]}

    def rows(self, now: float) -> list[dict[str, Any]]:
        """``show conntrack``: the guest's tuple, and the host socket's as the translated side."""
        def ep(address: bytes, port: int) -> str:
            return f"{socket.inet_ntoa(address)}:{port}"

        rows = [self._tcp_row(flow, now) for flow in self.tcp.values()]
        rows += [row | {"seconds_left": round(until - now)}
                 for row, until in self.recent.values()]
        for (gip, gport), u in self.udp.items():
            rows.append({"proto": "udp", "kind": "host", "state": "mapped",
                         "original": f"{ep(gip, gport)} -> {ep(*u.last_peer)}",
                         "reply": f"{ep(*u.last_peer)} -> "
                                  f"{local_address(u.sock, self._real(u.last_peer[0]))}",
                         "seconds_left": round(u.expires - now), "packets": list(u.packets),
                         "bytes": list(u.bytes)})
        for (gip, gport, rip, rport), s in self.sessions.items():
            rows.append({"proto": "udp", "kind": "host-forward", "state": "mapped",
                         "original": f"{s.remote[0]}:{s.remote[1]} -> "
                                     f"{local_address(s.listener.sock)}",
                         "reply": f"{ep(gip, gport)} -> {ep(rip, rport)}",
                         "seconds_left": round(s.expires - now), "packets": list(s.packets),
                         "bytes": list(s.bytes)})
        for (gip, ident), e in self.echo.items():
            rows.append({"proto": "icmp", "kind": "host", "state": self.ping_mode,
                         "original": f"{socket.inet_ntoa(gip)} id {ident} -> "
                                     f"{socket.inet_ntoa(e.last_peer)}",
                         "reply": f"{socket.inet_ntoa(e.last_peer)} -> host id {e.host_ident}",
                         "seconds_left": round(e.expires - now), "packets": list(e.packets),
                         "bytes": list(e.bytes)})
        return rows

    def close(self) -> None:
        for flow in list(self.tcp.values()):
            self._close_tcp(flow, abort=True)
        for mapping in list(self.udp.values()):
            self.loop.remove_reader(mapping.sock.fileno())
            mapping.sock.close()
        self.udp.clear()
        for echo in self.echo.values():
            if echo.sock is not None:
                self.loop.remove_reader(echo.sock.fileno())
                echo.sock.close()
        self.echo.clear()
        for listener in self.listeners.values():
            self.loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        self.listeners.clear()
        for session in self.sessions.values():
            session.listener.sock.close()
        self.sessions.clear()
        if self._raw is not None:
            self.loop.remove_reader(self._raw.fileno())
            self._raw.close()
