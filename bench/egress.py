"""vswitch's host uplink against slirp4netns and kernel masquerade: guest -> internet, one run.

    sudo .venv/bin/python -m bench.egress [--rounds 3] [--seconds 5] [--out bench/results]
                                          [--variants kernel,slirp4netns,vswitch]

Every round builds each variant from scratch, measures it and tears it down; the order rotates
from round to round, so drift on this shared machine does not always favour the same variant.

  host         namespace H, where vswitch and slirp4netns run (their "host"): eth0 10.91.0.2/24,
               lo up, ``net.ipv4.ping_group_range = 0 2147483647`` (both userspace variants
               answer the guest's pings with ping sockets)
  internet     namespace I behind H's eth0: eth0 10.91.0.1/24, iperf3 -s and a TCP echo server
               (``python -m bench.egress rr-server``)
  guest        namespace G, a fresh one per variant and round
  vswitch      ``ip netns exec H python -m vswitch.cli run``, mode "nat", no [uplink] (the host
               uplink: guest connections become H's own sockets), DHCP and DNS off, an
               ``internal`` port (TAP) in G: 10.92.0.5/24, default route via 10.92.0.1
  slirp4netns  ``ip netns exec H slirp4netns --configure --mtu=65520 --disable-host-loopback
               --netns-type=path /run/netns/G tap0`` (65520: its documented fast setting; it
               configures 10.0.2.100/24 and the default route via 10.0.2.2 in G)
  kernel       veth G:eth0 10.93.0.5/24 -- H:vk 10.93.0.1/24, ip_forward=1 in H and
               ``nft ... oifname eth0 masquerade`` (as bench.nat's kernel router)

Per variant and round, all from G to 10.91.0.1: iperf3 TCP upload (G -> I) and download (-R),
receiver bits/s; ping RTT (200 pings at 10 ms, per-packet times: median and p99); TCP
request/response RTT (``rr-client``: one connection, TCP_NODELAY, 1-byte echo, 2000 timed round
trips after 100 untimed ones: median and p99).  For vswitch and slirp4netns also their CPU (% of
one core) per test (for TCP RR the window includes the helper's Python start-up, so it reads
low) and peak RSS (VmHWM).  Verdicts (issue 5) use ratios of medians of this run
(docs/testing.md, "Benchmark protocol"): vswitch TCP upload and download >= 2x slirp4netns, vswitch
ping and TCP RR medians <= slirp4netns; the ratios against the kernel are for orientation.

The parsers (``ping_summary``, ``rr_summary``, ``rr_result``, ``has_default_route``,
``has_address``) and ``compare`` are pure, for unit tests; the other parsers, the CPU sampling
and the plot style come from ``bench.bridge`` and ``bench.report``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    cpu_percent,
    cpu_sample,
    interrupt,
    iperf,
    iperf_tcp_bps,
    log_tail,
    machine_info,
    percentile,
    ping_rtts_ms,
    show_ports,
    vm_hwm_kib,
)
from bench.common import Setup as BridgeSetup
from bench.report import new_report, ratio_bars, round_rows, run_and_save
from bench.services import log_problems
from vswitch.lab import Lab, sh, wait_for

VARIANTS = ("kernel", "slirp4netns", "vswitch")
BASELINE = "slirp4netns"
SERVER_IP, HOST_IP = "10.91.0.1", "10.91.0.2"
VSW_SUBNET, VSW_GATEWAY, VSW_GUEST = "10.92.0.0/24", "10.92.0.1", "10.92.0.5"
KERNEL_GATEWAY, KERNEL_GUEST = "10.93.0.1", "10.93.0.5"
SLIRP_GUEST, SLIRP_GATEWAY, SLIRP_MTU = "10.0.2.100", "10.0.2.2", 65520
RR_PORT, RR_COUNT, RR_WARMUP = 7001, 2000, 100
PING_COUNT, PING_INTERVAL = 200, 0.01

#: metric -> (label, unit scale, unit, better ("higher"/"lower"), target ratio against
#: slirp4netns or None: higher-is-better metrics must reach it, lower-is-better stay under it)
METRICS: dict[str, tuple[str, float, str, str, float | None]] = {
    "tcp_up_bps": ("TCP upload, guest -> internet", 1e9, "Gbit/s", "higher", 2.0),
    "tcp_down_bps": ("TCP download, internet -> guest", 1e9, "Gbit/s", "higher", 2.0),
    "ping_median_us": ("ping RTT median", 1, "µs", "lower", 1.0),
    "ping_p99_us": ("ping RTT p99", 1, "µs", "lower", None),
    "rr_median_us": ("TCP 1-byte request/response RTT median", 1, "µs", "lower", 1.0),
    "rr_p99_us": ("TCP 1-byte request/response RTT p99", 1, "µs", "lower", None),
}
#: the plot's short names of the metrics
SHORT = {"tcp_up_bps": "TCP upload", "tcp_down_bps": "TCP download",
         "ping_median_us": "ping RTT\nmedian", "ping_p99_us": "ping RTT\np99",
         "rr_median_us": "TCP RR RTT\nmedian", "rr_p99_us": "TCP RR RTT\np99"}
#: figures of the userspace process (vswitch or slirp4netns; the kernel has none)
RESOURCES: dict[str, tuple[str, str]] = {
    "cpu_up_pct": ("CPU during TCP upload", "% of a core"),
    "cpu_down_pct": ("CPU during TCP download", "% of a core"),
    "cpu_ping_pct": ("CPU during ping", "% of a core"),
    "cpu_rr_pct": ("CPU during TCP RR", "% of a core"),
    "rss_peak_mib": ("peak RSS (VmHWM)", "MiB"),
}
#: (variant, against, with the targets?): the comparisons the report makes
PAIRS = (("vswitch", BASELINE, True), ("vswitch", "kernel", False),
         (BASELINE, "kernel", False))


# --- parsers: pure functions ----------------------------------------------------------------

def ping_summary(text: str, sent: int) -> dict[str, float]:
    """Median and p99 (µs) of the per-packet times of iputils ping output (run without -q),
    and how many of ``sent`` got no reply."""
    rtts = ping_rtts_ms(text)
    if len(rtts) < sent // 2:
        raise ValueError(f"ping: only {len(rtts)}/{sent} replies: {text.strip()[-200:]!r}")
    return {"ping_median_us": statistics.median(rtts) * 1000,
            "ping_p99_us": percentile(rtts, 99) * 1000, "ping_lost": sent - len(rtts)}


def rr_summary(samples_ns: list[int]) -> dict[str, float]:
    """Round-trip times (ns) of the request/response client -> count, median, p99, min, max
    and mean in µs."""
    if not samples_ns:
        raise ValueError("no round trips")
    us = [s / 1000 for s in samples_ns]
    return {"count": len(us), "median_us": statistics.median(us), "p99_us": percentile(us, 99),
            "min_us": min(us), "max_us": max(us), "mean_us": statistics.fmean(us)}


def rr_result(text: str) -> dict[str, float]:
    """The rr-client's summary: its last JSON line (``rr_summary`` of its round trips)."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError(f"rr-client printed no summary: {text.strip()[-200:]!r}")
    doc: dict[str, float] = json.loads(lines[-1])
    if not doc.get("count"):
        raise ValueError("rr-client timed no round trips")
    return doc


