"""What the benchmarks share: the machine they ran on, the vswitch under test (its binary,
control socket, CPU and memory), iperf3 and ping runs, and the pure parsers of their output
(``iperf_tcp_bps``, ``iperf_udp_pps``, ``ping_rtts_ms``, ``percentile``, ``cpu_ticks``,
``vm_hwm_kib``, ``snmp_counter``), which the unit tests check against real tools' output."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vswitch.lab import Lab

#: the two namespaces of the switch benchmarks (bench.bridge's topologies)
IP_A, IP_B = "10.77.0.1", "10.77.0.2"
CLK_TCK = os.sysconf("SC_CLK_TCK")


REPO = Path(__file__).resolve().parent.parent


def iperf_tcp_bps(doc: dict[str, Any]) -> float:
    """Receiver-side throughput of an ``iperf3 -c ... --json`` TCP run, in bits/s."""
    if "error" in doc:
        raise ValueError(f"iperf3: {doc['error']}")
    return float(doc["end"]["sum_received"]["bits_per_second"])


def iperf_udp_pps(doc: dict[str, Any]) -> float:
    """Packets delivered per second at the receiver of an iperf3 UDP run (packets - lost)."""
    if "error" in doc:
        raise ValueError(f"iperf3: {doc['error']}")
    rx = doc["end"]["sum_received"]
    return float((rx["packets"] - rx["lost_packets"]) / rx["seconds"])


def iperf_udp_sent_pps(doc: dict[str, Any]) -> float:
    """Packets per second the iperf3 UDP sender managed to send."""
    tx = doc["end"]["sum_sent"]
    return float(tx["packets"] / tx["seconds"])


PING_TIME = re.compile(r"icmp_seq=\d+ .*time[=<]([0-9.]+) ms")


def ping_rtts_ms(text: str) -> list[float]:
    """Per-packet round-trip times (ms) from iputils ping output (run without -q)."""
    return [float(m.group(1)) for m in PING_TIME.finditer(text)]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/PID/stat."""
    fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 (state)
    return int(fields[11]) + int(fields[12])  # fields 14 and 15


def vm_hwm_kib(status: str) -> int:
    """Peak resident set size (VmHWM, KiB) from the text of /proc/PID/status."""
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    if m is None:
        raise ValueError("no VmHWM line")
    return int(m.group(1))


def snmp_counter(snmp: str, proto: str, name: str) -> int:
    """One counter from the text of /proc/net/snmp (a header line, then a value line)."""
    rows = [line.split()[1:] for line in snmp.splitlines() if line.startswith(f"{proto}:")]
    return int(dict(zip(rows[0], rows[1], strict=True))[name])


@dataclass
class Setup:
    client_ns: str
    server_ns: str
    devs: tuple[str, str]
    switch: subprocess.Popen[Any] | None = None
    socket: str = ""
    log: Path | None = None


def vswitch_bin() -> str:
    local = Path(sys.executable).parent / "vswitch"
    return str(local) if local.exists() else (shutil.which("vswitch") or "vswitch")


def show_ports(sock: str, check: bool = True) -> list[dict[str, Any]] | None:
    done = subprocess.run([vswitch_bin(), "show", "ports", "--socket", sock, "--json"],
                          capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        if check:
            raise RuntimeError(f"vswitch show ports: {done.stderr.strip()}")
        return None
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def log_tail(setup: Setup, lines: int = 5) -> str:
    if setup.log is None or not setup.log.exists():
        return ""
    return " | ".join(setup.log.read_text(errors="replace").splitlines()[-lines:])


def iperf(lab: Lab, setup: Setup, seconds: float, *extra: str,
          server: str = IP_B) -> dict[str, Any]:
    """iperf3's JSON report of a test from the client namespace to ``server``."""
    cmd = ["iperf3", "-c", server, "-t", f"{seconds:g}", "--json", "--connect-timeout", "3000",
           *extra]
    done = lab.run(setup.client_ns, cmd, check=False, timeout=seconds + 30)
    try:
        doc: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"iperf3 gave no JSON: {done.stderr.strip()[-200:]}") from None
    return doc


def cpu_sample(setup: Setup) -> tuple[int, float] | None:
    if setup.switch is None:
        return None
    return cpu_ticks(Path(f"/proc/{setup.switch.pid}/stat").read_text()), time.monotonic()


def cpu_percent(before: tuple[int, float] | None, after: tuple[int, float] | None) -> float | None:
    if before is None or after is None:
        return None
    return 100 * (after[0] - before[0]) / CLK_TCK / (after[1] - before[1])


def check_alive(setup: Setup, what: str) -> None:
    if setup.switch is not None and setup.switch.poll() is not None:
        raise RuntimeError(f"vswitch died during {what}: {log_tail(setup)}")


def cpu_note(pct: float | None) -> str:
    return "" if pct is None else f"  (vswitch CPU {pct:.0f}%)"


def machine_info() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "?")
    nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False, timeout=10)
    iperf_v = subprocess.run(["iperf3", "--version"], capture_output=True, text=True,
                             check=False, timeout=10).stdout.splitlines()
    return {
        "kernel": platform.release(), "os": platform.platform(), "cpu": cpu,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "iperf3": iperf_v[0] if iperf_v else "?", "loadavg_start": os.getloadavg(),
        "bridge_nf_call_iptables": nf.read_text().strip() if nf.exists() else None,
        "vswitch_commit": git.stdout.strip() or None,
    }


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
