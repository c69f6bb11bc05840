"""vswitch NAT against the kernel's nft masquerade: guest -> internet, alternating rounds, one run.

    sudo .venv/bin/python -m bench.nat [--rounds 3] [--seconds 5] [--out bench/results]

Every round builds each variant from scratch, measures it and tears it down; the order rotates
from round to round, so drift on this shared machine does not always favour the same variant.

  guest     namespace, 10.80.0.5/24, default route via 10.80.0.1
  internet  namespace, eth0 10.81.0.1/24: iperf3 -s and a TCP accept loop
  kernel    a "router" namespace between them: veth to the guest (10.80.0.1/24), veth to the
            internet (10.81.0.2/24), ip_forward=1, ``nft ... oifname UPLINK masquerade``
  vswitch   ``vswitch run``, mode "nat": an ``internal`` port (TAP) in the guest namespace and a
            ``raw`` uplink (10.81.0.2/24) on the root end of the veth to the internet

Per variant and round, all from the guest to the internet: iperf3 TCP (receiver bits/s), 64-byte
UDP delivered at the receiver (iperf3 -u -l 64 -b 0, pkt/s), and new TCP connections per second
(``python -m bench.nat cps-client``, 8 threads: connect, read the byte the server sends, close with
SO_LINGER 0 (a RST: no TIME_WAIT, so source ports recycle), for N seconds; completed
connections/s).  For vswitch also its CPU (% of one core) per test, peak RSS and its port,
router and conntrack counters.  Once per run, in a child process: the memory of 1 M UDP
conntrack entries (``ct-memory``: ``nat.conntrack.Conntrack.outbound`` with fresh key objects, as
the daemon makes them; VmRSS delta / entries).  Verdicts use ratios of medians against the kernel
of this run (docs/testing.md, "Benchmark protocol"); absolute numbers are for orientation only.

The parsers (``rss_kib``, ``cps_summary``, ``router_drops``, ``counter_delta``) are pure, for
unit tests; the other parsers, the CPU sampling and the plot style come from ``bench.bridge``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    check_alive,
    cpu_note,
    cpu_percent,
    cpu_sample,
    interrupt,
    iperf,
    iperf_tcp_bps,
    iperf_udp_pps,
    iperf_udp_sent_pps,
    log_tail,
    machine_info,
    show_ports,
    snmp_counter,
    vm_hwm_kib,
    vswitch_bin,
)
from bench.common import Setup as BridgeSetup
from bench.report import new_report, ratio_bars, round_rows, run_and_save
from bench.services import log_problems
from vswitch.lab import Lab, sh, wait_for

VARIANTS = ("kernel", "vswitch")
GUEST_IP, GATEWAY, SUBNET = "10.80.0.5", "10.80.0.1", "10.80.0.0/24"
SERVER_IP, UPLINK_IP = "10.81.0.1", "10.81.0.2"
CPS_PORT, CPS_THREADS = 7000, 8
#: /proc/net/snmp counters of packets a namespace's stack threw away
SNMP_DROPS = (("Ip", "InHdrErrors"), ("Ip", "InAddrErrors"), ("Tcp", "InCsumErrors"),
              ("Udp", "InCsumErrors"), ("Udp", "RcvbufErrors"))
CT_FLOWS, CT_BUDGET_S, GIB = 1_000_000, 240.0, 1 << 30

#: metric -> (label, unit scale, unit, target ratio vswitch/kernel or None)
METRICS: dict[str, tuple[str, float, str, float | None]] = {
    "tcp_bps": ("TCP throughput", 1e9, "Gbit/s", 0.7),
    "udp_pps": ("64-byte UDP delivered", 1e3, "kpkt/s", None),
    "cps": ("new TCP connections", 1, "conn/s", None),
}
#: vswitch-only figures (no kernel counterpart): label, unit
RESOURCES: dict[str, tuple[str, str]] = {
    "cpu_tcp_pct": ("vswitch CPU during TCP", "% of a core"),
    "cpu_udp_pct": ("vswitch CPU during UDP", "% of a core"),
    "cpu_cps_pct": ("vswitch CPU during connections", "% of a core"),
    "rss_peak_mib": ("vswitch peak RSS (VmHWM)", "MiB"),
}


# --- parsers: pure functions ----------------------------------------------------------------

def rss_kib(status: str) -> int:
    """Resident set size now (VmRSS, KiB) from the text of /proc/PID/status."""
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    if m is None:
        raise ValueError("no VmRSS line")
    return int(m.group(1))


def cps_summary(text: str) -> dict[str, float]:
    """The cps-client's last line (JSON: ok, failed, seconds) with ``cps`` = ok / seconds."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError(f"cps-client printed no summary: {text.strip()[-200:]!r}")
    doc = json.loads(lines[-1])
    if doc["seconds"] <= 0:
        raise ValueError("cps-client ran for no time")
    return {"ok": doc["ok"], "failed": doc["failed"], "seconds": doc["seconds"],
            "cps": doc["ok"] / doc["seconds"]}


