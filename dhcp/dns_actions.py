"""What the DNS responder (``dhcp.dns``) asks its adapter to do, and what it counts: frozen
actions, returned by ``handle_query``, ``handle_reply`` and ``expire``, never performed by the
core itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Transport = Literal["udp", "tcp"]
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Answer:
    """Send a DNS response to a client."""

    client: tuple[Any, ...]
    """The client address given to ``handle_query``, echoed unchanged."""
    payload: bytes
    """The DNS message; over TCP without its length prefix (frame it with encode_tcp_frame)."""
    transport: Transport
    """"udp" or "tcp": how the query arrived and how the answer leaves."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Send a query to an upstream resolver from a fresh random source port (Rule 3)."""

    upstream: Address
    """The resolver's (ip, port)."""
    payload: bytes
    """The DNS query with the core's random ID; over TCP without its length prefix."""
    query_id: int
    """The ID in ``payload`` (for logs; the core does the matching)."""
    key: int
    """This attempt's token: pass it to ``sent_from``; a later ``Release(key)`` ends it."""
    transport: Transport
    """"udp", or "tcp" for a query that came over TCP (a TCP connection per attempt)."""


@dataclass(frozen=True, slots=True)
class Release:
    """An upstream attempt is over (answered, retried or failed): close its socket."""

    key: int
    """The ``Forward.key`` of the attempt."""


Action = Answer | Forward | Release


@dataclass(slots=True)
class DnsStats:
    """Counters for ``vswitch show``; they only grow."""

    queries: int = 0
    """Client messages handed to ``handle_query``."""
    local: int = 0
    """Queries answered from local names (Rule 1, 2)."""
    cache_hits: int = 0
    """Queries answered from the cache (Rule 7)."""
    forwarded: int = 0
    """Queries sent upstream, retries included (Rule 3)."""
    merged: int = 0
    """Queries joined to an identical pending one (Rule 5)."""
    spoofed: int = 0
    """Upstream datagrams ignored by Rule 4 (0x20 case mismatches included)."""
    case_mismatch: int = 0
    """Of ``spoofed``: replies whose question did not keep our random 0x20 case (Rule 11)."""
    scrubbed: int = 0
    """Out-of-bailiwick records removed from upstream replies, never cached nor sent (Rule 12)."""
    malformed: int = 0
    """Undecodable queries and replies (Rule 9)."""
    servfail: int = 0
    """SERVFAIL answers sent (pending table full, upstream timeouts)."""
    pending_full: int = 0
    """Queries refused because ``max_pending`` or ``MAX_WAITERS`` was reached (Rule 6)."""
    timeouts: int = 0
    """Upstream attempts that got no accepted reply in time."""
    memo_hits: int = 0
    """Repeat queries answered from remembered wire bytes (Rule 10)."""
