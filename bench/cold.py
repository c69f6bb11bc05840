"""How much slower vswitch's own Python runs after a pause: the part of round-trip time no I/O
change can remove.

    .venv/bin/python -m bench.cold [--samples 300] [--out bench/results]

The work is real datapath code, in-process and without I/O: one echo request to the gateway
through ``Switch.receive`` and ``Gateway.handle`` (the path of a ping to the gateway, less its
two syscalls).  It is timed back to back, then after gaps of 0.5, 2 and 10 ms, once with the
process asleep in the gap (as vswitch waits in epoll between pings) and once spinning on the
CPU (so the CPU never idles).  A ratio well above 1 after a spinning gap means the caches and
TLBs were emptied by something other than this process: the machine, not the code.  Ping
benchmarks send every 5-10 ms, so every packet meets that state.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from nat.gateway import Gateway
from vswitch.fdb import ForwardingTable
from vswitch.switch import Switch
from wire.packets import ETH_P_IP, PROTO_ICMP, encode_ethernet, encode_icmp, encode_ipv4
from wire.vnet import NO_OFFLOAD

GW_MAC, GUEST_MAC = bytes.fromhex("525400000001"), bytes.fromhex("525400000002")
GW_IP, GUEST_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
GAPS_MS = (0.5, 2.0, 10.0)


def gateway_ping() -> Callable[[], None]:
    """One echo request through the switch and the gateway, as a closure to time."""
    switch = Switch(ForwardingTable())
    for port in (1, 2):
        switch.add_port(port)
    gateway = Gateway(GW_MAC, GW_IP, 24)
    switch.receive(NO_OFFLOAD + encode_ethernet(GW_MAC, GW_MAC, ETH_P_IP, bytes(46)), 2, 0.0)
    seq = [0]

    def once() -> None:
        seq[0] = (seq[0] + 1) & 0xFFFF
        icmp = encode_icmp(8, 0, seq[0].to_bytes(2, "big") * 2 + bytes(56))
        frame = encode_ethernet(GW_MAC, GUEST_MAC, ETH_P_IP,
                                encode_ipv4(GUEST_IP, GW_IP, PROTO_ICMP, icmp))
        (out,) = switch.receive(NO_OFFLOAD + frame, 1, 1.0)
        assert out == 2
        (reply,) = gateway.handle(frame, 1.0)
        switch.receive(NO_OFFLOAD + reply, 2, 1.0)

    return once


def timed(work: Callable[[], None], samples: int, gap: float, spin: bool) -> float:
    """Median µs of ``work`` after each gap of ``gap`` seconds."""
    out = []
    for _ in range(samples):
        if spin:
            end = time.perf_counter() + gap
            while time.perf_counter() < end:
                pass
        elif gap:
            time.sleep(gap)
        start = time.perf_counter_ns()
        work()
        out.append(time.perf_counter_ns() - start)
    return statistics.median(out) / 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args(argv)
    work = gateway_ping()
    timed(work, 200, 0.0, False)  # warm up
    warm = timed(work, args.samples, 0.0, False)
    rows = [{"gap_ms": 0.0, "asleep_us": warm, "spinning_us": warm}]
    for gap in GAPS_MS:
        rows.append({"gap_ms": gap, "asleep_us": timed(work, args.samples, gap / 1000, False),
                     "spinning_us": timed(work, args.samples, gap / 1000, True)})
    lines = ["| gap before each ping (ms) | asleep in the gap (µs) | ratio | spinning (µs) | "
             "ratio |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['gap_ms']:g} | {r['asleep_us']:.1f} | {r['asleep_us'] / warm:.1f}x"
                     f" | {r['spinning_us']:.1f} | {r['spinning_us'] / warm:.1f}x |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold.json").write_text(json.dumps({"samples": args.samples, "rows": rows},
                                                   indent=1) + "\n")
    (args.out / "cold.md").write_text("# One gateway ping's Python, after a pause\n\n"
                                      + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
