"""bench.services reads perfdhcp, dnsperf, dnsmasq and vswitch output correctly (samples are
real output captured on the bench machine; they decide the README's numbers)."""

import pytest

from bench.services import (
    compare,
    dnsperf_summary,
    lease_count,
    log_problems,
    markdown,
    perfdhcp_summary,
    upstream_queries,
)

# perfdhcp 2.2.0 against vswitch, offered 1500/s (exit status 3: some exchanges incomplete)
PERFDHCP = """Running: perfdhcp -4 -l eth0 -r 1500 -R 50000 -p 3
Scenario: basic.
Multi-thread mode enabled.
***Rate statistics***
Rate: 608.251 4-way exchanges/second, expected rate: 1500

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 4499
received packets: 2696
drops: 1803
drops ratio: 40.0756 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.217 ms
avg delay: 405.459 ms
max delay: 1196.377 ms
std deviation: 403.331 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 2696
received packets: 1825
drops: 871
drops ratio: 32.307 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.227 ms
avg delay: 310.015 ms
max delay: 1196.326 ms
std deviation: 385.404 ms
collected packets: 0

"""

# perfdhcp against dnsmasq with its ICMP probe on: one OFFER after 3 s, no ACK at all
PERFDHCP_NO_ACK = """Running: perfdhcp -4 -l eth0 -r 1000 -R 50000 -p 5 -x aei
Scenario: basic.
Multi-thread mode enabled.
reached test-period.
***Rate statistics***
Rate: 0 4-way exchanges/second, expected rate: 1000

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 4999
received packets: 1
drops: 4998
drops ratio: 99.98 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 3003.040 ms
avg delay: 3003.040 ms
max delay: 3003.040 ms
std deviation: 0.000 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 1
received packets: 0
drops: 1
drops ratio: 100.000 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: inf ms
avg delay: min delay: n/a
avg delay: n/a
max delay: n/a
std deviation: n/a
collected packets: 0

Short waits for packets: 86760
Interrupted
"""

# dnsperf 2.10.0 against dnsmasq, one local name
DNSPERF = """DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 10.60.0.1 -d local.txt -l 5
[Status] Sending queries (to 10.60.0.1:53)
[Status] Started at: Sun Nov 22 00:42:25 2026
[Status] Stopping after 5.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         375029
  Queries completed:    375029 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 375029 (100.00%)
  Average packet size:  request 39, response 55
  Run time (s):         5.001165
  Queries per second:   74988.327720

  Average Latency (s):  0.001273 (min 0.000024, max 0.004174)
  Latency StdDev (s):   0.000491

"""

# dnsperf against an address nobody answers (199 of the 200 timeout lines left out)
DNSPERF_LOST = """DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 10.60.0.99 -d local.txt -l 2 -t 1
[Status] Sending queries (to 10.60.0.99:53)
[Status] Started at: Sun Nov 22 00:43:16 2026
[Status] Stopping after 2.000000 seconds
[Timeout] Query timed out: msg id 0
[Timeout] Query timed out: msg id 1
[Timeout] Query timed out: msg id 2
[Timeout] Query timed out: msg id 3
[Timeout] Query timed out: msg id 4
[Timeout] Query timed out: msg id 199
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         200
  Queries completed:    0 (0.00%)
  Queries lost:         200 (100.00%)

  Response codes:
  Average packet size:  request 39, response 0
  Run time (s):         2.000287
  Queries per second:   0.000000

  Average Latency (s):  0.000000 (min 0.000000, max 0.000000)

"""

# dnsmasq 2.90 --log-queries: an A record from --address, then two it refused
UPSTREAM_LOG = """Nov 22 00:45:46 dnsmasq[20327]: started, version 2.90 cachesize 150
Nov 22 00:45:46 dnsmasq[20327]: warning: no upstream servers configured
Nov 22 00:45:46 dnsmasq[20327]: cleared cache
Nov 22 00:45:47 dnsmasq[20327]: query[A] www.example.test from 127.0.0.1
Nov 22 00:45:47 dnsmasq[20327]: config www.example.test is 203.0.113.7
Nov 22 00:45:47 dnsmasq[20327]: query[AAAA] www.example.test from 127.0.0.1
Nov 22 00:45:47 dnsmasq[20327]: config error is REFUSED (EDE: not ready)
Nov 22 00:45:47 dnsmasq[20327]: query[A] other.example.test from 127.0.0.1
Nov 22 00:45:47 dnsmasq[20327]: config error is REFUSED (EDE: not ready)
"""

VSWITCH_LEASES = (
    '{"client": "01000c01020bf2", "expires": 1795311797.732751, "hostname": "",'
    ' "ip": "10.60.1.59", "mac": "00:0c:01:02:0b:f2", "state": "bound"}\n'
    '{"client": "01000c0102077e", "expires": 1795311795.0045164, "hostname": "",'
    ' "ip": "10.60.1.60", "mac": "00:0c:01:02:07:7e", "state": "bound"}\n'
)
DNSMASQ_LEASES = """1795311744 00:0c:01:02:04:f6 10.60.166.191 * 01:00:0c:01:02:04:f6
1795311744 00:0c:01:02:04:f5 10.60.166.190 * 01:00:0c:01:02:04:f5
"""

