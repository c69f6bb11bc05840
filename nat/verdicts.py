"""What the NAT decides for a packet: a ``Translation`` (where it goes) or a ``Drop`` (why
not, and the ICMP error to send); the drops every caller counts by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple


class Translation(NamedTuple):
    """Where a packet goes: the tuple of the *other* direction, read in reverse (Rule 1).

    A flow's reply tuple ``(proto, remote, rport, external, eport)`` is exactly what a packet of
    the original direction must leave with, named the other way round: to ``remote:rport``
    from ``external:eport``.  So every stored key is a Translation and the per-packet path
    returns the other direction's key as it is: no allocation.  As a tuple it equals the
    plain 5-tuple, so it is found with one.
    """

    proto: int
    """IP protocol (1 ICMP, 6 TCP, 17 UDP)."""
    dst: bytes
    """New destination address."""
    dport: int
    """New destination port (ICMP echo: the identifier)."""
    src: bytes
    """New source address."""
    sport: int
    """New source port (ICMP echo: the identifier again)."""


@dataclass(frozen=True, slots=True)
class Drop:
    """The packet is not forwarded."""

    reason: str
    """Why, as counted in ``stats`` ("no-mapping", "table-full", ...)."""
    icmp: tuple[int, int] | None = None
    """The ICMP error (type, code) to send to the packet's source, or None to drop silently."""


NO_MAPPING: Final = Drop("no-mapping")
FILTERED: Final = Drop("filtered")
NOT_SYN: Final = Drop("not-syn")
TUPLE_CLASH: Final = Drop("tuple-clash")
TABLE_FULL: Final = Drop("table-full", (3, 13))  # RFC 5508 REQ-8, RFC 1812 5.2.7.1
PORTS_EXHAUSTED: Final = Drop("ports-exhausted", (3, 13))
#: A guest at its quota of flows (``nat.conntrack`` Rule 9): answered as a full table is.
GUEST_QUOTA: Final = Drop("guest-quota", (3, 13))
