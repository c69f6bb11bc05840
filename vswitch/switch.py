"""The learning switch: for each packet, the ports it goes out of.

Rule 1: a frame never goes back out of the port it came in on (IEEE 802.1D 7.7.1).
Rule 2: broadcast, multicast and unknown unicast flood to every other port that is up.
Rule 3: a frame whose source MAC is multicast or all zeros is dropped: no station has that
        address (IEEE 802 48-bit addresses: the I/G bit marks group addresses), and learning it
        would poison the table.
Rule 4: runts (shorter than an Ethernet header) and frames above the ingress port's MTU that are
        not GSO packets are dropped.  Every drop is counted per port with its reason.

Packets are vswitch packets (``wire.vnet`` Rule 1: virtio-net header + frame).  The core is
sans-I/O: ``receive(packet, port, now)`` returns a tuple of port ids and never touches a socket.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final

from wire.packets import format_mac
from wire.vnet import DST_MAC, ETH_HLEN, MIN_PACKET, SRC_MAC, VNET_HDR_LEN

from .fdb import Event, ForwardingTable, Line

ZERO_MAC: Final = bytes(6)
NOWHERE: Final[tuple[int, ...]] = ()

# Drop reasons, as shown by `vswitch show ports`.
RUNT: Final = "runt"
OVERSIZE: Final = "oversize"
BAD_SOURCE: Final = "bad-source-mac"
SAME_PORT: Final = "same-port"
PORT_DOWN: Final = "ingress-down"

#: 4 bytes of 802.1Q tag allowed above MTU + Ethernet header, as the Linux bridge allows.
VLAN_SLACK: Final = 4


class Switch:
    def __init__(self, fdb: ForwardingTable, on_event: Callable[[Event], None] | None = None):
        self.fdb = fdb
        self._table = fdb.table
        self.on_event = on_event
        self._up: dict[int, bool] = {}
        self._max_packet: dict[int, int] = {}
        # ingress port -> flood set; rebuilt whenever a port is added, removed, or changes state.
        self._flood: dict[int, tuple[int, ...]] = {}
        self._unicast: dict[int, tuple[int, ...]] = {}
        self.drops: dict[int, Counter[str]] = {}
        self.flooded = 0

    # -- ports -------------------------------------------------------------------------------

    def add_port(self, port: int, mtu: int = 1500, up: bool = True) -> None:
        self._up[port] = up
        self._max_packet[port] = VNET_HDR_LEN + ETH_HLEN + VLAN_SLACK + mtu
        self._unicast[port] = (port,)
        self.drops.setdefault(port, Counter())
        self._rebuild()

    def remove_port(self, port: int) -> None:
        for table in (self._up, self._max_packet, self._unicast):
            table.pop(port, None)
        self.fdb.flush_port(port)
        self._rebuild()

    def set_up(self, port: int, up: bool) -> None:
        """A port went up or down; a down port's MACs are forgotten so traffic floods again."""
        if self._up.get(port) == up:
            return
        self._up[port] = up
        if not up:
            self.fdb.flush_port(port)
        self._rebuild()

    def is_up(self, port: int) -> bool:
        return self._up.get(port, False)

    def _rebuild(self) -> None:
        up = [p for p, state in self._up.items() if state]
        self._flood = {p: tuple(q for q in up if q != p) for p in self._up}

    # -- the decision --------------------------------------------------------------------------

    def receive(self, packet: bytes, port: int, now: float) -> tuple[int, ...]:
        """Where ``packet``, received on ``port`` at ``now``, must go.

        1. Drop runts, oversize non-GSO frames and frames from a down port (Rule 4).
        2. Drop frames from a multicast or all-zero source (Rule 3).
        3. Learn the source MAC on the ingress port.
        4. Group destination (I/G bit set): flood (Rule 2).
        5. Known unicast destination: its port, unless that is the ingress port (Rule 1) or down.
        6. Unknown unicast: flood (Rule 2).
        """
        # Step 1
        size = len(packet)
        if size < MIN_PACKET:
            return self._drop(port, RUNT)
        if size > self._max_packet[port] and not packet[1]:
            return self._drop(port, OVERSIZE)
        if not self._up[port]:
            return self._drop(port, PORT_DOWN)
        # Step 2
        src = packet[SRC_MAC]
        if src[0] & 1 or src == ZERO_MAC:
            return self._drop(port, BAD_SOURCE)
        # Step 3: the known-station case inline (a refresh), the rest in ForwardingTable.learn
        table = self._table
        entry = table.get(src)
        if entry is not None and entry[0] == port:
            entry[1] = now
        else:
            events = self.fdb.learn(src, port, now)
            if events is not None and self.on_event is not None:
                for event in events:
                    self.on_event(event)
        # Step 4
        dst = packet[DST_MAC]
        if dst[0] & 1:
            self.flooded += 1
            return self._flood[port]
        # Step 5
        entry = table.get(dst)
        if entry is not None:
            out = entry[0]
            if out == port:
                return self._drop(port, SAME_PORT)
            if self._up[out]:  # type: ignore[index]
                return self._unicast[out]  # type: ignore[index]
        # Step 6
        self.flooded += 1
        return self._flood[port]

    def explain(self, packet: bytes, port: int, name: Callable[[int], str]) -> list[Line]:
        """What ``receive(packet, port, ...)`` would decide, step by step in words, with the
        rule of each; changes nothing (``vswitch trace`` and ``vswitch explain``)."""
        # Step 1
        size = len(packet)
        if size < MIN_PACKET:
            return [(f"dropped: {RUNT} ({size - VNET_HDR_LEN} bytes)", "switch Rule 4")]
        if size > self._max_packet.get(port, size) and not packet[1]:
            return [(f"dropped: {OVERSIZE} (above the MTU of {name(port)})", "switch Rule 4")]
        if not self._up.get(port, False):
            return [(f"dropped: {PORT_DOWN}", "switch Rule 4")]
        # Step 2
        src = packet[SRC_MAC]
        if src[0] & 1 or src == ZERO_MAC:
            return [(f"dropped: {BAD_SOURCE}", "switch Rule 3")]
        # Step 3
        lines = [self.fdb.explain_learn(src, port, name)]
        # Step 4
        dst = packet[DST_MAC]
        flood = ",".join(name(p) for p in self._flood[port]) or "nobody"
        if dst[0] & 1:
            why = "broadcast" if dst == b"\xff" * 6 else "multicast"
            return [*lines, (f"flooded to {flood} ({why})", "switch Rule 2")]
        # Step 5
        entry = self._table.get(dst)
        if entry is not None:
            out = int(entry[0])
            if out == port:
                return [*lines, (f"dropped: {SAME_PORT} ({format_mac(dst)} is on "
                                 f"{name(port)} itself)", "switch Rule 1")]
            if self._up[out]:
                return [*lines, (f"forwarded to {name(out)}", "switch step 5")]
        # Step 6
        return [*lines, (f"flooded to {flood} (unknown unicast {format_mac(dst)})",
                         "switch Rule 2")]

    def _drop(self, port: int, reason: str) -> tuple[int, ...]:
        self.drops[port][reason] += 1
        return NOWHERE
