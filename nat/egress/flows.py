"""The host uplink's UDP and echo flows, without sockets: which guest endpoint has which flow,
who may answer it, when it expires, and which identifier an echo flow uses on the host.

This core imports no socket, no asyncio, no clock.  A flow carries the adapter's ``handle``
(its host socket) without touching it; ``expire(now)`` returns the flows that ended so the
adapter closes their sockets.

Rule 1: UDP (RFC 4787).  One flow per guest endpoint (address, port): the mapping is
        endpoint-independent (REQ-1) because the host socket's port is.  Filtering is
        address-dependent unless ``endpoint_independent`` (REQ-8): a datagram from a host the
        guest never sent to is refused.  At most ``PEERS_PER_MAPPING`` peers are remembered;
        beyond that the flow answers only those.
Rule 2: echo.  One flow per guest (address, identifier), with the identifier it uses on the
        host: the ping socket's (the kernel chooses it), or, for the shared raw socket, one of
        ours that no other flow holds.  Replies are taken only from hosts the guest pinged.
Rule 3: a UDP flow lives ``udp_timeout`` seconds after its last datagram either way (REQ-5);
        an echo flow ``icmp_timeout`` seconds after its last request.
Rule 4: per-guest quota (a connlimit, ``nat.egress`` Rule 6): ``GuestQuota`` counts the flows
        each guest address holds, UDP, echo and TCP, IPv4 and IPv6 (each address its own);
        a table given one counts its flows there as they are added and expire.  A guest at
        ``limit`` may open no more; the adapters refuse it as they refuse a full table.  Only
        addresses holding flows have a key, so the count is bounded as the flows are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

PEERS_PER_MAPPING: Final = 256


@dataclass(eq=False, slots=True)
class UdpFlow:
    handle: Any  #: the adapter's host socket for this endpoint
    guest_ip: bytes
    guest_port: int
    expires: float
    peers: set[bytes] = field(default_factory=set)  #: hosts the guest sent to (Rule 1)
    last_peer: tuple[bytes, int] = (bytes(4), 0)
    ttl: int = -1  #: the socket's IP_TTL now (-1: not set yet)
    packets: list[int] = field(default_factory=lambda: [0, 0])  #: from, to the guest
    bytes: list[int] = field(default_factory=lambda: [0, 0])


@dataclass(eq=False, slots=True)
class EchoFlow:
    guest_ip: bytes
    guest_ident: int
    host_ident: int  #: the identifier the host's requests carry (Rule 2)
    handle: Any  #: the ping socket; None with the shared raw socket
    expires: float
    last_peer: bytes = bytes(4)
    peers: set[bytes] = field(default_factory=set)  #: where the guest sent echo requests
    ttl: int = -1  #: the ping socket's IP_TTL now (-1: not set yet)
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])


class GuestQuota:
    """Rule 4: at most ``limit`` flows per guest address."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.held: dict[bytes, int] = {}

    def admits(self, guest: bytes) -> bool:
        """Whether ``guest`` may open one more flow."""
        return self.held.get(guest, 0) < self.limit

    def hold(self, guest: bytes) -> None:
        self.held[guest] = self.held.get(guest, 0) + 1

    def release(self, guest: bytes) -> None:
        left = self.held.get(guest, 0) - 1
        if left > 0:
            self.held[guest] = left
        else:
            self.held.pop(guest, None)


