"""``vswitch top``: a live view of a running switch, like ``top``, read from its control socket.

A client only: every ``interval`` seconds it asks the daemon for ``show switch``, ``ports``,
``fdb``, ``conntrack``, ``leases`` and ``forwards`` and redraws one screen with rich.  The
daemon never imports this module (rich stays out of the switch's process).

Two halves:

- the model, pure: ``compute(previous, current, elapsed)`` turns two ``Snapshot``s and the
  seconds between them into a ``Frame`` of rows with rates.  Ports are keyed by name, flows by
  (protocol, original tuple); a row with nothing to compare against (the first poll, a new
  port or flow, a counter that went backwards because the daemon or port restarted) has no
  rate and shows "-".
- the rendering: ``render(frame)`` is a rich renderable that lays the sections out in the
  console's height; a section that does not fit ends in "+N more".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vswitch.control import ControlError, request

#: The views one poll reads, in the order they are asked for.
VIEWS = ("switch", "ports", "fdb", "conntrack", "leases", "forwards")

Row = dict[str, Any]


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the daemon showed at one poll (the ``show --json`` results, unchanged)."""

    at: float
    """Wall-clock time of the poll (for the header)."""
    switch: Row = field(default_factory=dict)
    ports: list[Row] = field(default_factory=list)
    fdb: list[Row] = field(default_factory=list)
    conntrack: list[Row] = field(default_factory=list)
    leases: list[Row] = field(default_factory=list)
    forwards: list[Row] = field(default_factory=list)


def poll(path: str, timeout: float = 2.0) -> Snapshot:
    """One snapshot from the daemon on ``path``; any failure to get it is a ControlError."""
    try:
        views = {what: request(path, "show", timeout, what=what) for what in VIEWS}
    except (OSError, ValueError) as exc:  # timeouts, resets, a reply cut short
        raise ControlError(f"{path}: {exc or type(exc).__name__}") from exc
    return Snapshot(time.time(), **views)


@dataclass(frozen=True)
class PortRow:
    name: str
    kind: str
    up: bool
    macs: int
    rx_fps: float | None
    rx_bps: float | None
    tx_fps: float | None
    tx_bps: float | None
    drops: int
    """All drops counted on the port, every reason."""
    new_drops: int
    """Drops since the previous poll."""


@dataclass(frozen=True)
class FlowRow:
    proto: str
    state: str
    original: str
    reply: str
    packets: tuple[int, int]
    """(original direction, reply direction), as ``show conntrack``."""
    bytes: tuple[int, int]
    pps: tuple[float, float] | None
    bps: tuple[float, float] | None
    seconds_left: int

    @property
    def key(self) -> tuple[str, str]:
        return self.proto, self.original


@dataclass(frozen=True)
class Frame:
    """One screen's worth of rows; rates are per second over ``elapsed``."""

    name: str
    at: float
    elapsed: float | None
    ports: list[PortRow]
    flows: list[FlowRow]
    fdb: list[Row]
    leases: list[Row]
    forwards: list[Row]

    def total(self, attr: str) -> float | None:
        """A rate summed over the ports that have one (None when none has)."""
        rates = [r for p in self.ports if (r := getattr(p, attr)) is not None]
        return sum(rates) if rates else None


def rate(before: int | None, now: int, elapsed: float | None) -> float | None:
    """Per-second change of a counter; None without a previous value or when it went back."""
    if before is None or elapsed is None or elapsed <= 0 or now < before:
        return None
    return (now - before) / elapsed


def _drops(row: Row) -> int:
    return sum(int(v) for v in row.get("drops", {}).values())


def _pair(value: Any) -> tuple[int, int]:
    first, second = (list(value) + [0, 0])[:2]
    return int(first), int(second)


def _port_row(now: Row, before: Row | None, elapsed: float | None) -> PortRow:
    def per_second(counter: str, scale: int = 1) -> float | None:
        r = rate(None if before is None else int(before[counter]), int(now[counter]), elapsed)
        return None if r is None else r * scale

    drops = _drops(now)
    return PortRow(str(now["name"]), str(now.get("type", "")), now.get("state") == "up",
                   int(now.get("macs", 0)), per_second("rx_frames"), per_second("rx_bytes", 8),
                   per_second("tx_frames"), per_second("tx_bytes", 8), drops,
                   max(0, drops - _drops(before)) if before is not None else 0)


def _flow_row(now: Row, before: FlowRow | None, elapsed: float | None) -> FlowRow:
    packets, octets = _pair(now["packets"]), _pair(now["bytes"])
    pps = bps = None
    if before is not None:
        p = [rate(b, n, elapsed) for b, n in zip(before.packets, packets, strict=True)]
        o = [rate(b, n, elapsed) for b, n in zip(before.bytes, octets, strict=True)]
        if None not in p and None not in o:
            pps = (p[0] or 0.0, p[1] or 0.0)
            bps = ((o[0] or 0.0) * 8, (o[1] or 0.0) * 8)
    return FlowRow(str(now["proto"]), str(now.get("state", "")), str(now["original"]),
                   str(now.get("reply", "")), packets, octets, pps, bps,
                   int(now.get("seconds_left", 0)))


