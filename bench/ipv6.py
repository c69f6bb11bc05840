"""IPv6 against IPv4 on the same paths: vswitch's host uplink and NAT66, kernel masquerade, one run.

    sudo .venv/bin/python -m bench.ipv6 [--rounds 3] [--seconds 5] [--out bench/results]
                                        [--variants kernel,vswitch-host,vswitch-raw]

Every round builds each variant from scratch, measures IPv4 and IPv6 in it and tears it down;
the order of the variants rotates from round to round, and so does which family goes first
(the families alternate test by test: IPv4 upload, IPv6 upload, IPv4 download, ...), so drift
on this shared machine does not always favour the same one.  The world is bench.egress's, with
IPv6 added:

  host          namespace H: eth0 10.91.0.2/24 + fd91::2/64 (``nodad``), lo up,
                ``net.ipv4.ping_group_range = 0 2147483647`` (vswitch answers the guest's pings
                of both families with ping sockets)
  internet      namespace I behind H's eth0: eth0 10.91.0.1/24 + fd91::1/64, ``iperf3 -s`` and
                a TCP echo server on [::] for both families (``python -m bench.egress rr-server
                PORT ::``)
  guest         namespace G, a fresh one per variant and round
  kernel        veth G:eth0 10.93.0.5/24 + fd93::5/64 -- H:vk 10.93.0.1/24 + fd93::1/64,
                default routes via H, ip_forward=1 and ``net.ipv6.conf.all.forwarding=1`` in H,
                ``nft add rule inet nat post oifname eth0 masquerade`` (one rule, both families)
  vswitch-host  ``ip netns exec H python -m vswitch.cli run``, mode "nat", no [uplink] (the host
                uplink: guest connections become H's own sockets), subnet 10.92.0.0/24 and
                ``subnet6 = "fd92:0:0:1::/64"``, DHCP and DNS off; an ``internal`` port (TAP) in
                G: 10.92.0.5/24 with a default route via 10.92.0.1 for IPv4, and for IPv6 the
                kernel's SLAAC address and default route (via the gateway's fe80::) from
                vswitch's router advertisements (``accept_ra = 2``)
  vswitch-raw   the same vswitch and guest, but ``[uplink] type = "raw"`` (NAT44 and NAT66 in
                vswitch) on a second veth H:vu -- I:eth1 (10.94.0.1/24 + fd94::1/64): the
                uplink's address 10.94.0.2/24 and ``address6 = "fd94::2/64"``, gateways
                10.94.0.1 and fd94::1; the servers are then reached at 10.94.0.1 and fd94::1

Per variant, family and round, from G to the server in I: iperf3 TCP upload (G -> I) and
download (-R), receiver bits/s (``iperf3 -4`` / ``-6``); ping RTT (``ping -4`` / ``-6``, 200 pings
at 10 ms, per-packet times: median and p99); TCP 1-byte request/response RTT (bench.egress's
``rr-client``: median and p99).  For vswitch also its CPU (% of one core) per test and its peak
RSS.  A variant that does not come up is recorded with the reason and the others go on; so is
a family that does not (IPv6 on the raw uplink before NAT66 exists).  The verdict (issue: IPv6
>= 0.9x our IPv4 throughput on the same path) is the ratio of the medians of this run
(docs/testing.md, "Benchmark protocol"); vswitch IPv6 / kernel IPv6 and the kernel's own IPv6 /
IPv4 are for orientation.

The parsers (``slaac_address``, ``has_ra_route``), ``key``, ``family_order``, ``compare`` and
``vswitch_config6`` are pure, for unit tests; the measurements' parsers and helpers come from
``bench.common`` and ``bench.egress``, the rounds and the files from ``bench.report``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    cpu_percent,
    cpu_sample,
    interrupt,
    iperf,
    iperf_tcp_bps,
    machine_info,
    show_ports,
    vm_hwm_kib,
)
from bench.egress import (
    KERNEL_GATEWAY,
    KERNEL_GUEST,
    PING_COUNT,
    PING_INTERVAL,
    RR_COUNT,
    RR_PORT,
    SERVER_IP,
    VSW_GATEWAY,
    VSW_GUEST,
    VSW_SUBNET,
    Setup,
    build_world,
    check_alive,
    guest_mtu,
    helper,
    note,
    ping_summary,
    request_response,
    tmp_files,
    vswitch_config,
)
from bench.report import FAILURES, new_report, run_and_save
from bench.services import log_problems
from vswitch.lab import Lab, sh, wait_for

VARIANTS = ("kernel", "vswitch-host", "vswitch-raw")
VSWITCH = ("vswitch-host", "vswitch-raw")
FAMILIES = ("v4", "v6")
FAMILY = {"v4": "IPv4", "v6": "IPv6"}
SERVER_IP6, HOST_IP6 = "fd91::1", "fd91::2"
VSW_SUBNET6 = "fd92:0:0:1::/64"
KERNEL_GATEWAY6, KERNEL_GUEST6 = "fd93::1", "fd93::5"
RAW_SERVER, RAW_UPLINK = "10.94.0.1", "10.94.0.2"
RAW_SERVER6, RAW_UPLINK6 = "fd94::1", "fd94::2"
SLAAC_WAIT_S = 30

#: metric -> (label, unit scale, unit, better ("higher"/"lower"), target ratio of vswitch's
#: IPv6 to its IPv4 on the same path, or None)
METRICS: dict[str, tuple[str, float, str, str, float | None]] = {
    "tcp_up_bps": ("TCP upload", 1e9, "Gbit/s", "higher", 0.9),
    "tcp_down_bps": ("TCP download", 1e9, "Gbit/s", "higher", 0.9),
    "ping_median_us": ("ping RTT median", 1, "µs", "lower", None),
    "ping_p99_us": ("ping RTT p99", 1, "µs", "lower", None),
    "rr_median_us": ("TCP RR RTT median", 1, "µs", "lower", None),
    "rr_p99_us": ("TCP RR RTT p99", 1, "µs", "lower", None),
}
#: per family: vswitch's CPU (% of one core) during each test
CPU = ("cpu_up_pct", "cpu_down_pct", "cpu_ping_pct", "cpu_rr_pct")
#: the comparisons: ((variant, family), (variant, family), with the targets?)
Side = tuple[str, str]
PAIRS: list[tuple[Side, Side, bool]] = [
    *[((v, "v6"), (v, "v4"), True) for v in VSWITCH],
    *[((v, "v6"), ("kernel", "v6"), False) for v in VSWITCH],
    *[((v, "v4"), ("kernel", "v4"), False) for v in VSWITCH],
    (("kernel", "v6"), ("kernel", "v4"), False),
]


# --- pure functions -------------------------------------------------------------------------

def key(family: str, metric: str) -> str:
    """The flat result key of one family's metric: ``v6_tcp_up_bps``."""
    return f"{family}_{metric}"


