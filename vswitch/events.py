"""Events the switch core reports to its adapter, which logs them (one line per event).

Rule: the core never logs or prints; it returns these and the daemon decides what to say.
Nothing here is produced per ordinary frame: only moves, flaps, evictions and ageing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MacMoved:
    """A source MAC appeared on a different port than the one it was learned on."""

    mac: bytes
    """The station's address."""
    old_port: int
    """Port id it was learned on before."""
    new_port: int
    """Port id it was just seen on, where it now lives."""


@dataclass(frozen=True, slots=True)
class MacFlapping:
    """A MAC keeps moving between ports: two guests probably share one address."""

    mac: bytes
    """The contested address (qemu's default 52:54:00:12:34:56 is the classic case)."""
    ports: tuple[int, ...]
    """The port ids that claimed it within the window."""
    moves: int
    """How many moves were seen within the window."""


@dataclass(frozen=True, slots=True)
class MacEvicted:
    """The table was full and an entry was removed to make room (fair eviction)."""

    mac: bytes
    """The evicted address."""
    port: int
    """The port it was learned on: the port holding the most entries, or over its own limit."""
    reason: str
    """"table-full" or "port-limit"."""


@dataclass(frozen=True, slots=True)
class MacAged:
    """Entries not refreshed within the ageing time were removed."""

    count: int
    """How many entries aged out in this pass."""
