"""bench.egress's parsers and verdicts (they decide the README's host-uplink numbers)."""

import json
import tomllib
from pathlib import Path

import pytest

from bench.egress import (
    compare,
    has_address,
    has_default_route,
    markdown,
    ping_summary,
    rr_result,
    rr_summary,
    vswitch_config,
)
from vswitch.config import load_config

PING = """PING 10.91.0.1 (10.91.0.1) 56(84) bytes of data.
64 bytes from 10.91.0.1: icmp_seq=1 ttl=64 time=0.152 ms
64 bytes from 10.91.0.1: icmp_seq=2 ttl=64 time=0.100 ms
64 bytes from 10.91.0.1: icmp_seq=4 ttl=255 time=1.30 ms
64 bytes from 10.91.0.1: icmp_seq=5 ttl=64 time=0.120 ms

--- 10.91.0.1 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 40ms
rtt min/avg/max/mdev = 0.100/0.418/1.300/0.509 ms
"""


def test_ping_summary_uses_the_per_packet_times():
    s = ping_summary(PING, 5)
    assert s["ping_median_us"] == pytest.approx(136.0)
    assert s["ping_lost"] == 1
    assert 1000 < s["ping_p99_us"] <= 1300


def test_ping_summary_refuses_a_mostly_lost_run():
    with pytest.raises(ValueError, match="only 4/200"):
        ping_summary(PING, 200)
    with pytest.raises(ValueError):
        ping_summary("connect: Network is unreachable\n", 10)


def test_rr_summary_in_microseconds():
    s = rr_summary([20_000] * 98 + [100_000, 1_000_000])
    assert s["count"] == 100 and s["median_us"] == 20.0 and s["min_us"] == 20.0
    assert s["max_us"] == 1000.0 and 100 <= s["p99_us"] <= 1000
    assert s["mean_us"] == pytest.approx(30.6)
    with pytest.raises(ValueError):
        rr_summary([])


def test_rr_result_reads_the_last_json_line():
    line = json.dumps(rr_summary([30_000, 40_000, 50_000]))
    doc = rr_result('{"count": 1, "median_us": 9}\n' + line + "\n")
    assert doc["count"] == 3 and doc["median_us"] == 40.0
    with pytest.raises(ValueError, match="no summary"):
        rr_result("ConnectionRefusedError: [Errno 111] Connection refused\n")
    with pytest.raises(ValueError):
        rr_result('{"count": 0}\n')


ADDRS = json.dumps([{"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
                    {"ifname": "tap0", "addr_info": [{"family": "inet",
                                                      "local": "10.0.2.100"}]}])
ROUTES = json.dumps([{"dst": "default", "gateway": "10.0.2.2", "dev": "tap0"},
                     {"dst": "10.0.2.0/24", "dev": "tap0", "prefsrc": "10.0.2.100"}])


def test_guest_readiness_parsers():
    assert has_address(ADDRS, "10.0.2.100") and not has_address(ADDRS, "10.0.2.2")
    assert has_address("", "10.0.2.100") is False
    assert has_default_route(ROUTES, "10.0.2.2")
    assert not has_default_route(ROUTES, "10.0.2.3")
    assert not has_default_route(json.dumps([{"dst": "10.0.2.0/24", "dev": "tap0"}]),
                                 "10.0.2.2")


MED = {"kernel": {"tcp_up_bps": 20e9, "tcp_down_bps": 24e9, "ping_median_us": 80.0,
                  "rr_median_us": 20.0},
       "slirp4netns": {"tcp_up_bps": 3e9, "tcp_down_bps": 6e9, "ping_median_us": 150.0,
                       "rr_median_us": 25.0, "cpu_up_pct": 50.0},
       "vswitch": {"tcp_up_bps": 7.5e9, "tcp_down_bps": 9e9, "ping_median_us": 150.0,
                   "rr_median_us": 30.0, "cpu_up_pct": 99.0}}


def test_compare_gives_verdicts_against_slirp4netns_only():
    cmp_ = compare(MED)
    vs = cmp_["vswitch/slirp4netns"]
    assert vs["tcp_up_bps"] == {"value": 2.5, "better": "higher", "target": 2.0, "met": True}
    assert vs["tcp_down_bps"]["value"] == 1.5 and vs["tcp_down_bps"]["met"] is False
    assert vs["ping_median_us"]["met"] is True  # equal is not worse
    assert vs["rr_median_us"]["value"] == pytest.approx(1.2) and not vs["rr_median_us"]["met"]
    assert "ping_p99_us" not in vs and "cpu_up_pct" not in vs
    assert all(c["met"] is None for c in cmp_["vswitch/kernel"].values())
    assert cmp_["slirp4netns/kernel"]["tcp_up_bps"]["value"] == pytest.approx(0.15)


def test_compare_without_a_variant_has_no_ratios():
    assert compare({"kernel": MED["kernel"]})["vswitch/slirp4netns"] == {}


def result(up: float) -> dict[str, float | int | None]:
    return {"guest_mtu": 1500, "tcp_up_bps": up, "tcp_down_bps": up, "ping_median_us": 100.0,
            "ping_p99_us": 200.0, "ping_lost": 0, "rr_median_us": 20.0, "rr_p99_us": 40.0,
            "cpu_up_pct": None}


def test_markdown_lists_verdicts_and_failed_rounds():
    report = {"date": "2026-01-01T00:00:00+00:00", "rounds_requested": 1, "seconds": 5,
              "machine": {"cpus": 2, "cpu": "cpu", "kernel": "6.1", "slirp4netns": "1.2"},
              "medians": MED, "comparison": compare(MED),
              "rounds": [{"round": 1, "order": ["kernel", "slirp4netns", "vswitch"],
                          "results": {"kernel": result(2e10), "slirp4netns": result(3e9),
                                      "vswitch": {"error": "RuntimeError: vswitch exited"}}}]}
    text = markdown(report)
    assert "| 2.50x | >= 2x | yes |" in text and "| 1.50x | >= 2x | **no** |" in text
    assert "Targets met: 2 of 4." in text
    assert "error: RuntimeError: vswitch exited" in text


def test_the_vswitch_config_is_valid_and_uses_the_host_uplink(tmp_path: Path):
    text = vswitch_config("betest", tmp_path / "ctl.sock", "ve-test", "beg-test")
    assert "uplink" not in tomllib.loads(text)
    path = tmp_path / "vswitch.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.uplink is not None and config.uplink.type == "host"
