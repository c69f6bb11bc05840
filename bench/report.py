"""What the benchmarks share: the alternating rounds, the ratio bars, and writing the results
as JSON (everything), Markdown (the table) and PNG (the plot)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vswitch.lab import Lab


def new_report(module: str, argv: Sequence[str], machine: dict[str, Any], rounds: int,
               seconds: float, **extra: Any) -> dict[str, Any]:
    """The skeleton every benchmark's JSON starts from: when, how it was run, on what."""
    import datetime as dt
    import sys

    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, "-m", module, *argv]),
            "machine": machine, "rounds_requested": rounds, "seconds": seconds, **extra,
            "rounds": []}


def save_report(report: dict[str, Any], out: Path, name: str,
                markdown: Callable[[dict[str, Any]], str],
                plot: Callable[[dict[str, Any], Path], None], start: float) -> None:
    """Stamp the run's end, write ``out/name.{json,md,png}`` and print the table."""
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["duration_s"] = round(time.monotonic() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    table = markdown(report)
    (out / f"{name}.md").write_text(table)
    plot(report, out / f"{name}.png")
    print("\n" + table)
    print(f"wrote {out}/{name}.json, {name}.md, {name}.png in {report['duration_s']:.0f} s")


Say = Callable[[str], None]
#: What one benchmark measures for one variant in one round, given a Lab to build it in.
Measure = Callable[[str, Lab, Say], dict[str, Any]]
FAILURES = (RuntimeError, TimeoutError, ValueError, KeyError, OSError,
            subprocess.SubprocessError)


def alternate_rounds(report: dict[str, Any], rounds: int, variants: Sequence[str],
                     measure: Measure, start: float, lab_prefix: str) -> None:
    """The benchmark protocol (docs/testing.md): ``rounds`` rounds, each variant once per round in
    an order that rotates, each built from scratch in its own Lab and torn down after.  A
    variant that fails is recorded as an error for that round; the others go on."""
    for n in range(rounds):
        k = n % len(variants)
        order = [*variants[k:], *variants[:k]]
        rnd: dict[str, Any] = {"round": n + 1, "order": order, "results": {}}
        report["rounds"].append(rnd)
        for v in order:
            def say(msg: str, v: str = v, n: int = n) -> None:
                print(f"[{time.monotonic() - start:5.0f}s] round {n + 1}/{rounds} {v:<14} "
                      f"{msg}", flush=True)

            say("setting up")
            lab = Lab(lab_prefix)
            try:
                rnd["results"][v] = measure(v, lab, say)
            except FAILURES as exc:
                rnd["results"][v] = {"error": f"{type(exc).__name__}: {exc}"}
                say(f"FAILED: {exc}")
            finally:
                lab.close()


def run_and_save(report: dict[str, Any], variants: Sequence[str], measure: Measure,
                 start: float, lab_prefix: str, keys: Sequence[str],
                 compare: Callable[[dict[str, dict[str, float]]], dict[str, Any]], out: Path,
                 name: str, markdown: Callable[[dict[str, Any]], str],
                 plot: Callable[[dict[str, Any], Path], None],
                 after: Callable[[], None] | None = None) -> int:
    """A benchmark's main, after its setup: the alternating rounds (then ``after``, inside the
    same Ctrl-C guard), the medians of ``keys``, the comparison, the files; the exit status."""
    try:
        alternate_rounds(report, report["rounds_requested"], variants, measure, start,
                         lab_prefix)
        if after is not None:
            after()
    except KeyboardInterrupt:
        import sys

        print("interrupted: cleaned up, no report written", file=sys.stderr)
        return 130
    report["medians"] = medians(report["rounds"], variants, keys)
    report["comparison"] = compare(report["medians"])
    save_report(report, out, name, markdown, plot, start)
    return 0


def round_rows(report: dict[str, Any], columns: int,
               row: Callable[[dict[str, Any]], str]) -> list[str]:
    """The "Rounds" table's body: per round, per variant in the order it ran, ``| round |
    variant | `` then ``row(results)`` (the other ``columns`` cells, each closed by ``|``), or
    the variant's error in the first of them and the rest left empty."""
    lines = []
    for rnd in report["rounds"]:
        for v in rnd["order"]:
            r = rnd["results"][v]
            cells = f"error: {r['error']} |" + " |" * (columns - 1) if "error" in r else row(r)
            lines.append(f"| {rnd['round']} | {v} | {cells}")
    return lines


def ratio_bars(ax: Any, report: dict[str, Any], variants: Sequence[str], keys: Sequence[str],
               base: dict[str, float], width: float) -> None:
    """Grouped bars of each variant's medians relative to ``base``, whiskers spanning the
    rounds, labelled with the ratio."""
    med = report["medians"]
    for i, v in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(keys))]
        ys = [med.get(v, {}).get(k, 0) / base[k] for k in keys]
        runs = [[rnd["results"][v][k] / base[k] for rnd in report["rounds"]
                 if k in rnd["results"].get(v, {})] for k in keys]
        err = [[y - min(r, default=y) for y, r in zip(ys, runs, strict=True)],
               [max(r, default=y) - y for y, r in zip(ys, runs, strict=True)]]
        bars = ax.bar(xs, ys, width, yerr=err, capsize=3, label=v)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=8, padding=2)


def medians(rounds: list[dict[str, Any]], variants: Sequence[str],
            keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per variant, the median of each metric over the rounds where it did not fail."""
    out: dict[str, dict[str, float]] = {}
    for v in variants:
        runs = [rnd["results"][v] for rnd in rounds
                if "error" not in rnd["results"].get(v, {"error": "missing"})]
        out[v] = {k: statistics.median(vals) for k in keys
                  if (vals := [run[k] for run in runs if run.get(k) is not None])}
    return out