def router_drops(router: dict[str, Any]) -> dict[str, int]:
    """The non-zero counters of ``vswitch show router --json`` whose name says drop or error,
    flattened: nested dicts give ``outer.inner`` names."""
    out: dict[str, int] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, int) and not isinstance(value, bool) and value and \
                re.search(r"drop|error|fail|refus|full|exhaust|clash|filtered", prefix):
            out[prefix] = value

    walk("", router)
    return out


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that grew from ``before`` to ``after`` (a missing one counts as 0)."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# --- the helpers that run inside the namespaces ---------------------------------------------

def cps_server(port: int) -> None:
    """Accept forever; send one byte and close each connection."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", port))
        ls.listen(4096)
        print("listening", flush=True)
        while True:
            conn, _ = ls.accept()
            try:
                conn.send(b"x")
            except OSError:
                pass
            conn.close()


def cps_client(host: str, port: int, seconds: float, threads: int) -> None:
    """``threads`` blocking loops for ``seconds``: connect, read one byte, close with a RST
    (SO_LINGER 0: no TIME_WAIT, so source ports recycle); 1 s timeout.  Prints a JSON summary:
    ok, failed, seconds.  (Blocking sockets in threads beat asyncio here by 3x.)"""
    import threading

    linger = struct.pack("ii", 1, 0)
    totals: list[tuple[int, int]] = []
    start = time.monotonic()
    end = start + seconds

    def loop() -> None:
        ok = failed = 0
        while time.monotonic() < end:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.settimeout(1.0)
            try:
                s.connect((host, port))
                ok, failed = (ok + 1, failed) if s.recv(1) == b"x" else (ok, failed + 1)
            except OSError:
                failed += 1
            finally:
                s.close()
        totals.append((ok, failed))  # list.append is atomic

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"ok": sum(t[0] for t in totals), "failed": sum(t[1] for t in totals),
                      "seconds": time.monotonic() - start}), flush=True)


def ct_memory(flows: int, budget: float) -> None:
    """Create ``flows`` UDP flows with ``Conntrack.outbound`` and print the memory they take.

    One external address holds at most 64512 mappings (ports 1024-65535), so guest endpoints
    (10.80.x.y, port 1024 + x*256 + y: distinct addresses and ports) each talk to 16 remote
    addresses (198.18.0.0-15:53): 62500 endpoints x 16 = 1 M flows.  Every key is made of
    fresh objects, as the daemon makes them from frames.  Stops at ``budget`` seconds; the
    parent extrapolates then.  Prints JSON: flows, seconds, rss_delta_kib, estimator bytes.
    """
    from nat.conntrack import Conntrack
    from wire.packets import PROTO_UDP

    per_endpoint = 16
    gc.collect()
    before = rss_kib(Path("/proc/self/status").read_text())
    ct = Conntrack(bytes([10, 81, 0, 2]), max_entries=flows + 1)
    start = time.monotonic()
    deadline, n = start + budget, 0
    for endpoint in range((flows + per_endpoint - 1) // per_endpoint):
        for k in range(per_endpoint):
            if n >= flows:
                break
            verdict = ct.outbound(PROTO_UDP, (0x0A500000 | endpoint).to_bytes(4, "big"),
                                  1024 + endpoint, (0xC6120000 | k).to_bytes(4, "big"), 53, 0,
                                  200 + n % 1000, n * 1e-6)
            if not isinstance(verdict, tuple):
                raise RuntimeError(f"flow {n} refused: {verdict}")
            n += 1
        if time.monotonic() > deadline:
            break
    seconds = time.monotonic() - start
    gc.collect()
    after = rss_kib(Path("/proc/self/status").read_text())
    print(json.dumps({"flows": len(ct), "seconds": seconds, "rss_delta_kib": after - before,
                      "estimator_bytes": ct.memory_per_entry(), "per_endpoint": per_endpoint,
                      "endpoints": endpoint + 1}), flush=True)


def helper(args: list[str], ns: str | None = None) -> list[str]:
    """argv running one of this module's helpers (in namespace ``ns``)."""
    cmd = [sys.executable, "-m", "bench.nat", *args]
    return (["ip", "netns", "exec", ns] if ns else []) + cmd