def family_order(round_no: int) -> tuple[str, str]:
    """Which family goes first in each test: IPv4 in odd rounds, IPv6 in even ones."""
    return FAMILIES if round_no % 2 else (FAMILIES[1], FAMILIES[0])


def slaac_address(addr_json: str, prefix: str) -> str | None:
    """The first address of ``ip -j -6 addr show`` output inside ``prefix`` that is global and
    usable (not tentative, DAD not failed), or None."""
    net = ipaddress.IPv6Network(prefix)
    for link in json.loads(addr_json or "[]"):
        for a in link.get("addr_info", []):
            if (a.get("family") == "inet6" and a.get("scope") == "global"
                    and not a.get("tentative") and not a.get("dadfailed")
                    and ipaddress.IPv6Address(a["local"]) in net):
                return str(a["local"])
    return None


def has_ra_route(route_json: str) -> bool:
    """Whether ``ip -j -6 route show`` output has a default route via a link-local router."""
    return any(r.get("dst") == "default" and str(r.get("gateway", "")).startswith("fe80:")
               for r in json.loads(route_json or "[]"))


def compare(med: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per pair (``"vswitch-host:v6/vswitch-host:v4"``, ...) and metric: the ratio of the
    medians and, for vswitch's IPv6 / its IPv4, the verdict where the metric has a target
    (>= target when higher is better, <= when lower is)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (va, fa), (vb, fb), targets in PAIRS:
        a, b = med.get(va, {}), med.get(vb, {})
        row: dict[str, dict[str, Any]] = {}
        for metric, (_, _, _, better, target) in METRICS.items():
            x, y = a.get(key(fa, metric)), b.get(key(fb, metric))
            if x is None or not y:
                continue
            ratio = x / y
            target = target if targets else None
            met = None if target is None else (ratio >= target if better == "higher"
                                               else ratio <= target)
            row[metric] = {"value": ratio, "better": better, "target": target, "met": met}
        out[f"{va}:{fa}/{vb}:{fb}"] = row
    return out


def pair_label(pair: str) -> str:
    """``"vswitch-host:v6/vswitch-host:v4"`` -> ``"vswitch-host IPv6 / IPv4"``."""
    (va, fa), (vb, fb) = (side.split(":") for side in pair.split("/"))
    right = FAMILY[fb] if va == vb else f"{vb} {FAMILY[fb]}"
    return f"{va} {FAMILY[fa]} / {right}"


def vswitch_config6(name: str, sock: Path, port: str, guest: str, uplink: str = "") -> str:
    """bench.egress's vswitch config with ``subnet6``; with ``uplink`` (an interface) the raw
    uplink there, IPv4 and IPv6, instead of the host uplink."""
    base = vswitch_config(name, sock, port, guest)
    line = f'subnet = "{VSW_SUBNET}"\n'
    if line not in base:
        raise ValueError("bench.egress's vswitch config has no subnet line to extend")
    text = base.replace(line, f'{line}subnet6 = "{VSW_SUBNET6}"\n')
    if uplink:
        text += f"""[uplink]
type = "raw"
interface = "{uplink}"
address = "{RAW_UPLINK}/24"
gateway = "{RAW_SERVER}"
address6 = "{RAW_UPLINK6}/64"
gateway6 = "{RAW_SERVER6}"
"""
    return text


# --- topologies -----------------------------------------------------------------------------

@dataclass
class Setup6(Setup):
    """bench.egress's Setup; ``servers`` is the server's address per family, ``slaac`` the
    prefix the guest takes its IPv6 address from ("" when it is static)."""

    servers: dict[str, str] = field(default_factory=dict)
    slaac: str = ""


def ipv6_on(ns: str, dev: str, cidr: str = "") -> None:
    """IPv6 on again for ``dev`` (bench.egress's world turns it off), with ``cidr`` (no DAD)."""
    sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0"])
    if cidr:
        sh(["ip", "-n", ns, "-6", "addr", "add", cidr, "dev", dev, "nodad"])


def addr46(ns: str, dev: str, cidr: str, cidr6: str) -> None:
    sh(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])
    ipv6_on(ns, dev, cidr6)
    sh(["ip", "-n", ns, "link", "set", dev, "up"])


