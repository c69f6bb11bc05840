"""The NAT's virtual reassembly: later fragments of a datagram take the verdict of its first.

The raw uplink's NAT never reassembles (``nat.reassembly`` does that only where vswitch is the
datagram's end); ``nat.translate`` asks this table what a fragment without ports should get.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from nat.verdicts import Drop, Translation


class _Datagram:
    """What is known of one fragmented datagram (see ``Fragments``)."""

    __slots__ = ("deadline", "verdict", "held", "held_bytes")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.verdict: Translation | Drop | None = None
        self.held: list[bytes] = []
        self.held_bytes = 0


#: (from outside, proto, source, destination, IP identification) of a datagram.
FragmentKey = tuple[bool, int, bytes, bytes, int]


class Fragments:
    """Virtual reassembly: later fragments get the translation of their datagram's first one.

    Rule F1: the NAT never reassembles.  Only the first fragment (offset 0) carries the ports;
             it is translated like a whole packet and its verdict is remembered for ``timeout``
             seconds (30 s, as Linux's ``ipfrag_time``) under the datagram's key (RFC 791 3.2:
             source, destination, protocol, identification; and the side it came from).
    Rule F2: later fragments take that verdict: their IP addresses are rewritten, nothing else.
    Rule F3: later fragments that come before their first wait for it (RFC 4787 REQ-14:
             out-of-order fragments).  Bounded: at most ``max_datagrams`` datagrams are known,
             the oldest forgotten first; at most ``max_held_bytes`` wait in all and
             ``MAX_HELD`` per datagram; what is still waiting at the deadline is dropped.
    """

    MAX_HELD: Final = 128

    def __init__(self, timeout: float = 30.0, max_datagrams: int = 1024,
                 max_held_bytes: int = 1 << 20) -> None:
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.max_held_bytes = max_held_bytes
        self.held_bytes = 0
        self.stats: Counter[str] = Counter()
        self._datagrams: dict[FragmentKey, _Datagram] = {}  # oldest first: fixed deadlines

    def __len__(self) -> int:
        return len(self._datagrams)

    def first(self, key: FragmentKey, verdict: Translation | Drop, now: float) -> list[bytes]:
        """Remember the first fragment's verdict; returns the later fragments that waited for
        it, to be rewritten with it (none when the verdict is a Drop)."""
        datagram = self._datagram(key, now)
        datagram.verdict = verdict
        held, datagram.held = datagram.held, []
        self.held_bytes -= datagram.held_bytes
        datagram.held_bytes = 0
        if isinstance(verdict, Drop):
            self.stats["dropped"] += len(held)
            return []
        return held

    def later(self, key: FragmentKey, packet: bytes, now: float) -> Translation | Drop | None:
        """The verdict for a later fragment; None when it waits for its first (Rule F3)."""
        datagram = self._datagram(key, now)
        if datagram.verdict is not None:
            return datagram.verdict
        if (len(datagram.held) >= self.MAX_HELD
                or self.held_bytes + len(packet) > self.max_held_bytes):
            self.stats["dropped"] += 1
            return Drop("fragments-full")
        datagram.held.append(packet)
        datagram.held_bytes += len(packet)
        self.held_bytes += len(packet)
        return None

    def _datagram(self, key: FragmentKey, now: float) -> _Datagram:
        datagram = self._datagrams.get(key)
        if datagram is None:
            if len(self._datagrams) >= self.max_datagrams:
                self._forget(next(iter(self._datagrams)))
                self.stats["evicted"] += 1
            datagram = self._datagrams[key] = _Datagram(now + self.timeout)
        return datagram

    def _forget(self, key: FragmentKey) -> None:
        datagram = self._datagrams.pop(key)
        self.held_bytes -= datagram.held_bytes
        self.stats["dropped"] += len(datagram.held)

    def expire(self, now: float) -> int:
        """Forget the datagrams past their deadline (their waiting fragments are dropped)."""
        expired = 0
        while self._datagrams:
            key, datagram = next(iter(self._datagrams.items()))
            if datagram.deadline > now:
                break
            self._forget(key)
            expired += 1
        return expired

    def next_deadline(self) -> float | None:
        for datagram in self._datagrams.values():
            return datagram.deadline
        return None