# --- topologies -----------------------------------------------------------------------------

@dataclass
class Setup(BridgeSetup):
    """client_ns is the guest, server_ns the internet; devs are (guest, uplink) interfaces.
    ``links`` names every interface on the path as role -> (namespace or "" for root, device)."""

    router_ns: str = ""
    links: dict[str, tuple[str, str]] = field(default_factory=dict)


def build_internet(lab: Lab, outer: str) -> str:
    """The internet namespace behind a veth whose root end is ``outer``."""
    ns = lab.netns("ni")
    lab.veth(outer, ns)
    lab.addr(ns, "eth0", f"{SERVER_IP}/24")
    return ns


def build_kernel(lab: Lab) -> Setup:
    guest, router = lab.netns("ng"), lab.netns("nr")
    internet = lab.netns("ni")
    for ns, peer, dev in ((guest, "eth0", "r-g"), (internet, "eth0", "r-u")):
        sh(["ip", "link", "add", dev, "netns", router, "type", "veth", "peer", "name", peer,
            "netns", ns])
    for ns in (guest, router, internet):
        sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1"])
    sh(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    lab.addr(router, "r-g", f"{GATEWAY}/24")
    lab.addr(router, "r-u", f"{UPLINK_IP}/24")
    lab.addr(guest, "eth0", f"{GUEST_IP}/24")
    lab.addr(internet, "eth0", f"{SERVER_IP}/24")
    sh(["ip", "-n", guest, "route", "add", "default", "via", GATEWAY])
    nft = ["ip", "netns", "exec", router, "nft"]
    sh([*nft, "add", "table", "ip", "nat"])
    sh([*nft, "add", "chain", "ip", "nat", "post",
        "{ type nat hook postrouting priority 100; }"])
    sh([*nft, "add", "rule", "ip", "nat", "post", "oifname", "r-u", "masquerade"])
    links = {"guest": (guest, "eth0"), "router-guest": (router, "r-g"),
             "router-uplink": (router, "r-u"), "internet": (internet, "eth0")}
    return Setup(guest, internet, ("eth0", "r-u"), router_ns=router, links=links)


def build_vswitch(lab: Lab) -> Setup:
    guest = lab.netns("ng")
    uplink, port = lab.name("vu"), lab.name("g")
    internet = build_internet(lab, uplink)
    sock = f"/tmp/bnat-{lab.tag}.sock"
    config = Path(f"/tmp/bnat-{lab.tag}.toml")
    log = Path(f"/tmp/bnat-{lab.tag}.log")
    lab.files += [config, log, Path(sock)]
    config.write_text(f"""[switch]
name = "bnat"
[control]
socket = "{sock}"
[network]
mode = "nat"
subnet = "{SUBNET}"
[dhcp]
enabled = false
[dns]
enabled = false
[uplink]
type = "raw"
interface = "{uplink}"
address = "{UPLINK_IP}/24"
gateway = "{SERVER_IP}"
[[port]]
name = "{port}"
type = "internal"
netns = "{guest}"
""")
    with log.open("wb") as out:
        proc = lab.spawn([vswitch_bin(), "run", str(config)], stdout=out, stderr=out)
    links = {"guest": (guest, port), "uplink": ("", uplink), "internet": (internet, "eth0")}
    setup = Setup(guest, internet, (port, uplink), proc, sock, log, links=links)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"vswitch exited ({proc.returncode}): {log_tail(setup)}")
        rows = show_ports(sock, check=False)
        return rows is not None and len(rows) >= 2 and all(r["state"] == "up" for r in rows)

    wait_for(ready, 20, "vswitch ports up", interval=0.2)
    lab.addr(guest, port, f"{GUEST_IP}/24")
    sh(["ip", "-n", guest, "route", "add", "default", "via", GATEWAY])
    return setup


BUILDERS: dict[str, Callable[[Lab], Setup]] = {"kernel": build_kernel, "vswitch": build_vswitch}


# --- measurements ---------------------------------------------------------------------------

