"""Watching the datapath: live traces (``vswitch trace``), captures (``vswitch capture``) and
mirror ports, fed from the daemon's delivery closure.

Rule 1: nothing is watched unless asked.  While no trace, capture or mirror is armed, ports
        deliver through the daemon's plain closure; arming swaps in a watched one and the
        router port's ``dispatch`` is wrapped, disarming swaps both back.  ``Switch.receive``
        is never touched (docs/architecture.md, "Seeing inside").
Rule 2: a watcher never slows the datapath: each session holds at most ``QUEUE_FRAMES``
        records; what does not fit is dropped and counted, and the count goes to the client.
Rule 3: a trace explains each decision with the cores' pure ``explain`` functions, called just
        before the decision, so they read the state the decision reads.  Only frames the
        session's filter matches are explained.
Rule 4: capture points: a port's name (rx: what the switch received from it, tx: what it sent
        to it), ``gateway`` (the router port), ``uplink-inside`` (routed packets on the guest
        side of the router: before the NAT going out, after it coming back) and
        ``uplink-outside`` (the raw uplink's own frames: after the NAT going out).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wire.filter import compile_filter

QUEUE_FRAMES = 4096
GATEWAY, INSIDE, OUTSIDE = "gateway", "uplink-inside", "uplink-outside"

#: (where, decision, rule) lines of one traced frame.
Decision = tuple[str, str, str]


@dataclass(eq=False)
class Session:
    """One client's trace or capture: what it wants and the records waiting for it."""

    kind: str  #: "trace" or "capture"
    match: Callable[[bytes], bool]
    points: frozenset[str] = frozenset()  #: capture points (Rule 4); a trace's ingress ports
    offset: float = 0.0  #: wall clock minus the loop's clock: records carry wall time
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    dropped: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, record: dict[str, Any]) -> None:
        """Rule 2: queue ``record`` for the client, or count it dropped."""
        if len(self.queue) >= QUEUE_FRAMES:
            self.dropped += 1
            return
        self.queue.append(record)
        self.wake.set()


def make_session(kind: str, filter_text: str, points: frozenset[str],
                 offset: float) -> Session:
    """A session; a bad filter raises ``wire.filter.FilterError`` with its one message."""
    return Session(kind, compile_filter(filter_text), points, offset)


def rule_owner(rule: str) -> str:
    """The part a rule belongs to ("switch Rule 2" -> "switch"), as trace prints it."""
    return rule.split(" ", 1)[0]


@dataclass(frozen=True)
class Mirror:
    """``[[mirror]]``: copies of what ``sources`` receive and/or send, out of ``to``."""

    sources: frozenset[int]
    to: int
    rx: bool
    tx: bool


class Watch:
    """The armed sessions and mirrors, and the watched closures the daemon installs while
    any is armed (Rule 1)."""

    def __init__(self, switch: Any, ports: list[Any], router_port: Any,
                 name: Callable[[int], str]) -> None:
        self.switch = switch
        self.ports = ports
        self.router_port = router_port
        self.name = name
        self.sessions: list[Session] = []
        self.mirrors: list[Mirror] = []
        self.mirror_copies = 0

    @property
    def armed(self) -> bool:
        return bool(self.sessions or self.mirrors)

    # -- the records ---------------------------------------------------------------------

    def _capture(self, point: str, direction: str, packet: bytes | bytearray,
                 now: float) -> None:
        frame = bytes(packet[10:])
        for s in self.sessions:
            if s.kind == "capture" and point in s.points and s.match(frame):
                s.put({"t": now + s.offset, "point": point, "dir": direction,
                       "frame": frame.hex()})

    def _tracing(self, packet: bytes, port_name: str) -> list[Session]:
        frame = packet[10:]
        return [s for s in self.sessions if s.kind == "trace"
                and (not s.points or port_name in s.points) and s.match(frame)]

    def _trace(self, sessions: list[Session], now: float, port: str, packet: bytes,
               lines: list[Decision]) -> None:
        for s in sessions:
            s.put({"t": now + s.offset, "port": port, "frame": packet[10:].hex(),
                   "decisions": [list(line) for line in lines]})

    def _mirror(self, port_id: int, rx: bool, packet: bytes) -> None:
        for m in self.mirrors:
            if port_id in m.sources and (m.rx if rx else m.tx):
                target = self.ports[m.to]
                if target is not None:
                    self.mirror_copies += 1
                    target.send(packet)  # a full target drops and counts it (tx-full)

    # -- the watched closures (Rule 1) -------------------------------------------------------

    def deliver(self) -> Callable[[bytes, int, float], None]:
        """The watched twin of the daemon's delivery closure."""
        receive = self.switch.receive
        ports, name, router_port = self.ports, self.name, self.router_port
        mirror_targets = {m.to for m in self.mirrors}
        capture, tracing, trace, mirror = self._capture, self._tracing, self._trace, self._mirror

        def deliver(packet: bytes, port_id: int, now: float) -> None:
            if port_id in mirror_targets:
                ports[port_id].drops["mirror-port-ingress"] += 1
                return
            port_name = name(port_id)
            capture(port_name, "rx", packet, now)
            mirror(port_id, True, packet)
            sessions = tracing(packet, port_name)
            lines: list[Decision] = []
            if sessions:
                lines = [(rule_owner(r), t, r) for t, r in
                         self.switch.explain(packet, port_id, name)]
            outs = receive(packet, port_id, now)
            if sessions:
                if 0 in outs and router_port is not None:
                    lines += [(rule_owner(r), t, r) for t, r in router_port.explain(packet)]
                trace(sessions, now, port_name, packet, lines)
            for out in outs:
                if out in mirror_targets:
                    continue
                out_name = name(out)
                capture(out_name, "tx", packet, now)
                if out == 0 and router_port is not None \
                        and router_port.routes(packet) is not None:
                    capture(INSIDE, "rx", packet, now)
                mirror(out, False, packet)
                ports[out].send(packet)

        return deliver

    def dispatch(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        """The router port's ``dispatch``, watched: what the router sends to the guests is the
        inside of the uplink, what it sends out of the raw uplink the outside (Rule 4)."""
        capture = self._capture
        loop = self.router_port.loop

        def dispatch(out: Any) -> None:
            now = loop.time()
            for packet in out.switch:
                capture(INSIDE, "tx", packet, now)
            for packet in out.uplink:
                capture(OUTSIDE, "tx", packet, now)
            original(out)

        return dispatch

    def from_uplink(self, original: Callable[[bytes, int, float], None],
                    router: Any) -> Callable[[bytes, int, float], None]:
        """The raw uplink's reader, watched: its frames are the outside (Rule 4), and a trace
        on ``uplink`` explains the router's decision for them."""
        capture, tracing, trace = self._capture, self._tracing, self._trace

        def from_uplink(packet: bytes, port_id: int, now: float) -> None:
            capture(OUTSIDE, "rx", packet, now)
            sessions = tracing(packet, "uplink")
            if sessions:
                trace(sessions, now, "uplink", packet,
                      [(rule_owner(r), t, r) for t, r in router.explain_from_uplink(packet)])
            original(packet, port_id, now)

        return from_uplink
