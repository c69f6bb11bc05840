"""The benchmark's parsers read real tool output correctly (they decide the README's numbers)."""

import pytest

from bench.bridge import compare
from bench.common import (
    cpu_ticks,
    iperf_tcp_bps,
    iperf_udp_pps,
    percentile,
    ping_rtts_ms,
    snmp_counter,
    vm_hwm_kib,
)

PING = """PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.
64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.094 ms
64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=1.20 ms
64 bytes from 10.77.0.2: icmp_seq=3 ttl=64 time=0.051 ms

--- 10.77.0.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 10ms
rtt min/avg/max/mdev = 0.051/0.448/1.200/0.532 ms
"""


def test_ping_times_without_the_summary_line():
    assert ping_rtts_ms(PING) == [0.094, 1.20, 0.051]


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([10, 20], 99) == pytest.approx(19.9)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_iperf_json():
    tcp = {"end": {"sum_received": {"bits_per_second": 1.5e10}}}
    assert iperf_tcp_bps(tcp) == 1.5e10
    udp = {"end": {"sum_received": {"packets": 1000, "lost_packets": 200, "seconds": 2.0}}}
    assert iperf_udp_pps(udp) == 400
    with pytest.raises(ValueError, match="iperf3: unable"):
        iperf_tcp_bps({"error": "unable to connect"})


def test_proc_files():
    stat = "1234 (vswitch run) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0 100 2000 300"
    assert cpu_ticks(stat) == 175
    assert vm_hwm_kib("Name:\tx\nVmHWM:\t   26112 kB\nVmRSS:\t 1 kB\n") == 26112
    snmp = "Udp: InDatagrams NoPorts RcvbufErrors\nUdp: 10 0 7\n"
    assert snmp_counter(snmp, "Udp", "RcvbufErrors") == 7


def test_ratios_and_rtt_difference_against_the_kernel():
    med = {"kernel": {"tcp_bps": 10.0, "rtt_median_us": 10.0},
           "vswitch": {"tcp_bps": 9.5, "rtt_median_us": 60.0}}
    out = compare(med)["vswitch"]
    assert out["tcp_bps"]["value"] == 0.95 and out["tcp_bps"]["met"] is True
    assert out["rtt_median_us"]["value"] == 50.0 and out["rtt_median_us"]["met"] is False
