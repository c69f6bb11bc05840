"""Token buckets (sans-I/O: ``now`` in): the ICMP errors vswitch originates, and the per-guest
budgets of the gateway's services (``KeyedBuckets``: DHCP per MAC, DNS per guest address).

Rule 1: an IPv6 node MUST limit the rate of the ICMPv6 errors it originates (RFC 4443 2.4 (f)),
        and a router should limit its ICMP errors (RFC 1812 4.3.2.8); a token bucket is the
        method RFC 4443 suggests.  ``burst`` errors may go at once (a traceroute's three probes
        per hop, a few connections failing together), then ``rate`` per second; what is over
        is not sent, and counted by the caller.  Linux's global ICMP limit is 1000/s with a
        burst of 50 (``net.ipv4.icmp_msgs_per_sec``, ``icmp_msgs_burst``): the same here.
Rule 2: one bucket per key (``KeyedBuckets``), so one guest over its budget does not spend
        another's.  The table holds at most ``max_keys`` buckets, the least recently used
        first out when a new key comes: a bucket unused for ``burst / rate`` seconds is full
        again, so forgetting it loses nothing; a flood of fresh keys only churns the table
        (each fresh key starts with a full bucket, which per-key budgets cannot prevent: the
        switch's own limits are for that).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")


class TokenBucket:
    def __init__(self, rate: float = 1000.0, burst: int = 50) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = 0.0

    def take(self, now: float) -> bool:
        """Whether one more event (an error, a request) may go at ``now`` (Rule 1)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


#: The ICMP error limiter's name (``nat.gateway6``, ``nat.router6``).
ErrorBudget = TokenBucket


class KeyedBuckets(Generic[K]):
    """Rule 2: ``rate`` events per second and ``burst`` at once, per key."""

    def __init__(self, rate: float, burst: int, max_keys: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        #: key -> [tokens, when last taken]; dict order is the order of last use (Rule 2)
        self._buckets: dict[K, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: K, now: float) -> bool:
        """Whether ``key`` may have one more event at ``now``; False: over its budget."""
        buckets = self._buckets
        bucket = buckets.pop(key, None)
        if bucket is None:
            if len(buckets) >= self.max_keys:  # the least recently used goes (Rule 2)
                del buckets[next(iter(buckets))]
            bucket = [float(self.burst), now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        buckets[key] = bucket
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True