def vswitch_show(setup: Setup, what: str) -> Any:
    done = subprocess.run([vswitch_bin(), "show", what, "--socket", setup.socket, "--json"],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"vswitch show {what}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def link_drops(ns: str, dev: str) -> dict[str, int]:
    """rx/tx dropped and errors of one interface, in ``ns`` ("" for the root namespace)."""
    cmd = (["ip", "-n", ns] if ns else ["ip"]) + ["-s", "-j", "link", "show", "dev", dev]
    stats = json.loads(sh(cmd))[0]["stats64"]
    return {f"{way}_{k}": stats[way][k] for way in ("rx", "tx") for k in ("dropped", "errors")}


def drop_counters(lab: Lab, setup: Setup) -> dict[str, int]:
    """Every place a packet can be lost: each interface on the path, the IP stacks at both
    ends (bad headers or checksums, full UDP socket buffers: nstat names), and for vswitch its
    ports' and router's drop counters."""
    out = {f"{role}.{k}": v for role, (ns, dev) in setup.links.items()
           for k, v in link_drops(ns, dev).items()}
    for role, ns in (("guest", setup.client_ns), ("internet", setup.server_ns)):
        snmp = lab.run(ns, ["cat", "/proc/net/snmp"], timeout=10).stdout
        for proto, name in SNMP_DROPS:
            out[f"{role}.{proto}{name}"] = snmp_counter(snmp, proto, name)
    if setup.switch is not None:
        out |= {f"port {row['name']}.{k}": v for row in show_ports(setup.socket) or []
                for k, v in row["drops"].items()}
        out |= {f"router.{k}": v for k, v in router_drops(vswitch_show(setup, "router")).items()}
    return out


def connections(setup: Setup, seconds: float) -> dict[str, float]:
    cmd = helper(["cps-client", SERVER_IP, str(CPS_PORT), f"{seconds:g}", str(CPS_THREADS)],
                 setup.client_ns)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                          check=False, cwd=REPO)
    return cps_summary(done.stdout + done.stderr)