def has_address(addr_json: str, ip: str) -> bool:
    """Whether ``ip -j addr show`` output lists the IPv4 address ``ip``."""
    return any(a.get("local") == ip for link in json.loads(addr_json or "[]")
               for a in link.get("addr_info", []))


def has_default_route(route_json: str, gateway: str) -> bool:
    """Whether ``ip -j route show`` output has a default route via ``gateway``."""
    return any(r.get("dst") == "default" and r.get("gateway") == gateway
               for r in json.loads(route_json or "[]"))


def compare(med: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per pair ("vswitch/slirp4netns", ...) and metric: the ratio of the medians and, for the
    pair with targets, the verdict (>= target when higher is better, <= when lower is)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for v, base, targets in PAIRS:
        a, b = med.get(v, {}), med.get(base, {})
        row: dict[str, dict[str, Any]] = {}
        for key, (_, _, _, better, target) in METRICS.items():
            if key not in a or not b.get(key):
                continue
            ratio = a[key] / b[key]
            target = target if targets else None
            met = None if target is None else (ratio >= target if better == "higher"
                                               else ratio <= target)
            row[key] = {"value": ratio, "better": better, "target": target, "met": met}
        out[f"{v}/{base}"] = row
    return out


# --- the helpers that run inside the namespaces ---------------------------------------------

def rr_server(port: int, host: str = "0.0.0.0") -> None:
    """Echo every byte back, one thread per connection, TCP_NODELAY; on ``host`` ("::": IPv6
    and IPv4 alike)."""
    def echo(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    six = ":" in host
    with socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if six:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ls.bind((host, port))
        ls.listen(64)
        print("listening", flush=True)
        while True:
            conn, _ = ls.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()


def rr_client(host: str, port: int, count: int, warmup: int) -> None:
    """One connection, TCP_NODELAY: ``warmup`` untimed then ``count`` timed 1-byte round trips
    (send a byte, wait for it to come back).  Prints ``rr_summary`` as JSON."""
    samples: list[int] = []
    with socket.create_connection((host, port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(warmup + count):
            t0 = time.perf_counter_ns()
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise RuntimeError(f"echo server closed after {i} round trips")
            if i >= warmup:
                samples.append(time.perf_counter_ns() - t0)
    print(json.dumps(rr_summary(samples)), flush=True)


def helper(args: list[str], ns: str | None = None) -> list[str]:
    """argv running one of this module's helpers (in namespace ``ns``)."""
    cmd = [sys.executable, "-m", "bench.egress", *args]
    return (["ip", "netns", "exec", ns] if ns else []) + cmd


# --- topologies -----------------------------------------------------------------------------

@dataclass
class Setup(BridgeSetup):
    """client_ns is the guest G, server_ns the internet I; ``switch`` is the userspace process
    (vswitch or slirp4netns, None for the kernel), ``host_ns`` is H, ``guest_dev`` G's
    interface towards H."""

    host_ns: str = ""
    guest_dev: str = ""
    process: str = ""


def check_alive(setup: Setup, what: str) -> None:
    if setup.switch is not None and setup.switch.poll() is not None:
        raise RuntimeError(f"{setup.process} exited ({setup.switch.returncode}) during {what}: "
                           f"{log_tail(setup)}")


def quiet_ipv6(ns: str) -> None:
    sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1"])


def build_world(lab: Lab) -> tuple[str, str, str]:
    """H and I joined by a veth (H:eth0 10.91.0.2 -- I:eth0 10.91.0.1), and an empty G."""
    host, internet, guest = lab.netns("beh"), lab.netns("bei"), lab.netns("beg")
    for ns in (host, internet, guest):
        quiet_ipv6(ns)
    sh(["ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
        "netns", internet])
    lab.addr(host, "eth0", f"{HOST_IP}/24")
    lab.addr(internet, "eth0", f"{SERVER_IP}/24")
    sh(["ip", "netns", "exec", host, "sysctl", "-qw",
        "net.ipv4.ping_group_range=0 2147483647"])
    return host, internet, guest


def build_kernel(lab: Lab) -> Setup:
    host, internet, guest = build_world(lab)
    sh(["ip", "-n", host, "link", "add", "vk", "type", "veth", "peer", "name", "eth0",
        "netns", guest])
    sh(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    lab.addr(host, "vk", f"{KERNEL_GATEWAY}/24")
    lab.addr(guest, "eth0", f"{KERNEL_GUEST}/24")
    sh(["ip", "-n", guest, "route", "add", "default", "via", KERNEL_GATEWAY])
    nft = ["ip", "netns", "exec", host, "nft"]
    sh([*nft, "add", "table", "ip", "nat"])
    sh([*nft, "add", "chain", "ip", "nat", "post",
        "{ type nat hook postrouting priority 100; }"])
    sh([*nft, "add", "rule", "ip", "nat", "post", "oifname", "eth0", "masquerade"])
    return Setup(guest, internet, ("eth0", "eth0"), host_ns=host, guest_dev="eth0")


def tmp_files(lab: Lab, prefix: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-{lab.tag}-"))
    lab.dirs.append(tmp)
    return tmp


def wait_guest(lab: Lab, setup: Setup, ip: str, gateway: str) -> None:
    def ready() -> bool:
        check_alive(setup, "setup")
        addrs = lab.run(setup.client_ns, ["ip", "-j", "-4", "addr", "show"], timeout=5).stdout
        routes = lab.run(setup.client_ns, ["ip", "-j", "-4", "route", "show"], timeout=5).stdout
        return has_address(addrs, ip) and has_default_route(routes, gateway)

    wait_for(ready, 20, f"{ip} and the default route via {gateway} in the guest", interval=0.1)


def build_slirp(lab: Lab) -> Setup:
    host, internet, guest = build_world(lab)
    tmp = tmp_files(lab, "begress-slirp")
    log = tmp / "slirp4netns.log"
    lab.files.append(log)
    with log.open("wb") as out:
        proc = lab.spawn(["slirp4netns", "--configure", f"--mtu={SLIRP_MTU}",
                          "--disable-host-loopback", "--netns-type=path", f"/run/netns/{guest}",
                          "tap0"], ns=host, stdout=out, stderr=out)
    setup = Setup(guest, internet, ("tap0", "eth0"), proc, "", log, host_ns=host,
                  guest_dev="tap0", process="slirp4netns")
    wait_guest(lab, setup, SLIRP_GUEST, SLIRP_GATEWAY)
    return setup


def vswitch_config(name: str, sock: Path, port: str, guest: str) -> str:
    """The vswitch variant's config: NAT, no [uplink] (the host uplink is the default)."""
    return f"""[switch]
name = "{name}"
[control]
socket = "{sock}"
[network]
mode = "nat"
subnet = "{VSW_SUBNET}"
[dhcp]
enabled = false
[dns]
enabled = false
[[port]]
name = "{port}"
type = "internal"
netns = "{guest}"
"""


def build_vswitch(lab: Lab) -> Setup:
    host, internet, guest = build_world(lab)
    port = lab.name("ve")
    tmp = tmp_files(lab, "begress-vsw")
    sock, config, log = tmp / "ctl.sock", tmp / "vswitch.toml", tmp / "vswitch.log"
    lab.files += [config, log, sock]
    config.write_text(vswitch_config(f"be{lab.tag}", sock, port, guest))
    with log.open("wb") as out:
        proc = lab.spawn([sys.executable, "-m", "vswitch.cli", "run", str(config)], ns=host,
                         stdout=out, stderr=out, cwd=REPO)
    setup = Setup(guest, internet, (port, "eth0"), proc, str(sock), log, host_ns=host,
                  guest_dev=port, process="vswitch")

    def ready() -> bool:
        check_alive(setup, "startup")
        rows = show_ports(str(sock), check=False)
        return rows is not None and any(r["name"] == port and r["state"] == "up" for r in rows)

    wait_for(ready, 20, "vswitch's guest port up", interval=0.2)
    lab.addr(guest, port, f"{VSW_GUEST}/24")
    sh(["ip", "-n", guest, "route", "add", "default", "via", VSW_GATEWAY])
    return setup


BUILDERS: dict[str, Callable[[Lab], Setup]] = {
    "kernel": build_kernel, "slirp4netns": build_slirp, "vswitch": build_vswitch,
}


# --- measurements ---------------------------------------------------------------------------

def request_response(setup: Setup, server: str = SERVER_IP) -> dict[str, float]:
    cmd = helper(["rr-client", server, str(RR_PORT), str(RR_COUNT), str(RR_WARMUP)],
                 setup.client_ns)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          cwd=REPO)
    return rr_result(done.stdout + done.stderr)


def guest_mtu(lab: Lab, setup: Setup) -> int:
    done = lab.run(setup.client_ns, ["ip", "-j", "link", "show", "dev", setup.guest_dev],
                   timeout=10)
    return int(json.loads(done.stdout)[0]["mtu"])


def note(setup: Setup, pct: float | None) -> str:
    return "" if pct is None else f"  ({setup.process} CPU {pct:.0f}%)"


def measure(lab: Lab, setup: Setup, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    lab.spawn(["iperf3", "-s"], ns=setup.server_ns, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
    lab.spawn(helper(["rr-server", str(RR_PORT)]), ns=setup.server_ns, cwd=REPO,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: {":5201", f":{RR_PORT}"} <= set(
        re.findall(r":\d+", lab.run(setup.server_ns, "ss -Hltn", timeout=5).stdout)),
        15, "iperf3 and echo servers")
    wait_for(lambda: lab.run(setup.client_ns, ["ping", "-c", "1", "-W", "1", SERVER_IP],
                             check=False, timeout=5).returncode == 0, 15, "first ping")
    r: dict[str, Any] = {"guest_mtu": guest_mtu(lab, setup)}

    def up() -> str:
        doc = iperf(lab, setup, seconds, server=SERVER_IP)
        r["tcp_up_bps"] = iperf_tcp_bps(doc)
        r["tcp_up_retransmits"] = doc["end"]["sum_sent"].get("retransmits")
        return f"up   {r['tcp_up_bps'] / 1e9:6.2f} Gbit/s, {r['tcp_up_retransmits']} retransmits"

    def down() -> str:
        doc = iperf(lab, setup, seconds, "-R", server=SERVER_IP)
        r["tcp_down_bps"] = iperf_tcp_bps(doc)
        r["tcp_down_retransmits"] = doc["end"]["sum_sent"].get("retransmits")
        return (f"down {r['tcp_down_bps'] / 1e9:6.2f} Gbit/s, "
                f"{r['tcp_down_retransmits']} retransmits")

    def ping() -> str:
        done = lab.run(setup.client_ns, ["ping", "-c", str(PING_COUNT), "-i",
                                         f"{PING_INTERVAL:g}", "-W", "1", "-w", "30", SERVER_IP],
                       check=False, timeout=40)
        r.update(ping_summary(done.stdout, PING_COUNT))
        return (f"ping median {r['ping_median_us']:.0f} µs, p99 {r['ping_p99_us']:.0f} µs, "
                f"{r['ping_lost']} lost")

    def rr() -> str:
        s = request_response(setup)
        r["rr_median_us"], r["rr_p99_us"] = s["median_us"], s["p99_us"]
        r["rr"] = s
        return (f"rr   median {s['median_us']:.0f} µs, p99 {s['p99_us']:.0f} µs "
                f"({s['count']:.0f} round trips)")

    for test, run in (("up", up), ("down", down), ("ping", ping), ("rr", rr)):
        cpu = cpu_sample(setup)
        msg = run()
        r[f"cpu_{test}_pct"] = cpu_percent(cpu, cpu_sample(setup))
        check_alive(setup, test)
        say(msg + note(setup, r[f"cpu_{test}_pct"]))

    if setup.switch is not None:
        status = Path(f"/proc/{setup.switch.pid}/status").read_text()
        r["rss_peak_mib"] = vm_hwm_kib(status) / 1024
        assert setup.log is not None
        text = setup.log.read_text(errors="replace")
        if setup.process == "vswitch":
            r["log_problems"] = log_problems(text)[:20]
            r["ports"] = [{k: row.get(k) for k in ("name", "rx_frames", "tx_frames", "drops")}
                          for row in show_ports(setup.socket, check=False) or []]
        else:
            r["log_problems"] = [line for line in text.splitlines()
                                 if re.search(r"warn|err|fail", line, re.I)][:20]
        say(f"rss  {r['rss_peak_mib']:.1f} MiB peak, guest MTU {r['guest_mtu']}, "
            f"{len(r['log_problems'])} log warnings/errors")
    else:
        say(f"guest MTU {r['guest_mtu']}")
    return r


# --- summary and reports --------------------------------------------------------------------

def fmt(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    scale = METRICS[key][1] if key in METRICS else 1
    digits = 2 if key.endswith("_bps") else 0 if key.endswith("_us") else 1
    return f"{value / scale:.{digits}f}"


def fmt_ratio(c: dict[str, Any] | None) -> str:
    return "—" if c is None else f"{c['value']:.2f}x"


def fmt_target(key: str) -> str:
    _, _, _, better, target = METRICS[key]
    return "—" if target is None else (f">= {target:g}x" if better == "higher"
                                       else f"<= {target:g}x")


def yes_no(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


def markdown(report: dict[str, Any]) -> str:
    med, cmp_ = report["medians"], report["comparison"]
    kernel, slirp, vsw = (med.get(v, {}) for v in VARIANTS)
    m = report["machine"]
    vs_slirp, vs_kernel = cmp_.get(f"vswitch/{BASELINE}", {}), cmp_.get("vswitch/kernel", {})
    lines = [f"# vswitch host uplink vs slirp4netns and kernel masquerade ({report['date']})",
             "", f"Guest namespace -> internet namespace through a \"host\" namespace where "
             f"vswitch (`[uplink] type = \"host\"`, the default) and slirp4netns "
             f"(`--mtu={SLIRP_MTU}`, its fast setting) run; kernel: veth + nft masquerade in that "
             f"namespace. Medians of {report['rounds_requested']} alternating rounds, "
             f"{report['seconds']:g} s per iperf3 test, {PING_COUNT} pings at "
             f"{PING_INTERVAL * 1000:g} ms, {RR_COUNT} TCP 1-byte round trips. Machine: "
             f"{m['cpus']} × {m['cpu']}, Linux {m['kernel']}, {m.get('slirp4netns', '?')}. "
             "Only the ratios mean anything on this shared machine.", "",
             "| metric | kernel masquerade | slirp4netns | vswitch | vswitch / slirp4netns "
             "| target | met? | vswitch / kernel |", "|---|---:|---:|---:|---:|---|---|---:|"]
    for key, (label, _, unit, better, _) in METRICS.items():
        c = vs_slirp.get(key)
        lines.append(f"| {label} ({unit}, {better} is better) | {fmt(key, kernel.get(key))} | "
                     f"{fmt(key, slirp.get(key))} | {fmt(key, vsw.get(key))} | {fmt_ratio(c)} "
                     f"| {fmt_target(key)} | {yes_no(None if c is None else c['met'])} | "
                     f"{fmt_ratio(vs_kernel.get(key))} |")
    for key, (label, unit) in RESOURCES.items():
        lines.append(f"| {label} ({unit}) | — | {fmt(key, slirp.get(key))} | "
                     f"{fmt(key, vsw.get(key))} | — | — | — | — |")
    verdicts = [c["met"] for c in vs_slirp.values() if c["met"] is not None]
    targets = sum(1 for spec in METRICS.values() if spec[4] is not None)
    lines += ["", f"Targets met: {sum(verdicts)} of {targets}"
              + ("" if len(verdicts) == targets else
                 f" ({targets - len(verdicts)} not measured)") + "."]
    lines += ["", "## Rounds", "", "| round | variant | guest MTU | up Gbit/s | down Gbit/s "
              "| ping median / p99 µs (lost) | TCP RR median / p99 µs "
              "| CPU up/down/ping/RR % | peak RSS MiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(r: dict[str, Any]) -> str:
        cpu = ("—" if r.get("cpu_up_pct") is None else " / ".join(
            f"{r[f'cpu_{t}_pct']:.0f}" for t in ("up", "down", "ping", "rr")))
        rss = "—" if r.get("rss_peak_mib") is None else f"{r['rss_peak_mib']:.1f}"
        return (f"{r['guest_mtu']} | "
                f"{r['tcp_up_bps'] / 1e9:.2f} | {r['tcp_down_bps'] / 1e9:.2f} | "
                f"{r['ping_median_us']:.0f} / {r['ping_p99_us']:.0f} "
                f"({r['ping_lost']}) | {r['rr_median_us']:.0f} / {r['rr_p99_us']:.0f}"
                f" | {cpu} | {rss} |")

    lines += round_rows(report, 7, row)
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = report["medians"]
    base = med.get(BASELINE, {})
    keys = [k for k in METRICS if base.get(k)]
    variants = [v for v in VARIANTS if all(k in med.get(v, {}) for k in keys)]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    if keys and variants:
        ratio_bars(ax, report, variants, keys, base, 0.8 / len(variants))
        for j, k in enumerate(keys):
            target = METRICS[k][4]
            if target is not None:
                ax.hlines(target, j - 0.45, j + 0.45, colors="red", linestyles="--",
                          label="target (vswitch)" if j == 0 else "_nolegend_")
        ax.set_yscale("log")  # the kernel is far ahead of both userspace stacks
        ax.set_xticks(range(len(keys)), [f"{SHORT[k]}\n({METRICS[k][3]} is better)"
                                         for k in keys], fontsize=8)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no slirp4netns baseline measured", ha="center",
                transform=ax.transAxes)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylabel("relative to slirp4netns (= 1.0), log scale")
    ax.set_title(f"guest -> internet: vswitch host uplink, slirp4netns, kernel masquerade; "
                 f"median of {len(report['rounds'])} rounds ({report['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------

def slirp_version() -> str:
    done = subprocess.run(["slirp4netns", "--version"], capture_output=True, text=True,
                          check=False, timeout=10)
    lines = done.stdout.splitlines()
    lib = next((line for line in lines if line.startswith("libslirp")), "")
    return ", ".join(x for x in (lines[0] if lines else "slirp4netns ?", lib) if x)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rr-server"]:
        rr_server(int(argv[1]), *argv[2:3])
        return 0
    if argv[:1] == ["rr-client"]:
        rr_client(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.egress",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated subset of " + ", ".join(VARIANTS))
    args = ap.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    if not variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants must only name {', '.join(VARIANTS)}")
    if os.geteuid() != 0:
        print("bench.egress needs root (namespaces, TAP, veth, nft)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)  # clean up on kill as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

    start = time.monotonic()
    machine = machine_info()
    machine["slirp4netns"] = slirp_version()
    report = new_report("bench.egress", argv, machine, args.rounds, args.seconds,
                        variants=list(variants))
    return run_and_save(report, variants,
                        lambda v, lab, say: measure(lab, BUILDERS[v](lab), args.seconds, say),
                        start, "begr", (*METRICS, *RESOURCES), compare, args.out,
                        "egress", markdown, plot)


if __name__ == "__main__":
    sys.exit(main())
