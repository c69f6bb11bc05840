"""The teaching displays of ``vswitch trace``, ``vswitch capture`` and ``vswitch explain``, on
the client side: scapy describes the frames the daemon streams (the daemon itself never
imports scapy), and reads the frames a user writes as scapy expressions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from wire.pcap import PcapngWriter, PcapWriter


def describe(frame: bytes) -> str:
    """One line for a frame, as scapy summarises it (``Ether / IP / TCP 10.0.0.5:40000 > ...``)."""
    import scapy.layers.inet  # noqa: F401 - binds IP, TCP, UDP, ICMP under Ether
    import scapy.layers.inet6  # noqa: F401 - and IPv6
    from scapy.layers.l2 import Ether

    try:
        return str(Ether(frame).summary())
    except Exception as exc:  # scapy on garbage: say so, never stop the trace
        return f"{len(frame)} bytes scapy cannot read ({exc})"


def clock(t: float, start: float) -> str:
    return f"{t - start:9.6f}"


def trace_lines(records: Iterable[dict[str, Any]], as_json: bool,
                count: int | None) -> Iterator[str]:
    """``vswitch trace``'s output: a line per frame and one per decision, or one JSON object
    per decision."""
    start: float | None = None
    seen = 0
    for record in records:
        if "dropped" in record:
            yield (json.dumps(record) if as_json
                   else f"vswitch: {record['dropped']} records dropped (this reader is slow)")
            continue
        start = record["t"] if start is None else start
        frame = bytes.fromhex(record["frame"])
        summary = describe(frame)
        if as_json:
            for where, text, rule in record["decisions"]:
                yield json.dumps({"time": record["t"], "port": record["port"], "where": where,
                                  "decision": text, "rule": rule, "frame": summary})
        else:
            yield f"{clock(record['t'], start)} {record['port']}: {summary}"
            for where, text, rule in record["decisions"]:
                yield f"{'':9} {where:>9}  {text}  [{rule}]"
        seen += 1
        if count is not None and seen >= count:
            return


def write_capture(records: Iterable[dict[str, Any]], out: IO[bytes] | None, pcap: bool,
                  count: int | None, summary: IO[str]) -> int:
    """``vswitch capture``: pcapng (an interface per point, a comment per packet naming the
    point and direction), classic pcap, or with no file one line per frame; returns how
    many frames were written.  Each block is flushed at once, so ``-w -`` streams."""
    writer: PcapngWriter | PcapWriter | None = None
    interfaces: dict[str, int] = {}
    written = 0
    start: float | None = None
    for record in records:
        if "dropped" in record:
            print(f"vswitch: {record['dropped']} frames dropped (this capture is slow)",
                  file=sys.stderr)
            continue
        frame = bytes.fromhex(record["frame"])
        point, direction = record["point"], record["dir"]
        wall = record["t"]
        if out is None:
            start = record["t"] if start is None else start
            print(f"{clock(record['t'], start)} {point} {direction}: {describe(frame)}",
                  file=summary, flush=True)
        elif pcap:
            if writer is None:
                writer = PcapWriter(out)
            assert isinstance(writer, PcapWriter)
            writer.write(wall, frame)
        else:
            if writer is None:
                writer = PcapngWriter(out)
            assert isinstance(writer, PcapngWriter)
            if point not in interfaces:
                interfaces[point] = writer.add_interface(point, f"vswitch capture point {point}")
            writer.write(interfaces[point], wall, frame, f"{point} {direction}")
        if out is not None:
            out.flush()
        written += 1
        if count is not None and written >= count:
            break
    return written


def parse_frames(expression: str) -> list[bytes]:
    """Frames from a scapy expression (``Ether(...)/IP(...)/TCP(...)``) or hex digits."""
    text = expression.strip()
    try:
        return [bytes.fromhex(text.replace(":", "").replace(" ", ""))]
    except ValueError:
        pass
    import scapy.all as scapy

    namespace = {name: getattr(scapy, name) for name in dir(scapy) if not name.startswith("_")}
    try:
        packet = eval(text, {"__builtins__": {}}, namespace)  # the user's own expression
    except Exception as exc:
        raise ValueError(f"FRAME {text!r} is neither hex nor a scapy expression: {exc}") \
            from None
    if not isinstance(packet, scapy.Packet):
        raise ValueError(f"FRAME {text!r} is not a packet")
    if not isinstance(packet, scapy.Ether):
        packet = scapy.Ether() / packet
    return [bytes(packet)]


def read_pcap_frames(path: str) -> list[bytes]:
    """The frames of a pcap or pcapng file (``vswitch explain --pcap``)."""
    from scapy.utils import rdpcap

    return [bytes(p) for p in rdpcap(path)]
