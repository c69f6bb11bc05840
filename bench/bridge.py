"""vswitch against the Linux kernel bridge: two namespace guests, alternating rounds, one run.

    sudo .venv/bin/python -m bench.bridge [--rounds 3] [--seconds 5] [--out bench/results]

Every round builds each variant from scratch, measures it and tears it down.  The order rotates
from round to round, so drift on this shared machine does not always favour the same variant.

  kernel          ``ip link add br type bridge`` + two veth pairs (IPv6 off on the root ends)
  vswitch         two ``internal`` ports (TAP, vnet_hdr + TSO) moved into the namespaces
  vswitch-attach  two veth pairs whose root ends are joined with ``attach`` ports (AF_PACKET)

Per variant and round: iperf3 TCP (receiver bits/s), 64-byte UDP delivered at the receiver
(pkt/s), ping RTT median and p99, and for vswitch its CPU (% of one core) during the TCP and UDP
tests and its peak RSS (VmHWM).  Verdicts use ratios of medians against the kernel of this run
(docs/testing.md, "Benchmark protocol"); absolute numbers are for orientation only.

The parsers (``iperf_tcp_bps``, ``iperf_udp_pps``, ``ping_rtts_ms``, ``percentile``,
``cpu_ticks``, ``vm_hwm_kib``, ``snmp_counter``) are pure functions of text or JSON, for unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    IP_A,
    IP_B,
    Setup,
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
    percentile,
    ping_rtts_ms,
    show_ports,
    snmp_counter,
    vm_hwm_kib,
    vswitch_bin,
)
from bench.report import new_report, ratio_bars, round_rows, run_and_save
from vswitch.lab import Lab, sh, wait_for
from vswitch.ports.tun import disable_ipv6

VARIANTS = ("kernel", "vswitch", "vswitch-attach", "vswitch-traced", "vswitch-traced-all")
PING_COUNT, PING_INTERVAL = 300, 0.005

#: metric -> (label, unit scale, unit, kind of comparison with the kernel, target)
METRICS: dict[str, tuple[str, float, str, str, float | None]] = {
    "tcp_bps": ("TCP throughput", 1e9, "Gbit/s", "ratio", 0.9),
    "udp_pps": ("64-byte UDP delivered", 1e3, "kpkt/s", "ratio", 0.6),
    "rtt_median_us": ("ping RTT median", 1, "µs", "diff", 40.0),
    "rtt_p99_us": ("ping RTT p99", 1, "µs", "diff", None),
}
#: vswitch-only figures (no kernel counterpart)
RESOURCES: dict[str, tuple[str, str]] = {
    "cpu_tcp_pct": ("vswitch CPU during TCP", "% of a core"),
    "cpu_udp_pct": ("vswitch CPU during UDP", "% of a core"),
    "rss_peak_mib": ("vswitch peak RSS (VmHWM)", "MiB"),
}


# --- parsers: pure functions ----------------------------------------------------------------



















# --- topologies -----------------------------------------------------------------------------



#: ``ethtool -K`` arguments that leave a device no transmit offload (as an e1000 guest's TAP)
NO_OFFLOAD_FEATURES = ("tx", "off", "tso", "off", "gso", "off")


def build_kernel(lab: Lab, b_features: Sequence[str] = ()) -> Setup:
    """The kernel bridge; ``b_features``: ethtool -K settings for its port toward B."""
    a, b = lab.netns("ka"), lab.netns("kb")
    br = lab.name("kbr")
    sh(["ip", "link", "add", br, "type", "bridge"])
    lab.links.append(br)
    disable_ipv6(br)
    for ns, outer, ip in ((a, lab.name("kva"), IP_A), (b, lab.name("kvb"), IP_B)):
        lab.veth(outer, ns)
        sh(["ip", "link", "set", outer, "master", br])
        lab.addr(ns, "eth0", f"{ip}/24")
    if b_features:
        sh(["ethtool", "-K", lab.name("kvb"), *b_features])
    sh(["ip", "link", "set", br, "up"])
    return Setup(a, b, ("eth0", "eth0"))


def build_vswitch(lab: Lab, attach: bool, b_features: Sequence[str] = ()) -> Setup:
    """vswitch with internal or attach ports; ``b_features`` as for ``build_kernel``."""
    a, b = lab.netns("va"), lab.netns("vb")
    ports, devs = [], []
    for ns, side, ip in ((a, "a", IP_A), (b, "b", IP_B)):
        if attach:  # the guest end must be up before the port has carrier
            outer = lab.veth(lab.name(f"vv{side}"), ns)
            if side == "b" and b_features:
                sh(["ethtool", "-K", outer, *b_features])
            lab.addr(ns, "eth0", f"{ip}/24")
            ports.append(f'[[port]]\nname = "p{side}"\ntype = "attach"\ninterface = "{outer}"\n')
            devs.append("eth0")
        else:
            dev = lab.name(f"g{side}")
            ports.append(f'[[port]]\nname = "{dev}"\ntype = "internal"\nnetns = "{ns}"\n')
            devs.append(dev)
    sock = f"/tmp/bench-{lab.tag}.sock"
    config = Path(f"/tmp/bench-{lab.tag}.toml")
    log = Path(f"/tmp/bench-{lab.tag}.log")
    lab.files += [config, log, Path(sock)]
    config.write_text(f'[switch]\nname = "bench"\n[control]\nsocket = "{sock}"\n'
                      + "".join(ports))
    with log.open("wb") as out:
        proc = lab.spawn([vswitch_bin(), "run", str(config)], stdout=out, stderr=out)
    setup = Setup(a, b, (devs[0], devs[1]), proc, sock, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"vswitch exited ({proc.returncode}): {log_tail(setup)}")
        rows = show_ports(sock, check=False)
        return rows is not None and len(rows) == 2 and all(r["state"] == "up" for r in rows)

    wait_for(ready, 20, "vswitch ports up", interval=0.2)
    if not attach:  # internal ports: the interfaces exist once vswitch has made them
        lab.addr(a, devs[0], f"{IP_A}/24")
        lab.addr(b, devs[1], f"{IP_B}/24")
    return setup


def build_traced(lab: Lab, filter_text: str) -> Setup:
    """vswitch with a `vswitch trace FILTER` client attached for the whole run: with a filter
    that matches none of the measured traffic it costs the watched closure and the filter per
    frame; with an empty filter every frame is explained and streamed too."""
    setup = build_vswitch(lab, attach=False)
    lab.spawn([vswitch_bin(), "trace", "--socket", setup.socket, *filter_text.split()],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # the session is armed once the daemon has read the request
    return setup


BUILDERS: dict[str, Callable[[Lab], Setup]] = {
    "kernel": build_kernel,
    "vswitch": lambda lab: build_vswitch(lab, attach=False),
    "vswitch-attach": lambda lab: build_vswitch(lab, attach=True),
    "vswitch-traced": lambda lab: build_traced(lab, "arp and host 192.0.2.99"),
    "vswitch-traced-all": lambda lab: build_traced(lab, ""),
}








# --- measurements ---------------------------------------------------------------------------









def link_drops(lab: Lab, ns: str, dev: str) -> dict[str, int]:
    done = lab.run(ns, ["ip", "-s", "-j", "link", "show", "dev", dev], timeout=10)
    stats = json.loads(done.stdout)[0]["stats64"]
    return {"rx_dropped": stats["rx"]["dropped"], "tx_dropped": stats["tx"]["dropped"]}


def measure(lab: Lab, setup: Setup, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    lab.spawn(["iperf3", "-s"], ns=setup.server_ns, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
    wait_for(lambda: lab.run(setup.client_ns, ["ping", "-c", "1", "-W", "1", IP_B],
                             check=False, timeout=5).returncode == 0, 15, "first ping")
    wait_for(lambda: ":5201" in lab.run(setup.server_ns, "ss -Hltn", timeout=5).stdout,
             10, "iperf3 server")
    r: dict[str, Any] = {}

    before = cpu_sample(setup)
    r["tcp_bps"] = iperf_tcp_bps(iperf(lab, setup, seconds))
    r["cpu_tcp_pct"] = cpu_percent(before, cpu_sample(setup))
    check_alive(setup, "TCP")
    say(f"tcp  {r['tcp_bps'] / 1e9:6.2f} Gbit/s" + cpu_note(r["cpu_tcp_pct"]))

    before = cpu_sample(setup)
    doc = iperf(lab, setup, seconds, "-u", "-l", "64", "-b", "0")
    r["udp_pps"] = iperf_udp_pps(doc)
    r["cpu_udp_pct"] = cpu_percent(before, cpu_sample(setup))
    r["udp_sent_pps"] = iperf_udp_sent_pps(doc)
    check_alive(setup, "UDP")
    say(f"udp  {r['udp_pps'] / 1e3:6.1f} kpkt/s delivered of {r['udp_sent_pps'] / 1e3:.1f} "
        "sent" + cpu_note(r["cpu_udp_pct"]))

    done = lab.run(setup.client_ns, ["ping", "-c", str(PING_COUNT), "-i", str(PING_INTERVAL),
                                     "-W", "1", "-w", "30", IP_B], check=False, timeout=40)
    rtts = ping_rtts_ms(done.stdout)
    if len(rtts) < PING_COUNT // 2:
        raise RuntimeError(f"ping: only {len(rtts)}/{PING_COUNT} replies")
    r["rtt_median_us"] = statistics.median(rtts) * 1000
    r["rtt_p99_us"] = percentile(rtts, 99) * 1000
    r["ping_lost"] = PING_COUNT - len(rtts)
    check_alive(setup, "ping")
    say(f"ping median {r['rtt_median_us']:.0f} µs, p99 {r['rtt_p99_us']:.0f} µs, "
        f"{r['ping_lost']} lost")

    # Where did lost packets go?  Guest interface drops, and the receiver's UDP socket.
    r["guest_links"] = {side: link_drops(lab, ns, dev) for side, ns, dev in
                        (("client", setup.client_ns, setup.devs[0]),
                         ("server", setup.server_ns, setup.devs[1]))}
    snmp = lab.run(setup.server_ns, ["cat", "/proc/net/snmp"], timeout=10).stdout
    r["server_udp_rcvbuf_errors"] = snmp_counter(snmp, "Udp", "RcvbufErrors")
    say("drops: " + ", ".join([f"{side} {k}={v}" for side, d in r["guest_links"].items()
                               for k, v in d.items() if v]
                              + [f"receiver UDP RcvbufErrors={r['server_udp_rcvbuf_errors']}"]))
    if setup.switch is not None:
        status = Path(f"/proc/{setup.switch.pid}/status").read_text()
        r["rss_peak_mib"] = vm_hwm_kib(status) / 1024
        rows = show_ports(setup.socket) or []
        r["ports"] = [{k: row.get(k) for k in ("name", "rx_frames", "tx_frames", "drops")}
                      for row in rows]
        drops = {f"{row['name']}.{k}": v for row in rows for k, v in row["drops"].items() if v}
        say(f"rss  {r['rss_peak_mib']:.1f} MiB; port drops: "
            + (", ".join(f"{k}={v}" for k, v in drops.items()) or "none"))
    return r




# --- summary and reports --------------------------------------------------------------------

def compare(med: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per vswitch variant and metric: ratio (or difference) against the kernel, and the verdict."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    kernel = med.get("kernel", {})
    for v, m in med.items():
        if v == "kernel":
            continue
        out[v] = {}
        for key, (_, _, _, kind, target) in METRICS.items():
            if key not in m or key not in kernel:
                continue
            value = m[key] / kernel[key] if kind == "ratio" else m[key] - kernel[key]
            met = None if target is None else (value >= target if kind == "ratio"
                                               else value <= target)
            out[v][key] = {"kind": kind, "value": value, "target": target, "met": met}
    return out




def fmt(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    scale = METRICS[key][1] if key in METRICS else 1
    return f"{value / scale:.2f}" if key == "tcp_bps" else f"{value / scale:.1f}"


def fmt_cmp(c: dict[str, Any] | None) -> tuple[str, str, str]:
    if c is None:
        return "—", "—", "—"
    if c["kind"] == "ratio":
        value, target = f"{c['value']:.2f}x", f">= {c['target']}x"
    else:
        value = f"{c['value']:+.0f} µs"
        target = "—" if c["target"] is None else f"<= kernel + {c['target']:.0f} µs"
    met = "—" if c["met"] is None else ("yes" if c["met"] else "**no**")
    return value, target, met


def markdown(report: dict[str, Any]) -> str:
    med, cmp_ = report["medians"], report["comparison"]
    kernel = med.get("kernel", {})
    lines = [f"# vswitch vs kernel bridge ({report['date']})", "",
             f"Medians of {report['rounds_requested']} alternating rounds, "
             f"{report['seconds']:g} s per iperf3 test, {PING_COUNT} pings at "
             f"{PING_INTERVAL * 1000:g} ms. Machine: {report['machine']['cpus']} × "
             f"{report['machine']['cpu']}, Linux {report['machine']['kernel']}, "
             f"bridge-nf-call-iptables={report['machine']['bridge_nf_call_iptables']}. "
             "Only the ratios mean anything on this shared machine.", ""]
    for v in (v for v in report["variants"] if v != "kernel"):
        lines += [f"## {v}", "", f"| metric | kernel bridge | {v} | ratio | target | met? |",
                  "|---|---:|---:|---:|---|---|"]
        for key, (label, _, unit, _, _) in METRICS.items():
            ratio, target, met = fmt_cmp(cmp_.get(v, {}).get(key))
            lines.append(f"| {label} ({unit}) | {fmt(key, kernel.get(key))} | "
                         f"{fmt(key, med.get(v, {}).get(key))} | {ratio} | {target} | {met} |")
        for key, (label, unit) in RESOURCES.items():
            lines.append(f"| {label} ({unit}) | — | {fmt(key, med.get(v, {}).get(key))} "
                         "| — | — | — |")
        lines.append("")
    lines += ["## Rounds", "", "| round | variant | TCP Gbit/s | UDP kpkt/s delivered / sent | "
              "RTT median µs | RTT p99 µs | vswitch CPU TCP/UDP % |", "|---|---|---:|---:|---:|"
              "---:|---:|"]

    def row(r: dict[str, Any]) -> str:
        cpu = ("—" if r.get("cpu_tcp_pct") is None
               else f"{r['cpu_tcp_pct']:.0f} / {r['cpu_udp_pct']:.0f}")
        return (f"{r['tcp_bps'] / 1e9:.2f} | "
                f"{r['udp_pps'] / 1e3:.1f} / {r['udp_sent_pps'] / 1e3:.1f} | "
                f"{r['rtt_median_us']:.0f} | {r['rtt_p99_us']:.0f} | {cpu} |")

    lines += round_rows(report, 5, row)
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med, variants = report["medians"], report["variants"]
    kernel = med.get("kernel", {})
    keys = [k for k in METRICS if k in kernel]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.8 / len(variants)
    ratio_bars(ax, report, variants, keys, kernel, width)
    for j, k in enumerate(keys):
        kind, target = METRICS[k][3], METRICS[k][4]
        if target is None:
            continue
        level = target if kind == "ratio" else (kernel[k] + target) / kernel[k]
        ax.hlines(level, j - 0.45, j + 0.45, colors="red", linestyles="--",
                  label="target" if j == 0 else "_nolegend_")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")  # RTT ratios against a few-µs kernel dwarf the throughput ratios
    ax.set_xticks(range(len(keys)),
                  [f"{METRICS[k][0]}\n({'higher' if METRICS[k][3] == 'ratio' else 'lower'}"
                   " is better)" for k in keys], fontsize=9)
    ax.set_ylabel("relative to the kernel bridge (= 1.0), log scale")
    ax.set_title(f"vswitch vs kernel bridge, median of {len(report['rounds'])} rounds "
                 f"({report['date'][:10]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--variants", default="kernel,vswitch,vswitch-attach",
                    help="comma-separated subset of " + ", ".join(VARIANTS))
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if os.geteuid() != 0:
        print("bench.bridge needs root (namespaces, TAP, veth)", file=sys.stderr)
        return 2
    if "kernel" not in variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants must include kernel and only name {', '.join(VARIANTS)}")
    signal.signal(signal.SIGTERM, interrupt)  # clean up on kill as on Ctrl-C

    start = time.monotonic()
    report = new_report("bench.bridge", sys.argv[1:], machine_info(), args.rounds,
                        args.seconds, variants=variants)
    return run_and_save(report, variants,
                        lambda v, lab, say: measure(lab, BUILDERS[v](lab), args.seconds, say),
                        start, "bench", (*METRICS, *RESOURCES), compare, args.out,
                        "bridge", markdown, plot)


if __name__ == "__main__":
    sys.exit(main())