def compute(previous: Snapshot | None, current: Snapshot, elapsed: float | None) -> Frame:
    """The rows of ``current`` with rates against ``previous``, taken ``elapsed`` s before."""
    if previous is None:
        elapsed = None
    old_ports = {str(r["name"]): r for r in previous.ports} if previous else {}
    ports = [_port_row(r, old_ports.get(str(r["name"])), elapsed) for r in current.ports]
    old_flows: dict[tuple[str, str], FlowRow] = {}
    if previous is not None:
        for r in previous.conntrack:
            row = _flow_row(r, None, None)
            old_flows[row.key] = row
    flows = [_flow_row(r, old_flows.get((str(r["proto"]), str(r["original"]))), elapsed)
             for r in current.conntrack]
    # busiest first: the flows moving now, then the ones that moved most in all
    flows.sort(key=lambda f: (-sum(f.bps or (0.0, 0.0)), -sum(f.bytes), f.original))
    fdb = sorted(current.fdb, key=lambda r: (r.get("port_id", 0), str(r.get("mac"))))
    leases = sorted(current.leases, key=lambda r: _ip_key(str(r.get("ip", ""))))
    name = str(current.switch.get("name", "?"))
    return Frame(name, current.at, elapsed, ports, flows, fdb, leases, list(current.forwards))


def _ip_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in ip.split("."))
    except ValueError:
        return (1 << 16,)


# -- the rendering ------------------------------------------------------------------------------


def si(value: float | None) -> str:
    """``12.3k``: a rate in at most five characters; "-" when there is none."""
    if value is None:
        return "-"
    unit = ""
    for prefix in ("k", "M", "G", "T"):
        if abs(value) < 999.5:
            break
        value, unit = value / 1000, prefix
    if unit == "" or value >= 99.95:
        return f"{value:.0f}{unit}"
    return f"{value:.1f}{unit}"


def _pair_text(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{si(pair[0])}/{si(pair[1])}"


@dataclass
class Section:
    title: str
    columns: Sequence[tuple[str, dict[str, Any]]]
    rows: list[list[Text | str]]
    empty: str = "none"

    def wants(self) -> int:
        """Lines it takes whole: a title, then a header and the rows (or the title alone)."""
        return 2 + len(self.rows) if self.rows else 1

    def table(self, lines: int) -> RenderableType:
        """Itself in ``lines`` lines (at least its title); "+N more" when rows are left out."""
        if not self.rows:
            return Text.assemble((self.title, "bold"), f": {self.empty}", no_wrap=True)
        title = Text.assemble((self.title, "bold"), f" ({len(self.rows)})", no_wrap=True)
        room = max(0, lines - 2)
        if room >= len(self.rows):
            shown, more = self.rows, 0
        else:  # the last line says how many did not fit
            shown, more = self.rows[:max(0, room - 1)], len(self.rows) - max(0, room - 1)
        table = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False,
                      header_style="bold reverse", expand=False)
        for name, kw in self.columns:
            table.add_column(name, no_wrap=True, **kw)
        for row in shown:
            table.add_row(*row)
        parts: list[RenderableType] = [title, table]
        if more:
            parts.append(Text(f"+{more} more", style="dim", no_wrap=True))
        return Group(*parts)


def allot(wants: Sequence[int], budget: int) -> list[int]:
    """Lines for each section: every one gets its title, then header and one row, then the
    rest goes round in order, one line at a time, to those that want more."""
    given = [min(w, 1) for w in wants]
    budget -= sum(given)
    for i, w in enumerate(wants):  # the header and a first line
        extra = min(w - given[i], 2, max(0, budget))
        given[i] += extra
        budget -= extra
    while budget > 0:
        hungry = [i for i, w in enumerate(wants) if given[i] < w]
        if not hungry:
            break
        for i in hungry[:budget]:
            given[i] += 1
        budget -= min(len(hungry), budget)
    return given


RIGHT: dict[str, Any] = {"justify": "right"}
TEXT: dict[str, Any] = {"overflow": "ellipsis"}
NAME: dict[str, Any] = {"overflow": "ellipsis", "max_width": 16}


