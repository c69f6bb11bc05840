"""A token bucket for the ICMP errors vswitch originates (sans-I/O: ``now`` in).

Rule 1: an IPv6 node MUST limit the rate of the ICMPv6 errors it originates (RFC 4443 2.4 (f)),
        and a router should limit its ICMP errors (RFC 1812 4.3.2.8); a token bucket is the
        method RFC 4443 suggests.  ``burst`` errors may go at once (a traceroute's three probes
        per hop, a few connections failing together), then ``rate`` per second; what is over
        is not sent, and counted by the caller.  Linux's global ICMP limit is 1000/s with a
        burst of 50 (``net.ipv4.icmp_msgs_per_sec``, ``icmp_msgs_burst``): the same here.
"""

from __future__ import annotations


class ErrorBudget:
    def __init__(self, rate: float = 1000.0, burst: int = 50) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = 0.0

    def take(self, now: float) -> bool:
        """Whether one more error may be sent at ``now`` (Rule 1)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
