"""bench.cold: its workload is the real gateway ping path, and it writes its table."""

import json

from bench.cold import GAPS_MS, gateway_ping, main


def test_the_timed_work_answers_a_ping_through_switch_and_gateway():
    once = gateway_ping()
    for _ in range(3):
        once()  # asserts inside: the switch forwards to the gateway, which answers once


def test_main_writes_one_row_per_gap(tmp_path, capsys):
    assert main(["--samples", "3", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "cold.json").read_text())["rows"]
    assert [r["gap_ms"] for r in rows] == [0.0, *GAPS_MS]
    assert all(r["asleep_us"] > 0 and r["spinning_us"] > 0 for r in rows)
    assert "| 10 |" in (tmp_path / "cold.md").read_text()
