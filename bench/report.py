"""Writing a benchmark's results: JSON (everything), Markdown (the table), PNG (the plot)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