def measure(lab: Lab, setup: Setup, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    lab.spawn(["iperf3", "-s"], ns=setup.server_ns, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
    lab.spawn(helper(["cps-server", str(CPS_PORT)]), ns=setup.server_ns, cwd=REPO,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: lab.run(setup.client_ns, ["ping", "-c", "1", "-W", "1", SERVER_IP],
                             check=False, timeout=5).returncode == 0, 15, "first ping")
    wait_for(lambda: {":5201", f":{CPS_PORT}"} <= set(
        re.findall(r":\d+", lab.run(setup.server_ns, "ss -Hltn", timeout=5).stdout)),
        15, "iperf3 and connection servers")
    r: dict[str, Any] = {"drops": {}}

    def tcp() -> str:
        doc = iperf(lab, setup, seconds, server=SERVER_IP)
        r["tcp_bps"] = iperf_tcp_bps(doc)
        r["tcp_retransmits"] = doc["end"]["sum_sent"].get("retransmits")
        return f"tcp  {r['tcp_bps'] / 1e9:6.2f} Gbit/s, {r['tcp_retransmits']} retransmits"

    def udp() -> str:
        doc = iperf(lab, setup, seconds, "-u", "-l", "64", "-b", "0", server=SERVER_IP)
        r["udp_pps"], r["udp_sent_pps"] = iperf_udp_pps(doc), iperf_udp_sent_pps(doc)
        return (f"udp  {r['udp_pps'] / 1e3:6.1f} kpkt/s delivered of "
                f"{r['udp_sent_pps'] / 1e3:.1f} sent")

    def cps() -> str:
        c = connections(setup, seconds)
        r["cps"], r["cps_failed"] = c["cps"], c["failed"]
        return f"conn {r['cps']:6.0f} /s completed, {c['failed']:.0f} failed"

    for test, run in (("tcp", tcp), ("udp", udp), ("cps", cps)):
        drops, cpu = drop_counters(lab, setup), cpu_sample(setup)
        msg = run()
        r[f"cpu_{test}_pct"] = cpu_percent(cpu, cpu_sample(setup))
        check_alive(setup, test)
        r["drops"][test] = counter_delta(drops, drop_counters(lab, setup))
        say(msg + cpu_note(r[f"cpu_{test}_pct"]) + "; drops: "
            + (", ".join(f"{k}={v}" for k, v in r["drops"][test].items()) or "none"))

    if setup.switch is not None:
        status = Path(f"/proc/{setup.switch.pid}/status").read_text()
        r["rss_peak_mib"] = vm_hwm_kib(status) / 1024
        r["rss_end_mib"] = rss_kib(status) / 1024
        r["ports"] = [{k: row.get(k) for k in ("name", "rx_frames", "tx_frames", "drops")}
                      for row in show_ports(setup.socket) or []]
        r["router"] = vswitch_show(setup, "router")
        r["conntrack_flows"] = len(vswitch_show(setup, "conntrack"))
        assert setup.log is not None
        r["log_problems"] = log_problems(setup.log.read_text(errors="replace"))[:20]
        say(f"rss  {r['rss_peak_mib']:.1f} MiB peak, {r['conntrack_flows']} flows tracked, "
            f"{len(r['log_problems'])} log warnings/errors")
    else:
        ct = lab.run(setup.router_ns, ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"],
                     check=False, timeout=10)
        r["conntrack_flows"] = int(ct.stdout.strip() or 0)
        say(f"{r['conntrack_flows']} flows in the router's nf_conntrack")
    return r


def conntrack_memory(flows: int, budget: float, say: Callable[[str], None]) -> dict[str, Any]:
    """Run ``ct-memory`` in a child (its own RSS), extrapolate to 1 M if it stopped early."""
    say(f"conntrack memory: creating {flows} UDP flows (at most {budget:.0f} s)")
    done = subprocess.run(helper(["ct-memory", str(flows), f"{budget:g}"]), capture_output=True,
                          text=True, timeout=budget + 120, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"ct-memory failed: {done.stderr.strip()[-300:]}")
    r: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    r["bytes_per_entry"] = r["rss_delta_kib"] * 1024 / r["flows"]
    r["extrapolated"] = r["flows"] < CT_FLOWS
    r["bytes_for_1m"] = r["bytes_per_entry"] * CT_FLOWS
    r["fits_1gib"] = r["bytes_for_1m"] <= GIB
    say(f"conntrack memory: {r['flows']} flows in {r['seconds']:.1f} s, "
        f"{r['bytes_per_entry']:.0f} B/entry (VmRSS), estimator {r['estimator_bytes']} B; "
        f"1 M entries {'~' if r['extrapolated'] else ''}{r['bytes_for_1m'] / 2**20:.0f} MiB")
    return r


# --- summary and reports --------------------------------------------------------------------

def compare(med: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per metric: the ratio vswitch / kernel of the medians, and the verdict (if a target)."""
    kernel, vsw = med.get("kernel", {}), med.get("vswitch", {})
    out: dict[str, dict[str, Any]] = {}
    for key, (_, _, _, target) in METRICS.items():
        if key in kernel and key in vsw and kernel[key]:
            ratio = vsw[key] / kernel[key]
            out[key] = {"value": ratio, "target": target,
                        "met": None if target is None else ratio >= target}
    return out


def fmt(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    scale = METRICS[key][1] if key in METRICS else 1
    digits = {"tcp_bps": 2, "cps": 0}.get(key, 1)
    return f"{value / scale:.{digits}f}"


def yes_no(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


def markdown(report: dict[str, Any]) -> str:
    med, cmp_ = report["medians"], report["comparison"]
    kernel, vsw = med.get("kernel", {}), med.get("vswitch", {})
    m = report["machine"]
    lines = [f"# vswitch NAT vs kernel nft masquerade ({report['date']})", "",
             f"Guest namespace -> internet namespace. Medians of {report['rounds_requested']} "
             f"alternating rounds, {report['seconds']:g} s per test. Machine: {m['cpus']} × "
             f"{m['cpu']}, Linux {m['kernel']}. Only the ratios mean anything on this shared "
             "machine.", "", "| metric | kernel masquerade | vswitch | ratio | target | met? |",
             "|---|---:|---:|---:|---|---|"]
    for key, (label, _, unit, _) in METRICS.items():
        c = cmp_.get(key)
        ratio = "—" if c is None else f"{c['value']:.2f}x"
        target = "—" if c is None or c["target"] is None else f">= {c['target']}x"
        lines.append(f"| {label} ({unit}) | {fmt(key, kernel.get(key))} | "
                     f"{fmt(key, vsw.get(key))} | {ratio} | {target} | "
                     f"{yes_no(None if c is None else c['met'])} |")
    for key, (label, unit) in RESOURCES.items():
        lines.append(f"| {label} ({unit}) | — | {fmt(key, vsw.get(key))} | — | — | — |")
    ct = report.get("conntrack_memory")
    if ct is not None:
        approx = " (extrapolated)" if ct["extrapolated"] else ""
        lines.append(f"| conntrack memory per UDP entry (bytes, VmRSS) | — | "
                     f"{ct['bytes_per_entry']:.0f} | — | — | — |")
        lines.append(f"| 1 M conntrack entries{approx} (MiB) | — | "
                     f"{ct['bytes_for_1m'] / 2**20:.0f} | — | <= 1024 | "
                     f"{yes_no(ct['fits_1gib'])} |")
    lines += ["", "## Rounds", "", "| round | variant | TCP Gbit/s | UDP kpkt/s delivered / sent "
              "| conn/s (failed) | vswitch CPU TCP/UDP/conn % | flows tracked "
              "| drops during each test |",
              "|---|---|---:|---:|---:|---:|---:|---|"]

    def row(r: dict[str, Any]) -> str:
        cpu = ("—" if r.get("cpu_tcp_pct") is None else
               f"{r['cpu_tcp_pct']:.0f} / {r['cpu_udp_pct']:.0f} / {r['cpu_cps_pct']:.0f}")
        drops = "; ".join(f"{test}: " + ", ".join(f"{k}={n}" for k, n in d.items())
                          for test, d in r["drops"].items() if d) or "—"
        return (f"{r['tcp_bps'] / 1e9:.2f} | "
                f"{r['udp_pps'] / 1e3:.1f} / {r['udp_sent_pps'] / 1e3:.1f} | "
                f"{r['cps']:.0f} ({r['cps_failed']:.0f}) | {cpu} | "
                f"{r['conntrack_flows']} | {drops} |")

    lines += round_rows(report, 6, row)
    if ct is not None:
        lines += ["", f"Conntrack memory: {ct['flows']} UDP flows made with "
                  f"`Conntrack.outbound` in {ct['seconds']:.1f} s ({ct['endpoints']} guest "
                  f"endpoints × {ct['per_endpoint']} remotes), VmRSS delta "
                  f"{ct['rss_delta_kib'] / 1024:.0f} MiB; the module's "
                  f"own estimator (`memory_per_entry`) says {ct['estimator_bytes']} B/entry."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = report["medians"]
    kernel, vsw = med.get("kernel", {}), med.get("vswitch", {})
    keys = [k for k in METRICS if k in kernel and k in vsw]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ratio_bars(ax, report, ["vswitch"], keys, kernel, 0.5)
    for j, k in enumerate(keys):
        target = METRICS[k][3]
        if target is not None:
            ax.hlines(target, j - 0.35, j + 0.35, colors="red", linestyles="--", label="target")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(keys)), [f"{METRICS[k][0]}\n(higher is better)" for k in keys],
                  fontsize=9)
    ax.set_ylabel("relative to kernel nft masquerade (= 1.0)")
    ct = report.get("conntrack_memory")
    note = "" if ct is None else (f"; 1 M conntrack entries: "
                                  f"{ct['bytes_for_1m'] / 2**20:.0f} MiB")
    ax.set_title(f"vswitch NAT vs kernel masquerade, median of {len(report['rounds'])} rounds "
                 f"({report['date'][:10]}){note}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cps-server"]:
        cps_server(int(argv[1]))
        return 0
    if argv[:1] == ["cps-client"]:
        cps_client(argv[1], int(argv[2]), float(argv[3]), int(argv[4]))
        return 0
    if argv[:1] == ["ct-memory"]:
        ct_memory(int(argv[1]), float(argv[2]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.nat", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--ct-flows", type=int, default=CT_FLOWS,
                    help="conntrack entries for the memory test (0: skip it)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.nat needs root (namespaces, TAP, veth, nft)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)  # clean up on kill as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

    start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - start:5.0f}s] {msg}", flush=True)

    report = new_report("bench.nat", argv, machine_info(), args.rounds, args.seconds,
                        variants=list(VARIANTS))
    def memory() -> None:
        if args.ct_flows:
            try:
                report["conntrack_memory"] = conntrack_memory(args.ct_flows, CT_BUDGET_S, say)
            except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                report["conntrack_memory_error"] = f"{type(exc).__name__}: {exc}"
                say(f"conntrack memory FAILED: {exc}")

    return run_and_save(report, VARIANTS,
                        lambda v, lab, say: measure(lab, BUILDERS[v](lab), args.seconds, say),
                        start, "bnat", (*METRICS, *RESOURCES), compare, args.out, "nat",
                        markdown, plot, after=memory)


if __name__ == "__main__":
    sys.exit(main())
