"""DNS over TCP on the gateway's IPv6 addresses with a real kernel: a namespace guest asks
``dig +tcp`` for a name and an address at the gateway's address in the prefix and at its
link-local one (nat.gateway6 Rule 9, nat.tcp_server), several queries on one connection."""

from __future__ import annotations

import ipaddress
import re

import pytest

from tests.lab import test_ipv6
from tests.lab.test_ipv6 import PREFIX, global_addresses
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged
v6_guests = test_ipv6.v6_guests  # the fixture: a daemon with subnet6 and a namespace guest

GATEWAY6 = f"{PREFIX}1"
SIX6 = ipaddress.IPv6Address(f"{PREFIX}66")


def tcp_counters(daemon) -> tuple[int, int]:
    """(connections the IPv6 gateway's TCP services took, segments dropped for checksums)."""
    router = daemon.show("router")
    return router.get("gateway6-tcp-connections", 0), router.get("gateway6-tcp-bad-checksum", 0)


def test_dig_over_tcp_to_the_gateways_ipv6_addresses(lab, v6_guests):
    daemon, ns, dev, _ = v6_guests
    prefix = ipaddress.IPv6Network(f"{PREFIX}/64")
    wait_for(lambda: any(a in prefix for a in global_addresses(lab, ns, dev)), 30,
             "a SLAAC address")
    before, _ = tcp_counters(daemon)

    def dig(*args: str, server: str = GATEWAY6) -> str:
        # +tcp never falls back to UDP; +tries=1: one connection per query; the server and
        # the options first, for every query on the line
        return lab.run(ns, ["dig", f"@{server}", "+tcp", "+tries=1", "+time=3", *args],
                       timeout=30).stdout

    out = dig("AAAA", "six.six.internal")
    assert re.search(r";; SERVER: fd42:0:0:7::1#53\(fd42:0:0:7::1\) \(TCP\)", out), out
    answers = re.findall(r"^six\.six\.internal\.\s+\d+\s+IN\s+AAAA\s+(\S+)$", out, re.M)
    assert SIX6 in {ipaddress.IPv6Address(a) for a in answers}, out
    out = dig("+short", "-x", str(SIX6))
    assert out.strip() == "six.six.internal.", out
    took, bad = tcp_counters(daemon)
    assert took - before == 2 and bad == 0, daemon.show("router")

    # two queries on one connection (RFC 7766 6.2.1): dig +keepopen reuses its socket
    out = dig("+keepopen", "+short", "AAAA", "six.six.internal", "A", "six.six.internal")
    assert str(SIX6) in out.split() and "10.77.0.66" in out.split(), out
    assert tcp_counters(daemon)[0] - took == 1, daemon.show("router")

    # the gateway's link-local address (the default route's next hop) answers over TCP too
    route = lab.run(ns, ["ip", "-6", "route", "show", "default"]).stdout
    found = re.search(r"default via (fe80::\S+) dev", route)
    assert found, route
    out = dig("+short", "AAAA", "six.six.internal", server=f"{found[1]}%{dev}")
    assert str(SIX6) in out.split(), out
    assert tcp_counters(daemon) == (took + 2, 0), daemon.show("router")
