"""Watching the datapath: live traces (``vswitch trace``), captures (``vswitch capture``) and
mirror ports, fed from the daemon's delivery closure.

Rule 1: nothing is watched unless asked.  While no trace, capture or mirror is armed, ports
        deliver through the daemon's plain closure; arming swaps in a watched one and the
        router port's ``dispatch`` is wrapped, disarming swaps both back.  ``Switch.receive``
        is never touched (docs/architecture.md, "Seeing inside").
Rule 2: a watcher never holds the datapath up: each session holds at most ``QUEUE_FRAMES``
        records and ``QUEUE_BYTES`` of frames; what does not fit is dropped and counted, and
        the count goes to the client.  A trace keeps the first ``TRACE_SNAPLEN`` bytes of a
        frame (its headers: enough to describe it), a capture the whole frame.  Per frame,
        the watched closure only does the work of the points and sessions that are open.
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

from vswitch.guard import Guard, describe
from wire.filter import compile_filter

QUEUE_FRAMES = 4096
QUEUE_BYTES = 16 << 20
TRACE_SNAPLEN = 256
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
    queued: int = 0  #: bytes of frames in ``queue``
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, record: dict[str, Any], size: int) -> None:
        """Rule 2: queue ``record`` (``size`` bytes of frame) for the client, or count it
        dropped."""
        if len(self.queue) >= QUEUE_FRAMES or self.queued + size > QUEUE_BYTES:
            self.dropped += 1
            return
        self.queued += size
        self.queue.append(record)
        self.wake.set()

    def take(self) -> dict[str, Any]:
        record = self.queue.popleft()
        self.queued -= len(record["frame"]) // 2
        return record


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
                 name: Callable[[int], str], guarded: frozenset[int] = frozenset(),
                 guard: Guard | None = None) -> None:
        self.switch = switch
        self.guarded = guarded  #: ports the guards check (vswitch.guard), as the plain closure
        self.guard = guard if guard is not None else Guard(b"", frozenset())
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

    def _captures(self) -> dict[str, list[Session]]:
        """Capture sessions by the points they watch."""
        points: dict[str, list[Session]] = {}
        for s in self.sessions:
            if s.kind == "capture":
                for point in s.points:
                    points.setdefault(point, []).append(s)
        return points

    @staticmethod
    def _capture(sessions: list[Session], point: str, direction: str,
                 packet: bytes | bytearray, now: float) -> None:
        frame = bytes(packet[10:])
        for s in sessions:
            if s.match(frame):
                s.put({"t": now + s.offset, "point": point, "dir": direction,
                       "frame": frame.hex()}, len(frame))

    @staticmethod
    def _trace(sessions: list[Session], now: float, port: str, packet: bytes,
               lines: list[Decision]) -> None:
        head = packet[10:10 + TRACE_SNAPLEN]
        for s in sessions:
            s.put({"t": now + s.offset, "port": port, "frame": head.hex(),
                   "decisions": [list(line) for line in lines]}, len(head))

    def _mirror(self, port_id: int, rx: bool, packet: bytes) -> None:
        for m in self.mirrors:
            if port_id in m.sources and (m.rx if rx else m.tx):
                target = self.ports[m.to]
                if target is not None:
                    self.mirror_copies += 1
                    target.send(packet)  # a full target drops and counts it (tx-full)

    # -- the watched closures (Rule 1) -------------------------------------------------------

    def deliver(self) -> Callable[[bytes, int, float], None]:
        """The watched twin of the daemon's delivery closure, built for the sessions and
        mirrors open now (the daemon builds it again when they change)."""
        receive, explain = self.switch.receive, self.switch.explain
        ports, name, router_port = self.ports, self.name, self.router_port
        names = [name(i) for i in range(len(ports))]
        mirrored = {p for m in self.mirrors for p in (*m.sources, m.to)}
        mirror_targets = {m.to for m in self.mirrors}
        captures = self._captures()
        by_port = [captures.get(n) for n in names]  # per port id: who captures it, or None
        inside = captures.get(INSIDE)
        traces = [s for s in self.sessions if s.kind == "trace"]
        capture, trace, mirror = self._capture, self._trace, self._mirror
        guarded, drops, check = self.guarded, self.switch.drops, self.guard.check

        def deliver(packet: bytes, port_id: int, now: float) -> None:
            if port_id in mirror_targets:
                ports[port_id].drops["mirror-port-ingress"] += 1
                return
            port_name = names[port_id]
            sessions = by_port[port_id]
            if sessions:  # what the port received, before any guard: a capture shows it all
                capture(sessions, port_name, "rx", packet, now)
            if port_id in mirrored:
                mirror(port_id, True, packet)
            reason = check(packet, port_id) if port_id in guarded else None
            if reason is not None:
                drops[port_id][reason] += 1
                if traces:
                    tracing = [s for s in traces if (not s.points or port_name in s.points)
                               and s.match(packet[10:])]
                    trace(tracing, now, port_name, packet, [("guard", *describe(reason))])
                return
            tracing = None
            if traces:
                frame = packet[10:]
                tracing = [s for s in traces if (not s.points or port_name in s.points)
                           and s.match(frame)]
            lines: list[Decision] = []
            if tracing:
                lines = [(rule_owner(r), t, r)
                         for t, r in explain(packet, port_id, name, now)]
            outs = receive(packet, port_id, now)
            if tracing:
                if 0 in outs and router_port is not None:
                    lines += [(rule_owner(r), t, r) for t, r in router_port.explain(packet)]
                trace(tracing, now, port_name, packet, lines)
            for out in outs:
                if out in mirror_targets:
                    continue
                sessions = by_port[out]
                if sessions:
                    capture(sessions, names[out], "tx", packet, now)
                if out == 0 and inside and router_port.routes(packet) is not None:
                    capture(inside, INSIDE, "rx", packet, now)
                if out in mirrored:
                    mirror(out, False, packet)
                ports[out].send(packet)

        return deliver

    def dispatch(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        """The router port's ``dispatch``, watched: what the router sends to the guests is the
        inside of the uplink, what it sends out of the raw uplink the outside (Rule 4)."""
        capture, captures = self._capture, self._captures()
        inside, outside = captures.get(INSIDE), captures.get(OUTSIDE)
        loop = self.router_port.loop

        def dispatch(out: Any) -> None:
            now = loop.time()
            if inside:
                for packet in out.switch:
                    capture(inside, INSIDE, "tx", packet, now)
            if outside:
                for packet in out.uplink:
                    capture(outside, OUTSIDE, "tx", packet, now)
            original(out)

        return dispatch

    def from_uplink(self, original: Callable[[bytes, int, float], None],
                    router: Any) -> Callable[[bytes, int, float], None]:
        """The raw uplink's reader, watched: its frames are the outside (Rule 4), and a trace
        on ``uplink`` explains the router's decision for them."""
        capture, trace = self._capture, self._trace
        outside = self._captures().get(OUTSIDE)
        traces = [s for s in self.sessions if s.kind == "trace"
                  and (not s.points or "uplink" in s.points)]

        def from_uplink(packet: bytes, port_id: int, now: float) -> None:
            if outside:
                capture(outside, OUTSIDE, "rx", packet, now)
            if traces:
                frame = packet[10:]
                tracing = [s for s in traces if s.match(frame)]
                if tracing:
                    trace(tracing, now, "uplink", packet,
                          [(rule_owner(r), t, r) for t, r in router.explain_from_uplink(packet)])
            original(packet, port_id, now)

        return from_uplink