def sections(frame: Frame) -> list[Section]:
    """The screen's sections, most important first."""
    ports: list[list[Text | str]] = []
    for p in frame.ports:
        drops = Text(str(p.drops))
        if p.new_drops:
            drops.append(f" +{p.new_drops}", style="bold red")
        style = "" if p.up else "dim"
        ports.append([Text(p.name, style=style), Text(p.kind, style=style),
                      Text("up" if p.up else "down", style="green" if p.up else "red"),
                      str(p.macs), si(p.rx_fps), si(p.rx_bps), si(p.tx_fps), si(p.tx_bps),
                      drops])
    flows: list[list[Text | str]] = [
        [f.proto, f.state, f.original, _pair_text(f.pps), _pair_text(f.bps)]
        for f in frame.flows]
    fdb: list[list[Text | str]] = [
        [str(r.get("mac", "")), str(r.get("port", "")), f"{float(r.get('ageing', 0)):.0f}"]
        for r in frame.fdb]
    leases: list[list[Text | str]] = [
        [str(r.get("ip", "")), str(r.get("mac", "")), str(r.get("hostname") or "-"),
         str(r.get("state", "")), str(r.get("expires_in", ""))] for r in frame.leases]
    forwards: list[list[Text | str]] = [
        [str(r.get("proto", "")), str(r.get("listen", "uplink")), str(r.get("port", "")),
         str(r.get("to", ""))] for r in frame.forwards]
    return [
        Section("Ports", [("PORT", NAME), ("TYPE", TEXT), ("STATE", {}), ("MACS", RIGHT),
                          ("RX fr/s", RIGHT), ("RX bit/s", RIGHT), ("TX fr/s", RIGHT),
                          ("TX bit/s", RIGHT), ("DROPS", RIGHT)], ports),
        Section("Flows", [("PROTO", {}), ("STATE", TEXT), ("ORIGINAL", TEXT),
                          ("PKT/s o/r", RIGHT), ("BIT/s o/r", RIGHT)], flows),
        Section("MAC table", [("MAC", {}), ("PORT", NAME), ("AGEING s", RIGHT)], fdb,
                empty="empty"),
        Section("DHCP leases", [("IP", {}), ("MAC", {}), ("HOSTNAME", TEXT), ("STATE", TEXT),
                                ("EXPIRES s", RIGHT)], leases),
        Section("Forwards", [("PROTO", {}), ("LISTEN", TEXT), ("PORT", {}), ("TO", TEXT)],
                forwards),
    ]


def header(frame: Frame) -> Text:
    """One line: the switch, the poll's time, then totals over the whole switch."""
    up = sum(p.up for p in frame.ports)
    clock = time.strftime("%H:%M:%S", time.localtime(frame.at))
    drops = sum(p.drops for p in frame.ports)
    bps = frame.total("rx_bps")
    return Text.assemble(
        (frame.name, "bold cyan"), f" {clock}",
        f"  up {up}/{len(frame.ports)}",
        f"  rx {si(bps)}b/s {si(frame.total('rx_fps'))}fr/s" if bps is not None else "  rx -",
        f"  macs {len(frame.fdb)} flows {len(frame.flows)} leases {len(frame.leases)}",
        (f" drops {drops}", "bold red" if any(p.new_drops for p in frame.ports) else ""),
        no_wrap=True, overflow="ellipsis")


@dataclass(frozen=True)
class Screen:
    """A frame laid out in the height it is given (the terminal's, or the console's)."""

    frame: Frame

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.height
        parts = sections(self.frame)
        lines = allot([s.wants() for s in parts], max(0, height - 1))
        yield header(self.frame)
        for section, n in zip(parts, lines, strict=True):
            if n:
                yield section.table(n)


def render(frame: Frame) -> RenderableType:
    return Screen(frame)


def disconnected(path: str, error: Exception, interval: float, since: float | None) -> Text:
    """The screen while there is no daemon to read: say so, and keep trying."""
    last = ("never reached" if since is None
            else "last reached " + time.strftime("%H:%M:%S", time.localtime(since)))
    return Text.assemble(("vswitch top", "bold"), f"  {path}\n\n",
                         ("disconnected, retrying", "bold red"),
                         f" every {interval:g}s ({last})\n{error}")


# -- the loop -----------------------------------------------------------------------------------


def watch(path: str, interval: float, show: Callable[[RenderableType], None],
          polls: int | None = None, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll and ``show`` a screen every ``interval`` seconds (``polls`` times, or forever)."""
    previous: Snapshot | None = None
    taken = 0.0
    reached: float | None = None
    tick = clock()
    count = 0
    while polls is None or count < polls:
        count += 1
        now = clock()
        try:
            snapshot = poll(path, timeout=max(1.0, min(interval, 5.0)))
        except ControlError as exc:
            previous = None  # counters may start again from zero: no rate across the gap
            show(disconnected(path, exc, interval, reached))
        else:
            show(render(compute(previous, snapshot, now - taken)))
            previous, taken, reached = snapshot, now, snapshot.at
        tick += interval
        if polls is not None and count >= polls:
            break
        sleep(max(0.0, tick - clock()))
        tick = max(tick, clock() - interval)  # after a slow poll, do not catch up in a burst


def top(path: str, interval: float = 1.0, once: bool = False,
        console: Console | None = None) -> int:
    """``vswitch top``; ``once``: print one frame (two polls, ``interval`` apart) and return.
    Ctrl-C ends it with status 0; a daemon that cannot be reached with ``once`` raises
    ControlError (the CLI prints it)."""
    console = console or Console()
    try:
        if once:
            start = time.monotonic()
            first = poll(path)
            time.sleep(max(0.0, start + interval - time.monotonic()))
            again = time.monotonic()
            second = poll(path)
            console.print(render(compute(first, second, again - start)))
            return 0
        with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            watch(path, interval, lambda screen: live.update(screen, refresh=True))
    except KeyboardInterrupt:
        pass
    return 0

