"""vswitch's DHCP and DNS services against dnsmasq configured the same way: alternating rounds.

    sudo .venv/bin/python -m bench.services [--rounds 3] [--seconds 10] [--out bench/results]

Every round builds a fresh lab for each server (so each starts with an empty lease file and a
cold cache), measures it and tears it down; the order rotates from round to round.

  lab       client namespace (eth0 10.60.0.2/16) -- veth -- root namespace, where the server
            under test owns the root end; an "upstream" namespace (10.61.0.2, dnsmasq answering
            www.example.test with TTL 3600) behind a second veth (root side 10.61.0.1/30)
  dnsmasq   10.60.0.1/16 on the root end; --dhcp-range, --dhcp-leasefile (tmp dir), --domain,
            --host-record for local1, --server=10.61.0.2, --no-resolv, --no-hosts,
            --cache-size=10000, --dhcp-lease-max = pool size (vswitch's default max_leases) and
            --no-ping (vswitch does not probe an address with ICMP before offering it)
  vswitch   ``vswitch run``: its gateway 10.60.0.1 and an ``attach`` port on the root end;
            its per-client DHCP and DNS budgets off, as dnsmasq has none (one perfdhcp relay
            MAC and one dnsperf address stand for many clients here)

Metrics (each from the client namespace, each server the same tools and arguments):
  DHCP      ``perfdhcp -4 -l eth0 -r RATE -R CLIENTS -p SECONDS``: completed DORA exchanges/s.
            perfdhcp acts as a relay agent (giaddr 10.60.0.2, replies unicast to its port 67).
            RATE (default 1500/s) is above what either server completes here, so the result is
            each server's saturated rate; the drops are the offered excess.
  DNS       ``dnsperf -s 10.60.0.1 -l SECONDS -T 1 -c 4 -q 100`` on one name: local1.bench.internal
            (a local record) and www.example.test (forwarded once, while warming, then cached).
Also: the server's CPU (% of one core) per test and peak RSS (VmHWM); perfdhcp drops, orphans,
rejected and non-unique leases; dnsperf lost queries and non-NOERROR answers; the upstream's
query log (a cached name must not be forwarded again); for vswitch its DHCP/DNS/port counters
and the warnings in its log.  Verdicts are ratios vswitch/dnsmasq of medians (docs/testing.md,
"Benchmark protocol"); absolute numbers are for orientation only.

The parsers (``perfdhcp_summary``, ``dnsperf_summary``, ``upstream_queries``, ``lease_count``,
``log_problems``) are pure functions of the tools' text, for unit tests.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    CLK_TCK,
    cpu_ticks,
    interrupt,
    machine_info,
    show_ports,
    vm_hwm_kib,
    vswitch_bin,
)
from bench.report import (
    Say,
    alternate_rounds,
    medians,
    new_report,
    ratio_bars,
    round_rows,
    save_report,
)
from vswitch.lab import Lab, sh, wait_for

VARIANTS = ("dnsmasq", "vswitch")
GATEWAY, CLIENT_IP = "10.60.0.1", "10.60.0.2"
SUBNET, POOL = "10.60.0.0/16", ("10.60.1.0", "10.60.200.255")
UPSTREAM_ROOT, UPSTREAM = "10.61.0.1", "10.61.0.2"
DOMAIN, LOCAL_NAME, LOCAL_IP = "bench.internal", "local1", "10.60.0.10"
CACHED_NAME, CACHED_IP = "www.example.test", "203.0.113.7"
DNSPERF_ARGS = ("-T", "1", "-c", "4", "-q", "100")

#: metric -> (label, unit, target ratio vswitch/dnsmasq)
METRICS: dict[str, tuple[str, str, float]] = {
    "dhcp_eps": ("DHCP exchanges (DORA)", "exchanges/s", 1.0),
    "dns_local_qps": ("DNS local name", "queries/s", 1.0),
    "dns_cached_qps": ("DNS cached forwarded name", "queries/s", 1.0),
}
#: per-server resource figures (no target)
RESOURCES: dict[str, tuple[str, str]] = {
    "cpu_dhcp_pct": ("server CPU during DHCP", "% of a core"),
    "cpu_dns_local_pct": ("server CPU during DNS local", "% of a core"),
    "cpu_dns_cached_pct": ("server CPU during DNS cached", "% of a core"),
    "rss_peak_mib": ("server peak RSS (VmHWM)", "MiB"),
}


# --- parsers: pure functions ----------------------------------------------------------------

def _number(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern, text, re.M)
    if m is None:
        raise ValueError(f"{what}: no match for {pattern!r}")
    return float(m.group(1))


def perfdhcp_summary(text: str) -> dict[str, Any]:
    """The final report of a DHCPv4 ``perfdhcp`` run: the completed-exchange rate and, per
    exchange (``DISCOVER-OFFER``, ``REQUEST-ACK``), the sent/received/drops/orphans/rejected
    leases/non-unique addresses counts and the min/avg/max delays (ms) when any reply came."""
    out: dict[str, Any] = {"rate": _number(r"^Rate: ([0-9.]+) 4-way exchanges/second", text,
                                           "perfdhcp"),
                           "malformed": int(_number(r"^Malformed packets: (\d+)", text,
                                                    "perfdhcp"))}
    keys = {"sent packets": "sent", "received packets": "received", "drops": "drops",
            "orphans": "orphans", "rejected leases": "rejected",
            "non unique addresses": "non_unique"}
    for block in re.split(r"^\*\*\*Statistics for: ", text, flags=re.M)[1:]:
        name = block.split("*", 1)[0].strip()
        out[name] = {keys[k]: int(v) for k, v in re.findall(r"^([a-z ]+): (\d+)$", block, re.M)
                     if k in keys}
        for k, v in re.findall(r"^(min|avg|max) delay: ([0-9.]+) ms$", block, re.M):
            out[name][f"{k}_delay_ms"] = float(v)
    if "DISCOVER-OFFER" not in out or "REQUEST-ACK" not in out:
        raise ValueError("perfdhcp: no DISCOVER-OFFER/REQUEST-ACK statistics")
    return out


def dnsperf_summary(text: str) -> dict[str, Any]:
    """The statistics of a ``dnsperf`` run: sent, completed, lost, qps, response codes."""
    codes_line = re.search(r"^\s*Response codes:(.*)$", text, re.M)
    codes = {} if codes_line is None else {
        code: int(n) for code, n in re.findall(r"([A-Z]+) (\d+) \(", codes_line.group(1))}
    return {
        "sent": int(_number(r"^\s*Queries sent:\s+(\d+)", text, "dnsperf")),
        "completed": int(_number(r"^\s*Queries completed:\s+(\d+)", text, "dnsperf")),
        "lost": int(_number(r"^\s*Queries lost:\s+(\d+)", text, "dnsperf")),
        "qps": _number(r"^\s*Queries per second:\s+([0-9.]+)", text, "dnsperf"),
        "codes": codes,
    }


def upstream_queries(log: str, name: str) -> int:
    """How many queries for ``name`` a dnsmasq run with --log-queries logged."""
    return len(re.findall(rf"query\[[A-Z0-9]+\] {re.escape(name)} from ", log))


def lease_count(text: str) -> int:
    """Leases in a lease file: one non-empty line each (dnsmasq's and vswitch's formats)."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.startswith("duid "))


