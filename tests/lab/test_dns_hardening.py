"""DNS hardening through the gateway (dhcp/dns.py Rules 8, 11, 12, 13), with dig in a guest
namespace and tests/peers/dns_upstream.py as a misbehaving upstream: an out-of-bailiwick record is
neither passed on nor cached, a huge TTL is capped, a reply that loses the 0x20 case is dropped,
and a big answer is truncated over UDP and fetched whole over TCP.
"""

from __future__ import annotations

import pytest

from tests.lab.test_services import GW, svc  # noqa: F401  (the fixture, reused)

pytestmark = pytest.mark.privileged


def dig(s, ns: str, *args: str) -> str:
    return s.lab.run(ns, ["dig", "+time=3", "+tries=2", f"@{GW}", *args], timeout=30).stdout


def test_poison_ttl_0x20_and_truncation_through_the_gateway(svc):  # noqa: F811
    ns = svc.static("s2", "10.253.0.20")
    # 1. bailiwick: the extra A for www.bank.test is dropped, the answer itself passes
    out = dig(svc, ns, "+noall", "+answer", "+authority", "+additional", "poison.example.test")
    assert "203.0.113.8" in out and "bank.test" not in out and "6.6.6.6" not in out, out
    # ... and not cached: asking for it goes upstream, which answers with its own address
    assert dig(svc, ns, "+short", "www.bank.test").strip() == "203.0.113.7"
    # 2. TTL capped at a day, in the first answer and in the cached one
    for _ in range(2):
        line = dig(svc, ns, "+noall", "+answer", "longttl.example.test").split()
        assert line[-1] == "203.0.113.9" and 86390 <= int(line[1]) <= 86400, line
    # 3. 0x20: the blind spoofer's lower-cased reply is dropped, the genuine one accepted
    assert dig(svc, ns, "+short", "mangle.example.test").strip() == "198.51.100.1"
    # 4. truncation: 60 A records do not fit 512 octets; dig sees TC and retries over TCP
    out = dig(svc, ns, "+bufsize=512", "+noall", "+answer", "+comments", "big3.example.test")
    assert "Truncated, retrying in TCP mode" in out, out
    assert out.count("203.0.113.") == 60, out
    out = dig(svc, ns, "+noedns", "+notcp", "+ignore", "+noall", "+comments", "+answer",
              "big3.example.test")
    assert " tc" in out.split("flags:")[1].split(";")[0] and "203.0.113." not in out, \
        "whole RRsets only: the one RRset does not fit, so none of it is sent"
    stats = svc.daemon.show("dns")
    assert stats["scrubbed"] >= 2 and stats["case_mismatch"] >= 1, stats
    svc.upstream.terminate()
    seen = svc.upstream.communicate(timeout=10)[0].splitlines()
    assert seen.count("QUERY udp www.bank.test. 1") == 1, seen
    assert seen.count("QUERY udp longttl.example.test. 1") == 1, "the second came from the cache"
    assert seen.count("QUERY udp big3.example.test. 1") == 1, "TCP was answered from the cache"
    spelled = [line.split()[1] for line in seen if line.startswith("SPELLED ")]
    assert spelled and spelled[0] != "mangle.example.test.", "the upstream saw a mixed case"
