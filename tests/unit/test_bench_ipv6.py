"""bench.ipv6's parsers, verdicts and configs (they decide the IPv6 benchmark rows)."""

import json
import tomllib
from pathlib import Path

import pytest

from bench.egress import ping_summary
from bench.ipv6 import (
    compare,
    failures,
    family_order,
    has_ra_route,
    key,
    markdown,
    pair_label,
    slaac_address,
    vswitch_config6,
)
from vswitch.config import load_config

PING6 = """PING fd91::1 (fd91::1) 56 data bytes
64 bytes from fd91::1: icmp_seq=1 ttl=64 time=0.236 ms
64 bytes from fd91::1: icmp_seq=2 ttl=64 time=0.198 ms
64 bytes from fd91::1: icmp_seq=3 ttl=64 time=2.39 ms

--- fd91::1 ping statistics ---
4 packets transmitted, 3 received, 25% packet loss, time 31ms
rtt min/avg/max/mdev = 0.198/0.941/2.390/1.024 ms
"""


def test_ping6_output_parses_like_ping4():
    s = ping_summary(PING6, 4)
    assert s["ping_median_us"] == pytest.approx(236.0)
    assert s["ping_lost"] == 1 and 2000 < s["ping_p99_us"] <= 2390


def test_keys_and_the_family_order_alternate_by_round():
    assert key("v6", "tcp_up_bps") == "v6_tcp_up_bps"
    assert family_order(1) == ("v4", "v6")
    assert family_order(2) == ("v6", "v4")
    assert family_order(3) == ("v4", "v6")


def addr(local: str, scope: str = "global", **flags: bool) -> dict[str, object]:
    return {"family": "inet6", "local": local, "prefixlen": 64, "scope": scope, **flags}


def test_slaac_address_wants_a_usable_global_address_in_the_prefix():
    prefix = "fd92:0:0:1::/64"
    link = {"ifindex": 5, "ifname": "ve-ab12", "addr_info": [
        addr("fe80::5054:ff:fe12:3456", "link"),
        addr("fd99::5054:ff:fe12:3456"),
        addr("fd92:0:0:1:5054:ff:fe12:3456", tentative=True)]}
    assert slaac_address(json.dumps([link]), prefix) is None
    link["addr_info"].append(addr("fd92:0:0:1:5054:ff:fe12:3457", dadfailed=True))
    assert slaac_address(json.dumps([link]), prefix) is None
    link["addr_info"].append(addr("fd92:0:0:1:5054:ff:fe12:3458", dynamic=True,
                                  mngtmpaddr=True))
    assert slaac_address(json.dumps([link]), prefix) == "fd92:0:0:1:5054:ff:fe12:3458"
    assert slaac_address("", prefix) is None


def test_has_ra_route_wants_a_default_route_via_a_link_local_router():
    ra = {"dst": "default", "gateway": "fe80::5054:ff:fe00:1", "dev": "ve-ab12",
          "protocol": "ra", "metric": 1024, "pref": "medium"}
    static = {"dst": "default", "gateway": "fd93::1", "dev": "eth0"}
    prefix = {"dst": "fd92:0:0:1::/64", "dev": "ve-ab12", "protocol": "ra"}
    assert has_ra_route(json.dumps([prefix, ra]))
    assert not has_ra_route(json.dumps([prefix, static]))
    assert not has_ra_route("")


def med(up4: float, up6: float, down4: float, down6: float, ping4: float,
        ping6: float) -> dict[str, float]:
    return {"v4_tcp_up_bps": up4, "v6_tcp_up_bps": up6, "v4_tcp_down_bps": down4,
            "v6_tcp_down_bps": down6, "v4_ping_median_us": ping4, "v6_ping_median_us": ping6,
            "v4_cpu_up_pct": 99.0}


MED = {"kernel": med(20e9, 18e9, 22e9, 22e9, 50.0, 60.0),
       "vswitch-host": med(8e9, 7.6e9, 6e9, 4.8e9, 200.0, 250.0)}


def test_compare_gives_the_target_to_vswitch_ipv6_against_its_ipv4_only():
    cmp_ = compare(MED)
    own = cmp_["vswitch-host:v6/vswitch-host:v4"]
    assert own["tcp_up_bps"] == {"value": pytest.approx(0.95), "better": "higher",
                                 "target": 0.9, "met": True}
    assert own["tcp_down_bps"]["value"] == pytest.approx(0.8)
    assert own["tcp_down_bps"]["met"] is False
    assert own["ping_median_us"] == {"value": 1.25, "better": "lower", "target": None,
                                     "met": None}
    assert "cpu_up_pct" not in own and "rr_median_us" not in own
    vs_kernel = cmp_["vswitch-host:v6/kernel:v6"]
    assert vs_kernel["tcp_up_bps"]["value"] == pytest.approx(7.6 / 18)
    assert all(c["met"] is None for c in vs_kernel.values())
    assert cmp_["kernel:v6/kernel:v4"]["tcp_up_bps"]["value"] == pytest.approx(0.9)
    assert cmp_["kernel:v6/kernel:v4"]["tcp_up_bps"]["met"] is None
    assert cmp_["vswitch-raw:v6/vswitch-raw:v4"] == {}