def log_problems(text: str) -> list[str]:
    """The WARNING/ERROR/CRITICAL lines and traceback headers of a ``vswitch run`` log."""
    return [line for line in text.splitlines()
            if re.search(r" (WARNING|ERROR|CRITICAL) ", line) or line.startswith("Traceback")]


# --- the lab and the servers ----------------------------------------------------------------

@dataclass
class Bed:
    lab: Lab
    tmp: Path
    client: str
    port: str  # the root end of the client veth: the server's side
    upstream_log: Path
    server: subprocess.Popen[Any] | None = None
    log: Path | None = None
    lease_file: Path | None = None
    socket: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_bed(lab: Lab, tmp: Path) -> Bed:
    client, upstream = lab.netns("bsc"), lab.netns("bsu")
    port = lab.veth(lab.name("vc"), client)
    lab.addr(client, "eth0", f"{CLIENT_IP}/16")
    up = lab.veth(lab.name("vu"), upstream)
    sh(["ip", "addr", "add", f"{UPSTREAM_ROOT}/30", "dev", up])
    lab.addr(upstream, "eth0", f"{UPSTREAM}/30")
    bed = Bed(lab, tmp, client, port, tmp / "upstream.log")
    lab.spawn(["dnsmasq", "-k", "--conf-file=/dev/null", f"--pid-file={tmp}/upstream.pid",
               f"--log-facility={bed.upstream_log}", "--log-queries", "--no-resolv",
               "--no-hosts", "--bind-interfaces", f"--listen-address={UPSTREAM}",
               f"--address=/{CACHED_NAME}/{CACHED_IP}", "--local-ttl=3600"],
              ns=upstream, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: dig(UPSTREAM, CACHED_NAME) == CACHED_IP, 15, "the upstream resolver")
    return bed