def build_world6(lab: Lab) -> tuple[str, str, str]:
    """bench.egress's H, I and G, with H:eth0 fd91::2 -- I:eth0 fd91::1 added."""
    host, internet, guest = build_world(lab)
    ipv6_on(host, "lo")
    ipv6_on(host, "eth0", f"{HOST_IP6}/64")
    ipv6_on(internet, "eth0", f"{SERVER_IP6}/64")
    return host, internet, guest


def build_kernel(lab: Lab) -> Setup6:
    host, internet, guest = build_world6(lab)
    sh(["ip", "-n", host, "link", "add", "vk", "type", "veth", "peer", "name", "eth0",
        "netns", guest])
    sh(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1"])
    addr46(host, "vk", f"{KERNEL_GATEWAY}/24", f"{KERNEL_GATEWAY6}/64")
    addr46(guest, "eth0", f"{KERNEL_GUEST}/24", f"{KERNEL_GUEST6}/64")
    sh(["ip", "-n", guest, "route", "add", "default", "via", KERNEL_GATEWAY])
    sh(["ip", "-n", guest, "-6", "route", "add", "default", "via", KERNEL_GATEWAY6])
    nft = ["ip", "netns", "exec", host, "nft"]
    sh([*nft, "add", "table", "inet", "nat"])
    sh([*nft, "add", "chain", "inet", "nat", "post",
        "{ type nat hook postrouting priority 100; }"])
    sh([*nft, "add", "rule", "inet", "nat", "post", "oifname", "eth0", "masquerade"])
    return Setup6(guest, internet, ("eth0", "eth0"), host_ns=host, guest_dev="eth0",
                  servers={"v4": SERVER_IP, "v6": SERVER_IP6})


def build_vswitch(lab: Lab, raw: bool) -> Setup6:
    host, internet, guest = build_world6(lab)
    uplink = ""
    servers = {"v4": SERVER_IP, "v6": SERVER_IP6}
    if raw:
        uplink = lab.veth(lab.name("vu"), internet, "eth1", outer_ns=host)  # IPv6 off in H
        addr46(internet, "eth1", f"{RAW_SERVER}/24", f"{RAW_SERVER6}/64")
        servers = {"v4": RAW_SERVER, "v6": RAW_SERVER6}
    port = lab.name("ve")
    tmp = tmp_files(lab, "bipv6-vsw")
    sock, config, log = tmp / "ctl.sock", tmp / "vswitch.toml", tmp / "vswitch.log"
    lab.files += [config, log, sock]
    config.write_text(vswitch_config6(f"b6{lab.tag}", sock, port, guest, uplink))
    with log.open("wb") as out:
        proc = lab.spawn([sys.executable, "-m", "vswitch.cli", "run", str(config)], ns=host,
                         stdout=out, stderr=out, cwd=REPO)
    setup = Setup6(guest, internet, (port, uplink or "eth0"), proc, str(sock), log,
                   host_ns=host, guest_dev=port, process="vswitch", servers=servers,
                   slaac=VSW_SUBNET6)
    wanted = 2 if raw else 1  # the guest's port, and the raw uplink's

    def ready() -> bool:
        check_alive(setup, "startup")
        up = {r["name"] for r in show_ports(str(sock), check=False) or [] if r["state"] == "up"}
        return port in up and len(up) >= wanted

    wait_for(ready, 20, "vswitch's ports up", interval=0.2)
    sh(["ip", "-n", guest, "addr", "add", f"{VSW_GUEST}/24", "dev", port])
    sh(["ip", "netns", "exec", guest, "sysctl", "-qw", f"net.ipv6.conf.{port}.accept_ra=2",
        f"net.ipv6.conf.{port}.disable_ipv6=0"])
    sh(["ip", "-n", guest, "link", "set", port, "up"])
    sh(["ip", "-n", guest, "route", "add", "default", "via", VSW_GATEWAY])
    return setup


BUILDERS: dict[str, Callable[[Lab], Setup6]] = {
    "kernel": build_kernel,
    "vswitch-host": lambda lab: build_vswitch(lab, raw=False),
    "vswitch-raw": lambda lab: build_vswitch(lab, raw=True),
}


# --- measurements ---------------------------------------------------------------------------

def wait_slaac(lab: Lab, setup: Setup6) -> str:
    """The guest's SLAAC address, once usable and with a default route via fe80::."""
    found: list[str] = []

    def ready() -> bool:
        check_alive(setup, "SLAAC")
        addrs = lab.run(setup.client_ns, ["ip", "-j", "-6", "addr", "show", "dev",
                                          setup.guest_dev], timeout=5).stdout
        routes = lab.run(setup.client_ns, ["ip", "-j", "-6", "route", "show", "default"],
                         timeout=5).stdout
        address = slaac_address(addrs, setup.slaac)
        if address is None or not has_ra_route(routes):
            return False
        found.append(address)
        return True

    wait_for(ready, SLAAC_WAIT_S, f"a SLAAC address in {setup.slaac} and a default route via "
             "fe80:: in the guest", interval=0.2)
    return found[-1]


def first_ping(lab: Lab, setup: Setup6, family: str) -> None:
    server = setup.servers[family]
    wait_for(lambda: lab.run(setup.client_ns, ["ping", f"-{family[1]}", "-c", "1", "-W", "1",
                                               server], check=False, timeout=5).returncode == 0,
             15, f"a first {FAMILY[family]} ping to {server}")


def measure(lab: Lab, setup: Setup6, seconds: float, order: tuple[str, str],
            say: Callable[[str], None]) -> dict[str, Any]:
    lab.spawn(["iperf3", "-s"], ns=setup.server_ns, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
    lab.spawn(helper(["rr-server", str(RR_PORT), "::"]), ns=setup.server_ns, cwd=REPO,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: {":5201", f":{RR_PORT}"} <= set(
        re.findall(r":\d+", lab.run(setup.server_ns, "ss -Hltn", timeout=5).stdout)),
        15, "iperf3 and echo servers")
    r: dict[str, Any] = {"guest_mtu": guest_mtu(lab, setup), "order": list(order)}

    def fail(family: str, what: str, exc: BaseException) -> None:
        r[key(family, "error")] = f"{what}: {type(exc).__name__}: {exc}"
        say(f"{FAMILY[family]} {what} FAILED: {exc}")
        check_alive(setup, what)  # a dead switch fails the whole variant

    for family in order:
        try:
            if family == "v6" and setup.slaac:
                r["v6_guest_address"] = wait_slaac(lab, setup)
            first_ping(lab, setup, family)
        except FAILURES as exc:
            fail(family, "setup", exc)

    def tcp(family: str, name: str, *extra: str) -> str:
        doc = iperf(lab, setup, seconds, f"-{family[1]}", *extra,
                    server=setup.servers[family])
        bps = r[key(family, f"tcp_{name}_bps")] = iperf_tcp_bps(doc)
        rt = r[key(family, f"tcp_{name}_retransmits")] = doc["end"]["sum_sent"].get(
            "retransmits")
        return f"{name:<4} {bps / 1e9:6.2f} Gbit/s, {rt} retransmits"

    def ping(family: str) -> str:
        done = lab.run(setup.client_ns, ["ping", f"-{family[1]}", "-c", str(PING_COUNT), "-i",
                                         f"{PING_INTERVAL:g}", "-W", "1", "-w", "30",
                                         setup.servers[family]], check=False, timeout=40)
        s = {key(family, k): v for k, v in ping_summary(done.stdout, PING_COUNT).items()}
        r.update(s)
        return (f"ping median {s[key(family, 'ping_median_us')]:.0f} µs, p99 "
                f"{s[key(family, 'ping_p99_us')]:.0f} µs, {s[key(family, 'ping_lost')]} lost")

    def rr(family: str) -> str:
        s = request_response(setup, setup.servers[family])
        r[key(family, "rr_median_us")], r[key(family, "rr_p99_us")] = (s["median_us"],
                                                                       s["p99_us"])
        r[key(family, "rr")] = s
        return (f"rr   median {s['median_us']:.0f} µs, p99 {s['p99_us']:.0f} µs "
                f"({s['count']:.0f} round trips)")

    tests: tuple[tuple[str, Callable[[str], str]], ...] = (
        ("up", lambda f: tcp(f, "up")), ("down", lambda f: tcp(f, "down", "-R")),
        ("ping", ping), ("rr", rr))
    for test, run in tests:
        for family in order:
            if key(family, "error") in r:
                continue
            cpu = cpu_sample(setup)
            try:
                msg = run(family)
            except FAILURES as exc:
                fail(family, test, exc)
                continue
            pct = r[key(family, f"cpu_{test}_pct")] = cpu_percent(cpu, cpu_sample(setup))
            check_alive(setup, test)
            say(f"{FAMILY[family]} {msg}{note(setup, pct)}")

    if setup.switch is not None:
        status = Path(f"/proc/{setup.switch.pid}/status").read_text()
        r["rss_peak_mib"] = vm_hwm_kib(status) / 1024
        assert setup.log is not None
        r["log_problems"] = log_problems(setup.log.read_text(errors="replace"))[:20]
        r["ports"] = [{k: row.get(k) for k in ("name", "rx_frames", "tx_frames", "drops")}
                      for row in show_ports(setup.socket, check=False) or []]
        say(f"rss  {r['rss_peak_mib']:.1f} MiB peak, guest MTU {r['guest_mtu']}, "
            f"{len(r['log_problems'])} log warnings/errors")
    return r


# --- summary and reports --------------------------------------------------------------------

def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    scale = METRICS[metric][1] if metric in METRICS else 1
    digits = 2 if metric.endswith("_bps") else 0 if metric.endswith("_us") else 1
    return f"{value / scale:.{digits}f}"


def fmt_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "—"
    verdict = "" if c["met"] is None else (" yes" if c["met"] else " **no**")
    return f"{c['value']:.2f}x{verdict}"


def failures(report: dict[str, Any]) -> list[str]:
    """Every variant or family that failed, per round, with the reason."""
    out = []
    for rnd in report["rounds"]:
        for v in rnd["order"]:
            r = rnd["results"][v]
            if "error" in r:
                out.append(f"round {rnd['round']}, {v}: {r['error']}")
            out += [f"round {rnd['round']}, {v} {FAMILY[f]}: {r[key(f, 'error')]}"
                    for f in FAMILIES if key(f, "error") in r]
    return out


def markdown(report: dict[str, Any]) -> str:
    med, cmp_ = report["medians"], report["comparison"]
    m = report["machine"]
    variants = report.get("variants", list(VARIANTS))
    lines = [f"# IPv6 vs IPv4: vswitch host uplink and NAT66 vs kernel masquerade "
             f"({report['date']})", "",
             "Guest namespace -> internet namespace through a \"host\" namespace: kernel veth + "
             "nft `inet` masquerade, vswitch with the host uplink (`subnet6`, SLAAC guest), "
             "vswitch with the raw uplink (NAT44 + NAT66); IPv4 and IPv6 in the same namespaces, "
             f"test by test. Medians of {report['rounds_requested']} alternating rounds, "
             f"{report['seconds']:g} s per iperf3 test, {PING_COUNT} pings at "
             f"{PING_INTERVAL * 1000:g} ms, {RR_COUNT} TCP 1-byte round trips. Machine: "
             f"{m['cpus']} × {m['cpu']}, Linux {m['kernel']}. Only the ratios mean anything on "
             "this shared machine.", "",
             "| variant | family | TCP upload (Gbit/s) | TCP download (Gbit/s) "
             "| ping RTT median / p99 (µs) | TCP RR RTT median / p99 (µs) "
             "| vswitch CPU up / down (% of a core) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for v in variants:
        for f in FAMILIES:
            x = med.get(v, {})
            if not any(k.startswith(f"{f}_") for k in x):
                lines.append(f"| {v} | {FAMILY[f]} | not measured (see Failed) |" + " |" * 4)
                continue

            def g(metric: str, f: str = f, x: dict[str, float] = x) -> str:
                return fmt(metric, x.get(key(f, metric)))

            cpu = ("—" if x.get(key(f, "cpu_up_pct")) is None
                   else f"{g('cpu_up_pct')} / {g('cpu_down_pct')}")
            lines.append(f"| {v} | {FAMILY[f]} | {g('tcp_up_bps')} | {g('tcp_down_bps')} | "
                         f"{g('ping_median_us')} / {g('ping_p99_us')} | "
                         f"{g('rr_median_us')} / {g('rr_p99_us')} | {cpu} |")
    shown = ("tcp_up_bps", "tcp_down_bps", "ping_median_us", "rr_median_us")
    lines += ["", "Ratios of the medians (vswitch IPv6 / its IPv4 on the same path: target "
              f">= {METRICS['tcp_up_bps'][4]:g}x for TCP throughput):", "",
              "| comparison | " + " | ".join(
                  f"{METRICS[k][0]} ({METRICS[k][3]} is better)" for k in shown) + " |",
              "|---|" + "---:|" * len(shown)]
    for pair, row in cmp_.items():
        if row:
            lines.append(f"| {pair_label(pair)} | "
                         + " | ".join(fmt_cell(row.get(k)) for k in shown) + " |")
    verdicts = [c["met"] for row in cmp_.values() for c in row.values() if c["met"] is not None]
    lines += ["", f"Targets met: {sum(verdicts)} of {len(verdicts)} measured."]
    failed = failures(report)
    if failed:
        lines += ["", "Failed:", "", *(f"- {x}" for x in failed)]
    lines += ["", "## Rounds", "", "| round | variant | family | guest MTU | up Gbit/s "
              "| down Gbit/s | ping median / p99 µs (lost) | TCP RR median / p99 µs "
              "| CPU up/down/ping/RR % | peak RSS MiB |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rnd in report["rounds"]:
        for v in rnd["order"]:
            r = rnd["results"][v]
            if "error" in r:
                lines.append(f"| {rnd['round']} | {v} | — | error: {r['error']} |"
                             + " |" * 6)
                continue
            for f in r.get("order", FAMILIES):
                lines.append(f"| {rnd['round']} | {v} | {FAMILY[f]} | {round_cells(r, f)}")
    return "\n".join(lines) + "\n"


def round_cells(r: dict[str, Any], f: str) -> str:
    """One family's cells of the "Rounds" table (from guest MTU on)."""
    if key(f, "error") in r:
        return f"{r['guest_mtu']} | error: {r[key(f, 'error')]} |" + " |" * 5

    def g(metric: str) -> str:
        return fmt(metric, r.get(key(f, metric)))

    cpu = ("—" if r.get(key(f, "cpu_up_pct")) is None else
           " / ".join(f"{r[key(f, c)]:.0f}" for c in CPU if r.get(key(f, c)) is not None))
    rss = "—" if r.get("rss_peak_mib") is None else f"{r['rss_peak_mib']:.1f}"
    return (f"{r['guest_mtu']} | {g('tcp_up_bps')} | {g('tcp_down_bps')} | "
            f"{g('ping_median_us')} / {g('ping_p99_us')} ({r.get(key(f, 'ping_lost'), '—')}) | "
            f"{g('rr_median_us')} / {g('rr_p99_us')} | {cpu} | {rss} |")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("tcp_up_bps", "tcp_down_bps", "ping_median_us", "rr_median_us")
    pairs = [(p, row) for p, row in report["comparison"].items() if row]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    if pairs:
        width = 0.8 / len(pairs)
        for i, (pair, row) in enumerate(pairs):
            xs = [j + (i - (len(pairs) - 1) / 2) * width for j in range(len(shown))]
            ys = [row[k]["value"] if k in row else 0 for k in shown]
            bars = ax.bar(xs, ys, width, label=pair_label(pair))
            ax.bar_label(bars, labels=[f"{y:.2f}" if y else "" for y in ys], fontsize=7,
                         padding=2)
        target = METRICS["tcp_up_bps"][4]
        assert target is not None
        ax.hlines(target, -0.45, 1.45, colors="red", linestyles="--",
                  label="target (vswitch IPv6 / IPv4)")
        ax.set_xticks(range(len(shown)), [f"{METRICS[k][0]}\n({METRICS[k][3]} is better)"
                                          for k in shown], fontsize=8)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "nothing to compare: every variant failed", ha="center",
                transform=ax.transAxes)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylabel("ratio of the medians")
    ax.set_title(f"IPv6 vs IPv4, vswitch vs kernel masquerade; median of "
                 f"{len(report['rounds'])} rounds ({report['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench.ipv6", description=__doc__.split("\n")[0])
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
        print("bench.ipv6 needs root (namespaces, TAP, veth, nft)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)  # clean up on kill as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

    start = time.monotonic()
    report = new_report("bench.ipv6", argv, machine_info(), args.rounds, args.seconds,
                        variants=list(variants))

    def run(v: str, lab: Lab, say: Callable[[str], None]) -> dict[str, Any]:
        order = family_order(len(report["rounds"]))  # the round being run, from 1
        return measure(lab, BUILDERS[v](lab), args.seconds, order, say)

    keys = [key(f, k) for f in FAMILIES for k in (*METRICS, *CPU)] + ["rss_peak_mib"]
    return run_and_save(report, variants, run, start, "bip6", keys, compare, args.out, "ipv6",
                        markdown, plot)


if __name__ == "__main__":
    sys.exit(main())
