"""The NAT's mappings (``nat.conntrack`` Rule 2): which external port each guest endpoint
holds, whatever it talks to (RFC 4787 REQ-1, endpoint-independent), with the guest's own port
kept when it is free (port preservation, REQ-3 allows either), and the ports forwards hold
(Rule 8, static mappings).
"""

from __future__ import annotations

from collections import Counter

from wire.packets import PROTO_ICMP, PROTO_TCP, PROTO_UDP


class Mapping:
    """One external port lent to one guest endpoint (Rule 2), or held by a forward (Rule 8)."""

    __slots__ = ("proto", "guest_ip", "guest_port", "port", "flows", "static", "remote",
                 "remote_flows", "remotes")

    def __init__(self, proto: int, guest_ip: bytes, guest_port: int, port: int, static: bool):
        self.proto = proto
        self.guest_ip = guest_ip
        self.guest_port = guest_port
        self.port = port
        self.flows = 0
        self.static = static
        # Live flows per remote address (Rule 3).  Most mappings talk to one address: it is
        # kept in `remote`; flows to other addresses are counted in the dict `remotes`.
        self.remote: bytes | None = None
        self.remote_flows = 0
        self.remotes: dict[bytes, int] | None = None

    def has_flow_to(self, address: bytes) -> bool:
        return address == self.remote or (self.remotes is not None and address in self.remotes)

    def count_remote(self, address: bytes, delta: int) -> None:
        """One more (+1) or one less (-1) live flow to ``address``; an address is counted in
        ``remote`` or in ``remotes``, never in both."""
        if address == self.remote:
            self.remote_flows += delta
            if not self.remote_flows:
                self.remote = None
            return
        if self.remote is None and (self.remotes is None or address not in self.remotes):
            self.remote, self.remote_flows = address, delta
            return
        remotes = self.remotes if self.remotes is not None else {}
        left = remotes.get(address, 0) + delta
        if left:
            remotes[address] = left
        else:
            del remotes[address]
        self.remotes = remotes or None


class Mappings:
    """Per protocol: mappings by external port, by guest endpoint, and the forwards' static
    ones by the guest endpoint they serve."""

    def __init__(self, port_range: tuple[int, int]) -> None:
        protos = (PROTO_ICMP, PROTO_TCP, PROTO_UDP)
        self.by_port: dict[int, dict[int, Mapping]] = {p: {} for p in protos}
        self.by_guest: dict[int, dict[tuple[bytes, int], Mapping]] = {p: {} for p in protos}
        self.static: dict[int, dict[tuple[bytes, int], Mapping]] = {p: {} for p in protos}
        self.ranges = {PROTO_TCP: port_range, PROTO_UDP: port_range, PROTO_ICMP: (0, 65535)}
        self.held: Counter[int] = Counter()  # ports of each protocol's range in use
        self.cursor: dict[int, int] = {}

    def for_endpoint(self, proto: int, ip: bytes, port: int) -> Mapping | None:
        """The endpoint's mapping: its own, a forward's (static), or a new one; None when no
        port is free."""
        endpoint = (ip, port)
        mapping = self.by_guest[proto].get(endpoint) or self.static[proto].get(endpoint)
        if mapping is not None:
            return mapping
        external = self.allocate(proto, port)
        if external is None:
            return None
        mapping = Mapping(proto, ip, port, external, static=False)
        self.by_guest[proto][endpoint] = mapping
        self.hold(mapping)
        return mapping

    def allocate(self, proto: int, wanted: int) -> int | None:
        """A free external port.

        1. The guest's own port, if it lies in the range and is free (port preservation).
        2. Otherwise the first free port after the last one handed out, round the range once.
        3. None when every port of the range is held.
        """
        port = self.next_free(proto, wanted)
        if port is not None and port != wanted:
            self.cursor[proto] = port + 1
        return port

    def next_free(self, proto: int, wanted: int) -> int | None:
        """The port ``allocate`` would give, changing nothing (its steps 1 to 3)."""
        low, high = self.ranges[proto]
        size = high - low + 1
        by_port = self.by_port[proto]
        if self.held[proto] >= size:  # 3.
            return None
        if low <= wanted <= high and wanted not in by_port:  # 1.
            return wanted
        start = self.cursor.get(proto, low) - low
        for step in range(size):  # 2.
            port = low + (start + step) % size
            if port not in by_port:
                return port
        return None

    def hold(self, mapping: Mapping) -> None:
        self.by_port[mapping.proto][mapping.port] = mapping
        low, high = self.ranges[mapping.proto]
        if low <= mapping.port <= high:
            self.held[mapping.proto] += 1

    def release(self, mapping: Mapping) -> None:
        proto = mapping.proto
        by_guest = self.by_guest[proto]
        endpoint = (mapping.guest_ip, mapping.guest_port)
        if by_guest.get(endpoint) is mapping:
            del by_guest[endpoint]
        if self.by_port[proto].get(mapping.port) is mapping:
            del self.by_port[proto][mapping.port]
            low, high = self.ranges[proto]
            if low <= mapping.port <= high:
                self.held[proto] -= 1