def dig(server: str, name: str, ns: str | None = None) -> str:
    cmd = ["dig", "+short", "+time=1", "+tries=1", f"@{server}", name]
    done = subprocess.run((["ip", "netns", "exec", ns] if ns else []) + cmd,
                          capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip()


def pool_size() -> int:
    return int(ipaddress.ip_address(POOL[1])) - int(ipaddress.ip_address(POOL[0])) + 1


def start_dnsmasq(bed: Bed) -> None:
    sh(["ip", "addr", "add", f"{GATEWAY}/16", "dev", bed.port])
    bed.log, bed.lease_file = bed.tmp / "dnsmasq.log", bed.tmp / "dnsmasq.leases"
    with (bed.tmp / "dnsmasq.out").open("wb") as out:
        bed.server = bed.lab.spawn([
            "dnsmasq", "-k", "--conf-file=/dev/null", f"--pid-file={bed.tmp}/dnsmasq.pid",
            f"--log-facility={bed.log}", f"--interface={bed.port}", "--except-interface=lo",
            "--bind-dynamic", f"--dhcp-range={POOL[0]},{POOL[1]},3600",
            f"--dhcp-leasefile={bed.lease_file}", f"--dhcp-lease-max={pool_size()}",
            "--no-ping", f"--domain={DOMAIN}",
            f"--host-record={LOCAL_NAME},{LOCAL_NAME}.{DOMAIN},{LOCAL_IP}",
            f"--server={UPSTREAM}", "--no-resolv", "--no-hosts", "--cache-size=10000"],
            stdout=out, stderr=subprocess.STDOUT)


def start_vswitch(bed: Bed) -> None:
    bed.socket = str(bed.tmp / "vswitch.sock")
    bed.log, bed.lease_file = bed.tmp / "vswitch.log", bed.tmp / "vswitch.leases"
    config = bed.tmp / "vswitch.toml"
    config.write_text(f"""[switch]
name = "bsvc"
[control]
socket = "{bed.socket}"
[network]
subnet = "{SUBNET}"
[dhcp]
range = ["{POOL[0]}", "{POOL[1]}"]
lease_file = "{bed.lease_file}"
lease_time = 3600
requests_per_second = 0
[dns]
domain = "{DOMAIN}"
forwarders = ["{UPSTREAM}"]
queries_per_second = 0
[[dns.host]]
name = "{LOCAL_NAME}"
ip = "{LOCAL_IP}"
[[port]]
name = "pc"
type = "attach"
interface = "{bed.port}"
""")
    with bed.log.open("wb") as out:
        bed.server = bed.lab.spawn([vswitch_bin(), "run", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT)
    sock = bed.socket

    def ports_up() -> bool:
        check_alive(bed, "startup")
        rows = show_ports(sock, check=False)
        return rows is not None and len(rows) == 2 and all(r["state"] == "up" for r in rows)

    wait_for(ports_up, 20, "vswitch gateway and port up", interval=0.2)


STARTERS: dict[str, Callable[[Bed], None]] = {"dnsmasq": start_dnsmasq,
                                              "vswitch": start_vswitch}


def check_alive(bed: Bed, what: str) -> None:
    if bed.server is not None and bed.server.poll() is not None:
        tail = bed.log.read_text(errors="replace").splitlines()[-5:] if bed.log else []
        raise RuntimeError(f"server exited ({bed.server.returncode}) during {what}: "
                           + " | ".join(tail))


def stop_server(bed: Bed) -> int | None:
    """SIGTERM and a bounded wait: the lease file is complete after a clean exit."""
    if bed.server is None:
        return None
    if bed.server.poll() is None:
        bed.server.send_signal(signal.SIGTERM)
    try:
        return bed.server.wait(10)
    except subprocess.TimeoutExpired:
        bed.server.kill()
        bed.server.wait(5)
        return None


def vswitch_show(bed: Bed, what: str) -> Any:
    done = subprocess.run([vswitch_bin(), "show", what, "--socket", str(bed.socket), "--json"],
                          capture_output=True, text=True, timeout=10, check=True)
    return json.loads(done.stdout)


def settled_dhcp_counters(bed: Bed) -> dict[str, Any]:
    """``show dhcp`` once it stops changing: a saturated server still has a backlog of
    requests queued when perfdhcp stops."""
    seen: list[dict[str, Any]] = [vswitch_show(bed, "dhcp")]

    def settled() -> bool:
        seen.append(vswitch_show(bed, "dhcp"))
        return seen[-1] == seen[-2]

    wait_for(settled, 15, "vswitch's DHCP counters to settle", interval=0.5)
    return seen[-1]


# --- measurements ---------------------------------------------------------------------------

class CpuMeter:
    """CPU time of the server process over a test, as % of one core."""

    def __init__(self, bed: Bed) -> None:
        assert bed.server is not None
        self.path = Path(f"/proc/{bed.server.pid}/stat")
        self.start = (cpu_ticks(self.path.read_text()), time.monotonic())

    def percent(self) -> float:
        ticks, now = cpu_ticks(self.path.read_text()), time.monotonic()
        return 100 * (ticks - self.start[0]) / CLK_TCK / (now - self.start[1])


def dnsperf(bed: Bed, name: str, seconds: float) -> dict[str, Any]:
    data = bed.tmp / f"{name}.queries"
    data.write_text(f"{name} A\n")
    done = bed.lab.run(bed.client, ["dnsperf", "-s", GATEWAY, "-d", str(data), "-l",
                                    f"{seconds:g}", *DNSPERF_ARGS], check=False,
                       timeout=seconds + 30)
    try:
        return dnsperf_summary(done.stdout)
    except ValueError:
        raise RuntimeError(
            f"dnsperf failed: {(done.stderr or done.stdout).strip()[-300:]}") from None


def perfdhcp(bed: Bed, rate: int, clients: int, seconds: float) -> dict[str, Any]:
    done = bed.lab.run(bed.client, ["perfdhcp", "-4", "-l", "eth0", "-r", str(rate), "-R",
                                    str(clients), "-p", f"{seconds:g}", "-s", "1"],
                       check=False, timeout=seconds + 30)
    if done.returncode not in (0, 3):  # 3: some exchanges did not complete
        raise RuntimeError(f"perfdhcp exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return perfdhcp_summary(done.stdout)


def measure(bed: Bed, variant: str, args: argparse.Namespace,
            say: Callable[[str], None]) -> dict[str, Any]:
    STARTERS[variant](bed)

    def answers() -> bool:
        check_alive(bed, "startup")
        return dig(GATEWAY, f"{LOCAL_NAME}.{DOMAIN}", bed.client) == LOCAL_IP

    wait_for(answers, 20, f"{variant} to answer DNS", interval=0.2)
    assert bed.server is not None
    r: dict[str, Any] = {}

    meter = CpuMeter(bed)
    local = dnsperf(bed, f"{LOCAL_NAME}.{DOMAIN}", args.seconds)
    r["cpu_dns_local_pct"] = meter.percent()
    r["dns_local_qps"], r["dns_local"] = local["qps"], local
    check_alive(bed, "DNS local")
    say(f"dns local   {local['qps']:9.0f} q/s, {local['lost']} lost, codes {local['codes']} "
        f"(server CPU {r['cpu_dns_local_pct']:.0f}%)")

    if dig(GATEWAY, CACHED_NAME, bed.client) != CACHED_IP:  # warm the cache
        raise RuntimeError(f"{CACHED_NAME} did not resolve through {variant}")
    wait_for(lambda: upstream_queries(bed.upstream_log.read_text(), CACHED_NAME) > 0, 5,
             "the upstream to log the warm-up query")
    before = upstream_queries(bed.upstream_log.read_text(), CACHED_NAME)
    meter = CpuMeter(bed)
    cached = dnsperf(bed, CACHED_NAME, args.seconds)
    r["cpu_dns_cached_pct"] = meter.percent()
    r["dns_cached_qps"], r["dns_cached"] = cached["qps"], cached
    r["upstream_queries_during_cached"] = (
        upstream_queries(bed.upstream_log.read_text(), CACHED_NAME) - before)
    check_alive(bed, "DNS cached")
    say(f"dns cached  {cached['qps']:9.0f} q/s, {cached['lost']} lost, codes {cached['codes']}, "
        f"{r['upstream_queries_during_cached']} forwarded "
        f"(server CPU {r['cpu_dns_cached_pct']:.0f}%)")

    meter = CpuMeter(bed)
    dhcp = perfdhcp(bed, args.dhcp_rate, args.clients, args.seconds)
    r["cpu_dhcp_pct"] = meter.percent()
    r["dhcp_eps"], r["dhcp"] = dhcp["rate"], dhcp
    check_alive(bed, "DHCP")
    do, ra = dhcp["DISCOVER-OFFER"], dhcp["REQUEST-ACK"]
    say(f"dhcp        {dhcp['rate']:9.1f} exchanges/s (offered {args.dhcp_rate}/s); "
        f"DISCOVER {do['sent']} -> OFFER {do['received']} ({do['drops']} dropped), "
        f"REQUEST {ra['sent']} -> ACK {ra['received']} ({ra['drops']} dropped), "
        f"OFFER delay avg/max {do.get('avg_delay_ms', 0):.0f}/{do.get('max_delay_ms', 0):.0f} ms, "
        f"orphans {do['orphans'] + ra['orphans']}, rejected {do['rejected'] + ra['rejected']}, "
        f"non-unique {do['non_unique'] + ra['non_unique']} "
        f"(server CPU {r['cpu_dhcp_pct']:.0f}%)")

    r["dhcp_saturated"] = dhcp["rate"] < 0.95 * args.dhcp_rate
    if not r["dhcp_saturated"]:
        say(f"WARNING: {dhcp['rate']:.0f}/s is near the offered {args.dhcp_rate}/s: not "
            "saturated, raise --dhcp-rate")

    r["rss_peak_mib"] = vm_hwm_kib(Path(f"/proc/{bed.server.pid}/status").read_text()) / 1024
    if variant == "vswitch":
        r["vswitch"] = {"dhcp": settled_dhcp_counters(bed), "dns": vswitch_show(bed, "dns"),
                        "ports": [{k: p.get(k) for k in ("name", "rx_frames", "tx_frames",
                                                         "drops")}
                                  for p in vswitch_show(bed, "ports")]}
        drops = {f"{p['name']}.{k}": v for p in r["vswitch"]["ports"]
                 for k, v in p["drops"].items() if v}
        vd = r["vswitch"]["dhcp"]
        r["vswitch_replies_not_counted"] = {"offers": vd["sent_offer"] - do["received"],
                                            "acks": vd["sent_ack"] - ra["received"]}
        say(f"vswitch dhcp {vd}; dns {r['vswitch']['dns']}; port drops "
            + (", ".join(f"{k}={v}" for k, v in drops.items()) or "none")
            + "; replies sent that perfdhcp did not count (late or lost): "
            f"{r['vswitch_replies_not_counted']}")
    r["exit_code"] = stop_server(bed)
    assert bed.lease_file is not None and bed.log is not None
    r["leases_in_file"] = (lease_count(bed.lease_file.read_text())
                           if bed.lease_file.exists() else 0)
    if variant == "vswitch":
        r["log_problems"] = log_problems(bed.log.read_text(errors="replace"))[:20]
    say(f"rss {r['rss_peak_mib']:.1f} MiB, exit {r['exit_code']}, "
        f"{r['leases_in_file']} leases in the file after exit (ACKs received: {ra['received']})"
        + (f", {len(r['log_problems'])} log warnings/errors" if "log_problems" in r else ""))
    return r


# --- summary and reports --------------------------------------------------------------------

def compare(med: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per metric: the ratio vswitch/dnsmasq of the medians and whether it meets the target."""
    base, ours = med.get("dnsmasq", {}), med.get("vswitch", {})
    return {key: {"value": ours[key] / base[key], "target": target,
                  "met": ours[key] / base[key] >= target}
            for key, (_, _, target) in METRICS.items()
            if key in base and key in ours and base[key] > 0}


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    med, cmp_ = report["medians"], report["comparison"]
    m = report["machine"]
    lines = [f"# vswitch DHCP/DNS vs dnsmasq ({report['date']})", "",
             f"Medians of {report['rounds_requested']} alternating rounds, {report['seconds']:g} s "
             f"per test; perfdhcp offered {report['dhcp_rate']}/s from {report['clients']} "
             f"simulated clients (relayed, giaddr {CLIENT_IP}); dnsperf {' '.join(DNSPERF_ARGS)}. "
             f"dnsmasq {report['tools']['dnsmasq']} with --no-ping. Machine: {m['cpus']} × "
             f"{m['cpu']}, Linux {m['kernel']}. Only the ratios mean anything on this shared "
             "machine.", "",
             "| metric | dnsmasq | vswitch | ratio | target | met? |",
             "|---|---:|---:|---:|---|---|"]
    for key, (label, unit, _) in METRICS.items():
        c = cmp_.get(key)
        ratio, target, met = (("—", "—", "—") if c is None else
                              (f"{c['value']:.2f}x", f">= {c['target']:g}x",
                               "yes" if c["met"] else "**no**"))
        lines.append(f"| {label} ({unit}) | {fmt(med['dnsmasq'].get(key))} | "
                     f"{fmt(med['vswitch'].get(key))} | {ratio} | {target} | {met} |")
    for key, (label, unit) in RESOURCES.items():
        lines.append(f"| {label} ({unit}) | {fmt(med['dnsmasq'].get(key), 1)} | "
                     f"{fmt(med['vswitch'].get(key), 1)} | — | — | — |")
    lines += ["", "## Rounds", "",
              "| round | server | DHCP exch/s | OFFER / ACK drops | OFFER delay avg / max ms | "
              "replies sent late (OFFER / ACK) | leases in file | DNS local q/s (lost) | "
              "DNS cached q/s (lost) | forwarded during cached | CPU DHCP/local/cached % |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(r: dict[str, Any]) -> str:
        do, ra = r["dhcp"]["DISCOVER-OFFER"], r["dhcp"]["REQUEST-ACK"]
        late = r.get("vswitch_replies_not_counted")
        return (
            f"{r['dhcp_eps']:.1f} | {do['drops']} / {ra['drops']} | "
            f"{fmt(do.get('avg_delay_ms'))} / {fmt(do.get('max_delay_ms'))} | "
            f"{'—' if late is None else str(late['offers']) + ' / ' + str(late['acks'])} | "
            f"{r['leases_in_file']} | "
            f"{r['dns_local_qps']:,.0f} ({r['dns_local']['lost']}) | "
            f"{r['dns_cached_qps']:,.0f} ({r['dns_cached']['lost']}) | "
            f"{r['upstream_queries_during_cached']} | {r['cpu_dhcp_pct']:.0f} / "
            f"{r['cpu_dns_local_pct']:.0f} / {r['cpu_dns_cached_pct']:.0f} |")

    lines += round_rows(report, 10, row)
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = report["medians"]
    base = med.get("dnsmasq", {})
    keys = [k for k in METRICS if base.get(k)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    ratio_bars(ax, report, VARIANTS, keys, base, width)
    for j, k in enumerate(keys):
        ax.hlines(METRICS[k][2], j - 0.45, j + 0.45, colors="red", linestyles="--",
                  label="target" if j == 0 else "_nolegend_")
    ax.set_xticks(range(len(keys)), [f"{METRICS[k][0]}\n({METRICS[k][1]})" for k in keys],
                  fontsize=9)
    ax.set_ylabel("relative to dnsmasq (= 1.0), higher is better")
    ax.set_title(f"vswitch DHCP/DNS vs dnsmasq, median of {len(report['rounds'])} rounds "
                 f"({report['date'][:10]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tool_versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        lines = (done.stdout or done.stderr).splitlines()
        return lines[0].strip() if lines else "?"

    dnsmasq = first_line(["dnsmasq", "--version"])
    dnsperf = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, timeout=10,
                             check=False)
    m = re.search(r"Version ([0-9.]+)", dnsperf.stdout + dnsperf.stderr)
    return {"dnsmasq": dnsmasq.split()[2] if dnsmasq.startswith("Dnsmasq version") else dnsmasq,
            "perfdhcp": first_line(["perfdhcp", "-v"]).removeprefix("VERSION: "),
            "dnsperf": m.group(1) if m else "?"}


# --- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.services",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10, help="length of each test")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--dhcp-rate", type=int, default=1500,
                    help="DORA exchanges/s perfdhcp offers (above either server's capacity)")
    ap.add_argument("--clients", type=int, default=50000, help="perfdhcp's simulated clients")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.services needs root (namespaces, veth, DHCP/DNS ports)", file=sys.stderr)
        return 2
    missing = [t for t in ("dnsmasq", "perfdhcp", "dnsperf", "dig") if not shutil.which(t)]
    if missing:
        print(f"bench.services needs {', '.join(missing)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)  # clean up on kill as on Ctrl-C

    start = time.monotonic()
    machine = machine_info()
    for key in ("iperf3", "bridge_nf_call_iptables"):
        machine.pop(key, None)
    git = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "status",
                          "--porcelain", "--untracked-files=no"], capture_output=True,
                         text=True, check=False, timeout=10)
    machine["vswitch_uncommitted_changes"] = git.stdout.splitlines()
    report = new_report("bench.services", sys.argv[1:], machine, args.rounds, args.seconds,
                        tools=tool_versions(), dhcp_rate=args.dhcp_rate, clients=args.clients)
    try:
        def run(v: str, lab: Lab, say: Say) -> dict[str, Any]:
            tmp = Path(tempfile.mkdtemp(prefix=f"bsvc-{lab.tag}-"))
            tmp.chmod(0o755)  # dnsmasq drops root privileges
            try:
                return measure(build_bed(lab, tmp), v, args, say)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        alternate_rounds(report, args.rounds, VARIANTS, run, start, "bsvc")
    except KeyboardInterrupt:
        print("interrupted: cleaned up, no report written", file=sys.stderr)
        return 130

    report["medians"] = medians(report["rounds"], VARIANTS, (*METRICS, *RESOURCES))
    report["comparison"] = compare(report["medians"])
    save_report(report, args.out, "services", markdown, plot, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