class FlowTable:
    def __init__(self, udp_timeout: float = 300.0, icmp_timeout: float = 60.0,
                 endpoint_independent: bool = False, quota: GuestQuota | None = None) -> None:
        """``quota``: where this table's flows are counted per guest (Rule 4)."""
        self.quota = quota
        self.udp_timeout = udp_timeout
        self.icmp_timeout = icmp_timeout
        self.endpoint_independent = endpoint_independent
        self.udp: dict[tuple[bytes, int], UdpFlow] = {}
        self.echo: dict[tuple[bytes, int], EchoFlow] = {}
        self.echo_by_host_ident: dict[int, EchoFlow] = {}
        self._next_ident = 1

    def __len__(self) -> int:
        return len(self.udp) + len(self.echo)

    # -- UDP (Rule 1) --------------------------------------------------------------------------

    def add_udp(self, guest_ip: bytes, guest_port: int, handle: Any, now: float) -> UdpFlow:
        flow = UdpFlow(handle, guest_ip, guest_port, now + self.udp_timeout)
        self.udp[(guest_ip, guest_port)] = flow
        if self.quota is not None:  # Rule 4
            self.quota.hold(guest_ip)
        return flow

    def udp_out(self, flow: UdpFlow, dst: bytes, dport: int, size: int, now: float) -> None:
        """The guest sent ``size`` bytes to ``dst``: a peer now, and the flow lives on."""
        flow.expires = now + self.udp_timeout
        if len(flow.peers) < PEERS_PER_MAPPING:
            flow.peers.add(dst)
        flow.last_peer = (dst, dport)
        flow.packets[0] += 1
        flow.bytes[0] += size

    def udp_in(self, flow: UdpFlow, src: bytes, size: int) -> bool:
        """A datagram from ``src`` for the guest: True if the flow's filtering lets it in."""
        if not self.endpoint_independent and src not in flow.peers:
            return False
        flow.packets[1] += 1
        flow.bytes[1] += size
        return True

    def udp_answered(self, flow: UdpFlow, now: float) -> None:
        flow.expires = now + self.udp_timeout  # Rule 3: traffic either way refreshes

    # -- echo (Rule 2) -------------------------------------------------------------------------

    def add_echo(self, guest_ip: bytes, guest_ident: int, handle: Any, host_ident: int | None,
                 now: float) -> EchoFlow:
        """A flow for the guest's identifier; ``host_ident`` None: choose one of ours."""
        if host_ident is None:
            while self._next_ident in self.echo_by_host_ident:
                self._next_ident = self._next_ident % 0xFFFF + 1
            host_ident = self._next_ident
            self._next_ident = self._next_ident % 0xFFFF + 1
        flow = EchoFlow(guest_ip, guest_ident, host_ident, handle, now + self.icmp_timeout)
        self.echo[(guest_ip, guest_ident)] = flow
        self.echo_by_host_ident[host_ident] = flow
        if self.quota is not None:  # Rule 4
            self.quota.hold(guest_ip)
        return flow

    def echo_out(self, flow: EchoFlow, dst: bytes, size: int, now: float) -> None:
        flow.expires = now + self.icmp_timeout
        flow.last_peer = dst
        if len(flow.peers) < PEERS_PER_MAPPING:
            flow.peers.add(dst)
        flow.packets[0] += 1
        flow.bytes[0] += size

    def echo_in(self, flow: EchoFlow, src: bytes, size: int) -> bool:
        """A reply from ``src``: True if the guest pinged that host (Rule 2)."""
        if src not in flow.peers:
            return False
        flow.packets[1] += 1
        flow.bytes[1] += size
        return True

    # -- timers (Rule 3) -----------------------------------------------------------------------

    def expire(self, now: float) -> list[UdpFlow | EchoFlow]:
        """Forget the flows past their time; they are returned for their sockets to close."""
        gone: list[UdpFlow | EchoFlow] = []
        for key, flow in list(self.udp.items()):
            if flow.expires <= now:
                del self.udp[key]
                gone.append(flow)
        for key, echo in list(self.echo.items()):
            if echo.expires <= now:
                del self.echo[key]
                self.echo_by_host_ident.pop(echo.host_ident, None)
                gone.append(echo)
        if self.quota is not None:  # Rule 4
            for ended in gone:
                self.quota.release(ended.guest_ip)
        return gone

    def clear(self) -> list[UdpFlow | EchoFlow]:
        """Forget every flow (shutdown); returned as ``expire`` does."""
        gone: list[UdpFlow | EchoFlow] = [*self.udp.values(), *self.echo.values()]
        self.udp.clear()
        self.echo.clear()
        self.echo_by_host_ident.clear()
        if self.quota is not None:  # Rule 4
            for ended in gone:
                self.quota.release(ended.guest_ip)
        return gone
