"""``HostEgress``: the host uplink as the router and the daemon see it; it routes each guest
packet to its protocol's adapter and gathers their timers, rows and shutdown."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

from nat.egress.echo import EchoAdapter
from nat.egress.flows import EchoFlow, FlowTable
from nat.egress.forwards import Forwards, Listener
from nat.egress.frames import IP, Emit, forwardable
from nat.egress.side import HostSide
from nat.egress.sockets import local_address
from nat.egress.tcp import TcpAdapter
from nat.egress.udp import UdpAdapter
from nat.egress.v6 import HostEgress6
from nat.explain import Line, endpoint, flow_text
from nat.reassembly import Reassembly
from nat.translate import icmp_error
from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.packets import (
    ICMP_ECHO_REQUEST,
    IPV4_FRAGMENTED,
    PROTO_ICMP,
    PROTO_NAMES,
    PROTO_TCP,
    PROTO_UDP,
    Ipv4,
    address_port,
    decode_icmp,
    decode_ipv4,
    decode_udp,
    format_ip,
)
from wire.tcp import ACK, SYN, decode_tcp
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN, is_gso


class HostEgress:
    """The host kind of ``nat.uplinks.Uplink``."""

    kind = "host"

    def __init__(self, loop: asyncio.AbstractEventLoop, emit: Emit, deliver: Emit,
                 gateway_ip: bytes, host_address: bytes | None, mtu: int = 1500,
                 max_flows: int = 262144,
                 endpoint_independent: bool = False, udp_timeout: float = 300.0,
                 icmp_timeout: float = 60.0, tcp_established: float = 7440.0,
                 tcp_transitory: float = 240.0, fragment_timeout: float = 30.0,
                 buffer_budget: int = 256 << 20,
                 gateway6: bytes | None = None, max_per_guest: int | None = None) -> None:
        """``gateway6``: the gateway's IPv6 address when guests have IPv6: their TCP, UDP and
        ping leave by the host's IPv6 sockets too (``nat.egress.v6``).  ``max_per_guest``:
        the flows one guest address may hold (Rule 6; None: no quota but ``max_flows``)."""
        self.side = HostSide(loop, emit, deliver, gateway_ip, host_address, mtu, max_flows,
                             max_per_guest)
        self.flows = FlowTable(udp_timeout, icmp_timeout, endpoint_independent, self.side.quota)
        self.udp = UdpAdapter(self.side, self.flows)
        self.echo = EchoAdapter(self.side, self.flows)
        self.tcp = TcpAdapter(self.side, tcp_established, tcp_transitory, buffer_budget)
        #: IPv6 UDP and ping, with a flow table of their own (their keys are 16 bytes)
        self.v6 = None if gateway6 is None else HostEgress6(
            self.side, gateway6, FlowTable(udp_timeout, icmp_timeout, endpoint_independent,
                                           self.side.quota), self.tcp)
        self.forwarding = Forwards(self.side, self.tcp, self.udp, udp_timeout, self.v6)
        self.side.flows_in_use = lambda: len(self.flows) + len(self.tcp) + (
            len(self.v6.flows) if self.v6 is not None else 0)  # Rule 6
        self.reassembly = Reassembly(fragment_timeout)
        self._by_proto = {PROTO_TCP: self.tcp.from_guest, PROTO_UDP: self.udp.from_guest,
                          PROTO_ICMP: self.echo.from_guest}

    # -- what the router and the daemon read ----------------------------------------------------

    @property
    def host_address(self) -> bytes | None:
        return self.side.host_address

    @property
    def counters(self) -> Counter[str]:
        return self.side.counters

    @property
    def ping_mode(self) -> str:
        return self.echo.mode

    @property
    def max_flows(self) -> int:
        return self.side.max_flows

    @property
    def buffered(self) -> int:
        return self.tcp.buffered

    @property
    def buffer_budget(self) -> int:
        return self.tcp.buffer_budget

    # -- the guest side ------------------------------------------------------------------------

    def from_guest(self, packet: bytes, now: float, ip: Ipv4 | None = None) -> None:
        """A guest's packet routed out (Router Rule 1); answers come through ``emit``.
        ``ip`` is its IPv4 header, when the router has decoded it already."""
        counters = self.side.counters
        if ip is None:
            try:
                ip = decode_ipv4(packet, IP)
            except MalformedPacket:
                counters["malformed"] += 1
                return
        if ip.fragment & IPV4_FRAGMENTED:  # Rule 1
            if is_gso(packet):
                counters["malformed"] += 1  # a fragment cannot be a GSO frame
                return
            whole = self.reassembly.add(packet[:ip.end], now, IP)
            if whole is not None:
                self.from_guest(NO_OFFLOAD + whole[VNET_HDR_LEN:], now)
            return
        if is_gso(packet) and ip.proto != PROTO_TCP:  # UDP GSO: the datagrams it stands for
            try:
                frames = to_plain_frames(packet)
            except MalformedPacket:
                counters["malformed"] += 1
                return
            for frame in frames:
                self.from_guest(NO_OFFLOAD + frame, now)
            return
        if not forwardable(ip.dst):
            counters["drop-martian"] += 1  # Rule 4
            return
        handle = self._by_proto.get(ip.proto)
        try:
            if handle is not None:
                handle(packet, ip, now)
            else:
                counters["drop-protocol"] += 1
                self.side.icmp(icmp_error(packet, 3, 2, ip.dst))  # protocol unreachable
        except MalformedPacket:
            counters["malformed"] += 1

    def explain(self, packet: bytes, ip: Ipv4) -> list[Line]:
        """What ``from_guest`` would do with ``packet``, in words, changing nothing."""
        what = flow_text(ip.proto, ip.src, 0, ip.dst, 0)
        if ip.fragment & IPV4_FRAGMENTED:
            return [("a fragment: reassembled first, then sent whole", "egress Rule 1")]
        if not forwardable(ip.dst):
            return [(f"dropped: {format_ip(ip.dst)} is not forwardable (martian)", "egress Rule 4")]
        try:
            if ip.proto == PROTO_UDP:
                sport, dport, _ = decode_udp(packet, ip)
                what = flow_text(ip.proto, ip.src, sport, ip.dst, dport)
                flow = self.flows.udp.get((ip.src, sport))
                if flow is not None:
                    port = flow.handle.getsockname()[1]
                    return [(f"hit: {what} leaves from the host's UDP socket :{port}",
                             "egress Rule 1")]
                return [self._new(f"new: {what} gets a host UDP socket (the guest's port "
                                  "if free, else one the kernel picks)", "egress Rule 1", ip.src)]
            if ip.proto == PROTO_ICMP:
                icmp = decode_icmp(packet, ip)
                if icmp.type != ICMP_ECHO_REQUEST:
                    return [("dropped: only echo requests leave by the host", "egress Rule 2")]
                ident = icmp.word >> 16
                if self.flows.echo.get((ip.src, ident)) is not None:
                    return [(f"hit: echo id {ident} from {format_ip(ip.src)} goes on by "
                             f"{self.ping_mode}", "egress Rule 2")]
                return [self._new(f"new: echo id {ident} from {format_ip(ip.src)} to "
                                  f"{format_ip(ip.dst)} by {self.ping_mode}", "egress Rule 2",
                                  ip.src)]
            if ip.proto == PROTO_TCP:
                tcp = decode_tcp(packet, ip)
                what = flow_text(ip.proto, ip.src, tcp.sport, ip.dst, tcp.dport)
                if (ip.src, tcp.sport, ip.dst, tcp.dport) in self.tcp.flows:
                    return [(f"hit: {what} is spliced onto its host TCP socket", "egress Rule 3")]
                if tcp.flags & (SYN | ACK) != SYN:
                    return [(f"dropped: {what} matches no connection; RST sent",
                             "egress Rule 3")]
                return [self._new(f"new: {what}: the host connects to "
                                  f"{endpoint(ip.dst, tcp.dport)}; the guest gets its SYN-ACK "
                                  "once that connection is up", "egress Rule 3", ip.src)]
        except MalformedPacket as exc:
            return [(f"dropped: malformed ({exc})", "egress Rule 1")]
        return [(f"{what}: protocol {ip.proto} cannot leave by host sockets; ICMP protocol "
                 "unreachable sent", "egress Rule 1")]

    def _new(self, text: str, rule: str, guest: bytes) -> Line:
        if not self.side.has_room():
            return ("refused: the flow table is full; ICMP 3/13 sent", "egress Rule 6")
        if not self.side.quota.admits(guest):
            return (f"refused: {format_ip(guest)} holds its quota of {self.side.quota.limit} "
                    "flows; ICMP 3/13 sent", "egress Rule 6")
        return text, rule

    # -- forwards (Rule 5) ---------------------------------------------------------------------

    def add_forward(self, proto: int, ports: range, listen: str, guest_ip: bytes,
                    guest_port: int) -> int:
        return len(self.forwarding.add(proto, ports, listen, guest_ip, guest_port))

    def remove_forward(self, proto: int, ports: range, listen: str) -> None:
        self.forwarding.remove(proto, ports, listen)

    def forwards(self) -> list[Listener]:
        return list(self.forwarding.listeners.values())

    def forward_rows(self) -> list[dict[str, Any]]:
        """``show forwards``."""
        return [{"proto": PROTO_NAMES[f.proto], "port": str(f.port), "listen": f.listen,
                 "to": address_port(f.guest_ip, f.guest_port)}
                for f in self.forwards()]

    def stats(self) -> dict[str, Any]:
        """``show router``: this uplink's counters and limits."""
        side = self.side
        return dict(side.counters) | {
            f"reassembly-{k}": v for k, v in self.reassembly.stats.items()} | {
            "uplink": "host", "ping": self.echo.mode,
            "host_address": "none" if side.host_address is None
            else socket.inet_ntoa(side.host_address),
            "flows": len(self), "max_flows": side.max_flows,
            "max_per_guest": side.quota.limit, "guests_with_flows": len(side.quota.held),
            "tcp_buffered": self.tcp.buffered, "tcp_buffer_budget": self.tcp.buffer_budget}

    # -- timers, listing, shutdown -------------------------------------------------------------

    def expire(self, now: float) -> None:
        """UDP mappings, echo flows and forward sessions past their timeouts (TCP times itself)."""
        self.tcp.expire(now)
        for first in self.reassembly.expire(now):  # ICMP 11/1 (nat.reassembly Rule R4)
            self.side.icmp(icmp_error(first, 11, 1, self.side.gateway_ip))
        self._close(self.flows.expire(now))
        if self.v6 is not None:
            for flow in self.v6.flows.expire(now):
                self.v6.close_flow(flow)
        self.forwarding.expire(now)

    def _close(self, flows: list[Any]) -> None:
        for flow in flows:
            if isinstance(flow, EchoFlow):
                self.echo.close_flow(flow)
            else:
                self.udp.close(flow)

    def __len__(self) -> int:
        six = len(self.v6.flows) if self.v6 is not None else 0
        return len(self.flows) + len(self.tcp) + len(self.forwarding.sessions) + six

    def flow_rows(self, now: float) -> list[dict[str, Any]]:
        """``show conntrack``: the guest's tuple, and the host socket's as the translated side."""
        def ep(address: bytes, port: int) -> str:
            return f"{socket.inet_ntoa(address)}:{port}"

        rows = self.tcp.rows(now)
        for (gip, gport), u in self.flows.udp.items():
            rows.append({"proto": "udp", "kind": "host", "state": "mapped",
                         "original": f"{ep(gip, gport)} -> {ep(*u.last_peer)}",
                         "reply": f"{ep(*u.last_peer)} -> "
                                  f"{local_address(u.handle, self.side.real(u.last_peer[0]))}",
                         "seconds_left": round(u.expires - now), "packets": list(u.packets),
                         "bytes": list(u.bytes)})
        rows += self.forwarding.rows(now)
        for (gip, ident), e in self.flows.echo.items():
            rows.append({"proto": "icmp", "kind": "host", "state": self.echo.mode,
                         "original": f"{socket.inet_ntoa(gip)} id {ident} -> "
                                     f"{socket.inet_ntoa(e.last_peer)}",
                         "reply": f"{socket.inet_ntoa(e.last_peer)} -> host id {e.host_ident}",
                         "seconds_left": round(e.expires - now), "packets": list(e.packets),
                         "bytes": list(e.bytes)})
        if self.v6 is not None:
            rows += self.v6.rows(now)
        return rows

    def close(self) -> None:
        self.tcp.close()
        self._close(self.flows.clear())
        self.forwarding.close()
        self.echo.close()
        if self.v6 is not None:
            self.v6.close()
