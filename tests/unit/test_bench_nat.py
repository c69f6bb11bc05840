"""bench.nat's parsers and its conntrack memory probe (they decide the README's NAT numbers)."""

import json

import pytest

from bench.nat import compare, counter_delta, cps_summary, ct_memory, router_drops, rss_kib

STATUS = """Name:\tvswitch
VmPeak:\t  120000 kB
VmHWM:\t   36480 kB
VmRSS:\t   33520 kB
Threads:\t1
"""


def test_rss_is_the_current_resident_size():
    assert rss_kib(STATUS) == 33520
    with pytest.raises(ValueError):
        rss_kib("Name:\tx\n")


def test_cps_summary_reads_the_last_json_line():
    out = 'Traceback? no\n{"ok": 10, "failed": 0, "seconds": 1.0}\n' \
          '{"ok": 3000, "failed": 2, "seconds": 2.0}\n'
    assert cps_summary(out) == {"ok": 3000, "failed": 2, "seconds": 2.0, "cps": 1500.0}
    with pytest.raises(ValueError):
        cps_summary("OSError: [Errno 99] Cannot assign requested address\n")


def test_router_drops_keeps_nonzero_drop_and_error_counters():
    router = {"forwarded": 9000, "drop-no-route": 3, "drop-ttl": 0, "conntrack": 12,
              "held_dropped": 2, "arp_guests": 1, "nat": {"drop:table-full": 5, "created": 7}}
    assert router_drops(router) == {"drop-no-route": 3, "held_dropped": 2,
                                    "nat.drop:table-full": 5}


def test_counter_delta_shows_what_grew():
    before = {"guest.tx_dropped": 10, "receiver.udp_rcvbuf_errors": 4}
    after = {"guest.tx_dropped": 15, "receiver.udp_rcvbuf_errors": 4, "router.drop-x": 2}
    assert counter_delta(before, after) == {"guest.tx_dropped": 5, "router.drop-x": 2}


def test_compare_is_the_ratio_of_medians_against_the_target():
    med = {"kernel": {"tcp_bps": 10e9, "cps": 1000.0}, "vswitch": {"tcp_bps": 8e9, "cps": 300.0}}
    cmp_ = compare(med)
    assert cmp_["tcp_bps"] == {"value": 0.8, "target": 0.7, "met": True}
    assert cmp_["cps"]["met"] is None and cmp_["cps"]["value"] == pytest.approx(0.3)
    assert "udp_pps" not in cmp_


def test_ct_memory_makes_the_flows_it_reports(capsys):
    ct_memory(4800, budget=60)
    doc = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert doc["flows"] == 4800 and doc["endpoints"] * doc["per_endpoint"] == 4800
    assert 0 < doc["estimator_bytes"] < 2048
