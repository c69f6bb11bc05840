"""The cost of cutting TSO frames in software: TCP to a guest whose device takes no offload.

    sudo .venv/bin/python -m bench.offloads [--rounds 3] [--seconds 5] [--out bench/results]

A guest behind an e1000 NIC, a USB adapter or a NIC with ``ethtool -K tso off`` takes only
wire-sized frames with full checksums.  The kernel bridge then segments each 64 KiB super-frame
in C (``skb_gso_segment``); vswitch cuts it in Python (``wire.gso``) and writes each
segment.  Alternating rounds in one run, each variant built from scratch:

  kernel              kernel bridge, offloads on everywhere (the reference)
  kernel-no-offload   kernel bridge whose port toward B has tx, tso and gso off
  vswitch             attach ports on veth pairs, offloads on
  vswitch-no-offload  attach ports, B's veth end with tx, tso and gso off

iperf3 TCP from A to B; for vswitch its CPU and the frames it cut in software.  The figure that
matters is vswitch-no-offload against kernel-no-offload: the same guest, the same device.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bridge import NO_OFFLOAD_FEATURES, build_kernel, build_vswitch
from bench.common import (
    Setup,
    check_alive,
    cpu_percent,
    cpu_sample,
    iperf,
    iperf_tcp_bps,
    machine_info,
    show_ports,
)
from bench.report import new_report, ratio_bars, round_rows, run_and_save
from vswitch.lab import Lab, wait_for

VARIANTS = ("kernel", "kernel-no-offload", "vswitch", "vswitch-no-offload")
BUILDERS: dict[str, Callable[[Lab], Setup]] = {
    "kernel": build_kernel,
    "kernel-no-offload": lambda lab: build_kernel(lab, NO_OFFLOAD_FEATURES),
    "vswitch": lambda lab: build_vswitch(lab, attach=True),
    "vswitch-no-offload": lambda lab: build_vswitch(lab, True, NO_OFFLOAD_FEATURES),
}
#: the comparisons reported: (variant, against)
PAIRS = (("vswitch-no-offload", "kernel-no-offload"), ("vswitch-no-offload", "vswitch"),
         ("kernel-no-offload", "kernel"), ("vswitch", "kernel"))
KEYS = ("tcp_bps", "cpu_tcp_pct")


def measure(variant: str, lab: Lab, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    setup = BUILDERS[variant](lab)
    lab.spawn(["iperf3", "-s"], ns=setup.server_ns)
    wait_for(lambda: ":5201" in lab.run(setup.server_ns, "ss -Hltn", timeout=5).stdout,
             10, "iperf3 server")
    before = cpu_sample(setup)
    r: dict[str, Any] = {"tcp_bps": iperf_tcp_bps(iperf(lab, setup, seconds))}
    r["cpu_tcp_pct"] = cpu_percent(before, cpu_sample(setup))
    check_alive(setup, "TCP")
    note = ""
    if setup.switch is not None:
        rows = show_ports(setup.socket) or []
        r["soft_segmented"] = sum(row["software"]["segmented"] for row in rows)
        r["drops"] = {f"{row['name']}.{k}": v for row in rows for k, v in row["drops"].items()}
        note = (f"  (vswitch CPU {r['cpu_tcp_pct']:.0f}%, {r['soft_segmented']} super-frames "
                "cut in software)")
    say(f"tcp {r['tcp_bps'] / 1e9:6.2f} Gbit/s{note}")
    return r


def compare(med: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {f"{a} / {b}": med[a]["tcp_bps"] / med[b]["tcp_bps"] for a, b in PAIRS
            if "tcp_bps" in med.get(a, {}) and "tcp_bps" in med.get(b, {})}


def markdown(report: dict[str, Any]) -> str:
    med = report["medians"]
    m = report["machine"]
    lines = [f"# TCP to a guest without offloads ({report['date']})", "",
             f"Medians of {report['rounds_requested']} alternating rounds, {report['seconds']:g} s "
             f"of iperf3 TCP each. Machine: {m['cpus']} × {m['cpu']}, Linux {m['kernel']}. "
             "Only the ratios mean anything on this shared machine.", "",
             "| variant | TCP Gbit/s | vswitch CPU (% of a core) |", "|---|---:|---:|"]
    for v in report["variants"]:
        cpu = med.get(v, {}).get("cpu_tcp_pct")
        tcp = med.get(v, {}).get("tcp_bps")
        lines.append(f"| {v} | {'—' if tcp is None else f'{tcp / 1e9:.2f}'} | "
                     f"{'—' if cpu is None else f'{cpu:.0f}'} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in report["comparison"].items()]
    lines += ["", "## Rounds", "", "| round | variant | TCP Gbit/s | super-frames cut |",
              "|---|---|---:|---:|"]
    lines += round_rows(report, 2, lambda r: f"{r['tcp_bps'] / 1e9:.2f} | "
                                             f"{r.get('soft_segmented', '—')} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = report["medians"].get("kernel", {})
    if "tcp_bps" not in base:
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ratio_bars(ax, report, report["variants"], ["tcp_bps"], base, 0.8 / len(report["variants"]))
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks([0], ["TCP throughput A → B (higher is better)"])
    ax.set_ylabel("relative to the kernel bridge with offloads (= 1.0)")
    ax.set_title(f"TCP to a guest without offloads ({report['date'][:10]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.offloads",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.offloads needs root (namespaces, veth)", file=sys.stderr)
        return 2
    start = time.monotonic()
    report = new_report("bench.offloads", sys.argv[1:], machine_info(), args.rounds,
                        args.seconds, variants=list(VARIANTS))
    return run_and_save(report, VARIANTS,
                        lambda v, lab, say: measure(v, lab, args.seconds, say),
                        start, "bench", KEYS, compare, args.out, "offloads", markdown, plot)


if __name__ == "__main__":
    sys.exit(main())