VSWITCH_LOG = """2026-11-22 00:42:38,874 INFO port gateway (router) up: 10.60.0.1 52:54:00:79:bd:cf
2026-11-22 00:42:38,874 INFO port gateway (router) opened: 10.60.0.1 52:54:00:79:bd:cf
2026-11-22 00:42:38,901 INFO port pc (attach) up: interface vc-p1
2026-11-22 00:44:10,184 WARNING MAC table full (8192 entries): evicted 921 entries from port s2, \
the port holding the most
Traceback (most recent call last):
  File "/work/main/vswitch/daemon.py", line 1, in run
"""


def test_perfdhcp_summary():
    s = perfdhcp_summary(PERFDHCP)
    assert s["rate"] == 608.251 and s["malformed"] == 0
    assert s["DISCOVER-OFFER"] == {
        "sent": 4499, "received": 2696, "drops": 1803, "orphans": 0, "rejected": 0,
        "non_unique": 0, "min_delay_ms": 0.217, "avg_delay_ms": 405.459,
        "max_delay_ms": 1196.377}
    assert s["REQUEST-ACK"]["sent"] == 2696 and s["REQUEST-ACK"]["received"] == 1825
    assert s["REQUEST-ACK"]["drops"] == 871


def test_perfdhcp_summary_without_replies_has_no_delays():
    s = perfdhcp_summary(PERFDHCP_NO_ACK)
    assert s["rate"] == 0
    assert s["DISCOVER-OFFER"]["received"] == 1 and s["DISCOVER-OFFER"]["max_delay_ms"] == 3003.04
    assert s["REQUEST-ACK"] == {"sent": 1, "received": 0, "drops": 1, "orphans": 0,
                                "rejected": 0, "non_unique": 0}


def test_perfdhcp_summary_rejects_other_output():
    with pytest.raises(ValueError, match="perfdhcp"):
        perfdhcp_summary("Error running perfdhcp: Failed to open socket\n")
    with pytest.raises(ValueError, match="DISCOVER-OFFER"):
        perfdhcp_summary(PERFDHCP.split("***Statistics")[0])


def test_dnsperf_summary():
    assert dnsperf_summary(DNSPERF) == {"sent": 375029, "completed": 375029, "lost": 0,
                                        "qps": 74988.32772, "codes": {"NOERROR": 375029}}
    lost = dnsperf_summary(DNSPERF_LOST)
    assert lost["lost"] == 200 and lost["completed"] == 0 and lost["qps"] == 0
    assert lost["codes"] == {}
    with pytest.raises(ValueError, match="dnsperf"):
        dnsperf_summary("dnsperf: invalid argument\n")


def test_upstream_queries_counts_one_name_of_any_type():
    assert upstream_queries(UPSTREAM_LOG, "www.example.test") == 2
    assert upstream_queries(UPSTREAM_LOG, "other.example.test") == 1
    assert upstream_queries(UPSTREAM_LOG, "example.test") == 0


def test_lease_files_and_log_problems():
    assert lease_count(VSWITCH_LEASES) == 2 and lease_count(DNSMASQ_LEASES) == 2
    assert lease_count("") == 0
    problems = log_problems(VSWITCH_LOG)
    assert len(problems) == 2 and " WARNING MAC table full" in problems[0]
    assert problems[1].startswith("Traceback")


def test_ratios_and_the_table():
    med = {"dnsmasq": {"dhcp_eps": 400.0, "dns_local_qps": 80000.0, "rss_peak_mib": 6.0},
           "vswitch": {"dhcp_eps": 600.0, "dns_local_qps": 20000.0, "rss_peak_mib": 34.0}}
    c = compare(med)
    assert c["dhcp_eps"] == {"value": 1.5, "target": 1.0, "met": True}
    assert c["dns_local_qps"]["value"] == 0.25 and c["dns_local_qps"]["met"] is False
    assert "dns_cached_qps" not in c
    report = {"date": "2026-11-22T00:00:00+00:00", "medians": med, "comparison": c,
              "rounds_requested": 3, "seconds": 10, "dhcp_rate": 1500, "clients": 50000,
              "tools": {"dnsmasq": "2.90"}, "machine": {"cpus": 2, "cpu": "x", "kernel": "6"},
              "rounds": [{"round": 1, "order": ["dnsmasq", "vswitch"],
                          "results": {"dnsmasq": {"error": "TimeoutError: x"},
                                      "vswitch": {"error": "RuntimeError: y"}}}]}
    table = markdown(report)
    assert "| DHCP exchanges (DORA) (exchanges/s) | 400 | 600 | 1.50x | >= 1x | yes |" in table
    assert "| DNS local name (queries/s) | 80,000 | 20,000 | 0.25x | >= 1x | **no** |" in table
    assert "| 1 | vswitch | error: RuntimeError: y |" in table
