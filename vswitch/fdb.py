"""The forwarding database (FDB): which port each unicast MAC lives behind.

Rule 1: an entry maps a unicast source MAC to the port it was last seen on and when.
Rule 2: an entry not refreshed for ``aging`` seconds is removed (IEEE 802.1D 7.9.2 ageing;
        300 s is the standard default, as Linux's bridge ``ageing_time``).
Rule 3: the table never holds more than ``limit`` entries.  When full, the earliest-learned entry
        of the port holding the most entries (on a tie, the learning port's) is evicted, so one
        port flooding random source MACs churns only its own entries and never another port's
        (Open vSwitch's mac-learning rule).
Rule 4: a port with its own ``mac_limit`` never holds more than that: its earliest-learned entry
        makes room.  Learning continues, so traffic toward evicted stations floods (fails open).
Rule 5: a MAC that moves ``FLAP_MOVES`` times within ``FLAP_WINDOW`` seconds is reported once as
        flapping; two ports claiming one MAC is almost always two guests with the same address.

The table is sans-I/O: time comes in as ``now`` and ageing runs when the adapter calls
``expire(now)`` at ``next_deadline()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from wire.packets import format_mac

from .events import MacAged, MacEvicted, MacFlapping, MacMoved

FLAP_MOVES: Final = 4
FLAP_WINDOW: Final = 10.0
#: After a flapping report, the same MAC is not reported again for this long.
FLAP_QUIET: Final = 60.0

Event = MacMoved | MacFlapping | MacEvicted
#: One decision in words and the rule that made it, as ``vswitch trace`` prints them.
Line = tuple[str, str]


class ForwardingTable:
    def __init__(self, aging: float = 300.0, limit: int = 8192) -> None:
        if aging <= 0 or limit < 1:
            raise ValueError("aging must be > 0 and limit >= 1")
        self.aging = aging
        self.limit = limit
        # mac -> [port, last_seen]; a mutable pair so a refresh is one store.  The switch reads
        # it directly on the per-frame path (``Switch.receive`` steps 3 and 5): a method call
        # per lookup costs as much as the whole decision.
        self.table: dict[bytes, list[float]] = {}
        self._entries = self.table
        # port -> its MACs in learning order (dicts keep insertion order): eviction order.
        self._by_port: dict[int, dict[bytes, None]] = {}
        self._port_limit: dict[int, int] = {}
        # mac -> (window_start, moves, ports, quiet_until): only for MACs that moved.
        self._flaps: dict[bytes, tuple[float, int, tuple[int, ...], float]] = {}
        self._deadline: float | None = None
        self.learned = 0
        self.moved = 0
        self.evicted = 0
        self.aged = 0

    def __len__(self) -> int:
        return len(self._entries)

    def set_port_limit(self, port: int, limit: int | None) -> None:
        """Give ``port`` its own entry limit (Rule 4), or remove it with ``None``."""
        if limit is None:
            self._port_limit.pop(port, None)
        else:
            self._port_limit[port] = limit

    def count(self, port: int) -> int:
        return len(self._by_port.get(port, ()))

    def lookup(self, mac: bytes) -> int | None:
        entry = self._entries.get(mac)
        return None if entry is None else int(entry[0])

    def learn(self, mac: bytes, port: int, now: float) -> list[Event] | None:
        """Record that ``mac`` was seen as a source on ``port``.

        1. Known on this port: refresh its time; done (the per-frame case, no allocation).
        2. Known on another port: move it (Rule 1) and report the move, and a flap (Rule 5).
        3. New: make room if the port is at its limit (Rule 4) or the table is full (Rule 3),
           then add it.
        Returns the events to report, or None when there is nothing to say.
        """
        entry = self._entries.get(mac)
        # Step 1
        if entry is not None and entry[0] == port:
            entry[1] = now
            return None
        events: list[Event] = []
        # Step 2
        if entry is not None:
            old = int(entry[0])
            del self._by_port[old][mac]
            entry[0] = port
            entry[1] = now
            self._by_port.setdefault(port, {})[mac] = None
            self.moved += 1
            events.append(MacMoved(mac, old, port))
            flap = self._note_move(mac, old, port, now)
            if flap is not None:
                events.append(flap)
            return events
        # Step 3
        own = self._by_port.setdefault(port, {})
        port_limit = self._port_limit.get(port)
        if port_limit is not None and len(own) >= port_limit:
            events.append(self._evict(port, "port-limit"))
        elif len(self._entries) >= self.limit:
            events.append(self._evict(self._fullest_port(port), "table-full"))
        self._entries[mac] = [port, now]
        own[mac] = None
        self.learned += 1
        if self._deadline is None:
            self._deadline = now + self.aging
        return events or None

    def explain_learn(self, mac: bytes, port: int, name: Callable[[int], str]) -> Line:
        """What ``learn(mac, port, ...)`` would do, in words, changing nothing (for trace)."""
        entry = self._entries.get(mac)
        where = f"{format_mac(mac)} on {name(port)}"
        if entry is not None and entry[0] == port:
            return f"known {where} (refreshed)", "fdb Rule 2"
        if entry is not None:
            return f"{where}: moved from {name(int(entry[0]))}", "fdb Rule 1"
        own = self._by_port.get(port, {})
        port_limit = self._port_limit.get(port)
        if port_limit is not None and len(own) >= port_limit:
            victim = next(iter(own))
            return (f"learned {where}, evicting {format_mac(victim)} (the port's mac_limit "
                    f"{port_limit} is reached)", "fdb Rule 4")
        if len(self._entries) >= self.limit:
            fullest = port if port not in self._by_port else self._fullest_port(port)
            victim = next(iter(self._by_port[fullest]))
            return (f"learned {where}, evicting {format_mac(victim)} of {name(fullest)} "
                    f"(table full: {self.limit} entries)", "fdb Rule 3")
        return f"learned {where}", "fdb Rule 1"

    def _fullest_port(self, learning: int) -> int:
        """The port holding the most entries; on a tie, the learning port pays for itself."""
        fullest = max(self._by_port, key=lambda p: len(self._by_port[p]))
        if len(self._by_port[learning]) >= len(self._by_port[fullest]):
            return learning
        return fullest

    def _evict(self, port: int, reason: str) -> MacEvicted:
        own = self._by_port[port]
        mac = next(iter(own))
        del own[mac]
        del self._entries[mac]
        self._flaps.pop(mac, None)
        self.evicted += 1
        return MacEvicted(mac, port, reason)

    def _note_move(self, mac: bytes, old: int, new: int, now: float) -> MacFlapping | None:
        start, moves, ports, quiet = self._flaps.get(mac, (now, 0, (), 0.0))
        if now - start > FLAP_WINDOW:
            start, moves, ports = now, 0, ()
        moves += 1
        ports = tuple(sorted(set(ports) | {old, new}))
        report = moves >= FLAP_MOVES and now >= quiet
        if report:
            quiet = now + FLAP_QUIET
        self._flaps[mac] = (start, moves, ports, quiet)
        return MacFlapping(mac, ports, moves) if report else None

    def next_deadline(self) -> float | None:
        """When ``expire`` may next remove something (never later than the true time)."""
        return self._deadline

    def expire(self, now: float) -> MacAged | None:
        """Remove entries older than the ageing time (Rule 2); re-arm the deadline."""
        cutoff = now - self.aging
        stale = [mac for mac, (_, seen) in self._entries.items() if seen <= cutoff]
        for mac in stale:
            self._remove(mac)
        oldest = min((seen for _, seen in self._entries.values()), default=None)
        self._deadline = None if oldest is None else oldest + self.aging
        if not stale:
            return None
        self.aged += len(stale)
        return MacAged(len(stale))

    def _remove(self, mac: bytes) -> None:
        port, _ = self._entries.pop(mac)
        del self._by_port[int(port)][mac]
        self._flaps.pop(mac, None)

    def flush_port(self, port: int) -> int:
        """Forget every MAC learned on ``port`` (it went down or was removed)."""
        own = self._by_port.pop(port, {})
        for mac in own:
            del self._entries[mac]
            self._flaps.pop(mac, None)
        return len(own)

    def entries(self, now: float) -> Iterator[tuple[bytes, int, float]]:
        """(mac, port, seconds until it ages out) for every entry, for display."""
        for mac, (port, seen) in self._entries.items():
            yield mac, int(port), max(0.0, seen + self.aging - now)