def test_compare_skips_a_family_that_was_not_measured():
    only4 = {k: v for k, v in MED["vswitch-host"].items() if k.startswith("v4_")}
    cmp_ = compare({"kernel": MED["kernel"], "vswitch-host": only4})
    assert cmp_["vswitch-host:v6/vswitch-host:v4"] == {}
    assert cmp_["vswitch-host:v4/kernel:v4"]["tcp_up_bps"]["value"] == pytest.approx(0.4)


def test_pair_labels():
    assert pair_label("vswitch-host:v6/vswitch-host:v4") == "vswitch-host IPv6 / IPv4"
    assert pair_label("vswitch-raw:v6/kernel:v6") == "vswitch-raw IPv6 / kernel IPv6"


def result(family_error: str = "") -> dict[str, object]:
    r: dict[str, object] = {"guest_mtu": 1500, "order": ["v6", "v4"], "rss_peak_mib": 40.0}
    for f in ("v4", "v6"):
        r |= {f"{f}_tcp_up_bps": 8e9, f"{f}_tcp_down_bps": 6e9, f"{f}_ping_median_us": 200.0,
              f"{f}_ping_p99_us": 300.0, f"{f}_ping_lost": 0, f"{f}_rr_median_us": 90.0,
              f"{f}_rr_p99_us": 150.0, f"{f}_cpu_up_pct": 95.0, f"{f}_cpu_down_pct": 80.0}
    if family_error:
        r = {k: v for k, v in r.items() if not k.startswith("v6_")}
        r["v6_error"] = family_error
    return r


def test_markdown_lists_verdicts_and_every_failure():
    report = {"date": "2026-01-01T00:00:00+00:00", "rounds_requested": 1, "seconds": 3,
              "machine": {"cpus": 2, "cpu": "cpu", "kernel": "6.1"},
              "variants": ["kernel", "vswitch-host", "vswitch-raw"],
              "medians": MED, "comparison": compare(MED),
              "rounds": [{"round": 1, "order": ["vswitch-raw", "kernel", "vswitch-host"],
                          "results": {"kernel": result(),
                                      "vswitch-host": result("setup: TimeoutError: no SLAAC"),
                                      "vswitch-raw": {"error": "RuntimeError: vswitch exited"}}}]}
    text = markdown(report)
    assert "| vswitch-host IPv6 / IPv4 | 0.95x yes | 0.80x **no** | 1.25x | — |" in text
    assert "Targets met: 1 of 2 measured." in text
    assert "| vswitch-raw | IPv4 | not measured (see Failed) |" in text
    assert "- round 1, vswitch-raw: RuntimeError: vswitch exited" in text
    assert "- round 1, vswitch-host IPv6: setup: TimeoutError: no SLAAC" in text
    assert "| 1 | vswitch-host | IPv6 | 1500 | error: setup: TimeoutError: no SLAAC |" in text
    assert "| 1 | kernel | IPv6 | 1500 | 8.00 | 6.00 | 200 / 300 (0) | 90 / 150 | 95 / 80 |" \
        in text
    assert len(failures(report)) == 2
    # every table row has as many cells as its header
    for table in text.split("\n\n"):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in rows}) <= 1, table


def test_the_host_config_is_valid_with_subnet6_and_the_host_uplink(tmp_path: Path):
    text = vswitch_config6("b6test", tmp_path / "ctl.sock", "ve-test", "beg-test")
    assert "uplink" not in tomllib.loads(text)
    path = tmp_path / "vswitch.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.uplink is not None and config.uplink.type == "host"
    assert str(config.network.subnet6) == "fd92:0:0:1::/64"


def test_the_raw_config_puts_nat66_on_the_raw_uplink(tmp_path: Path):
    doc = tomllib.loads(vswitch_config6("b6test", tmp_path / "ctl.sock", "ve-test",
                                        "beg-test", "vu-test"))
    assert doc["uplink"] == {"type": "raw", "interface": "vu-test", "address": "10.94.0.2/24",
                             "gateway": "10.94.0.1", "address6": "fd94::2/64",
                             "gateway6": "fd94::1"}
    assert doc["network"]["subnet6"] == "fd92:0:0:1::/64"
    assert [p["name"] for p in doc["port"]] == ["ve-test"]
