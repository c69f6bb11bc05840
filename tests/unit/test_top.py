"""``vswitch top``: rates from two hand-made snapshots, the screen they render to at 80x24, the
poll loop against a missing daemon, and rich staying out of the daemon's imports."""

from __future__ import annotations

import ast
import io
from pathlib import Path

from rich.console import Console

from vswitch.top import Frame, Snapshot, allot, compute, render, si, watch

REPO = Path(__file__).resolve().parents[2]


def port(name: str, rx: tuple[int, int], tx: tuple[int, int], state: str = "up",
         drops: dict[str, int] | None = None, macs: int = 1) -> dict:
    return {"id": 0, "name": name, "type": "stream", "state": state, "mtu": 1500,
            "rx_frames": rx[0], "rx_bytes": rx[1], "tx_frames": tx[0], "tx_bytes": tx[1],
            "drops": drops or {}, "macs": macs, "mac_limit": None, "detail": ""}


def flow(original: str, packets: list[int], octets: list[int], proto: str = "tcp") -> dict:
    return {"proto": proto, "kind": "host", "state": "established", "original": original,
            "reply": "203.0.113.9:443 -> 192.0.2.1:40000", "seconds_left": 7440,
            "packets": packets, "bytes": octets}


A_TO_WEB = "10.0.0.10:40000 -> 203.0.113.9:443"
A_TO_DNS = "10.0.0.10:5353 -> 203.0.113.53:53"

BEFORE = Snapshot(
    at=1_700_000_000.0, switch={"name": "vsw0"},
    ports=[port("gateway", (100, 10_000), (50, 5_000)),
           port("vm1", (1_000, 1_000_000), (2_000, 3_000_000), drops={"tx-full": 2}),
           port("gone", (5, 500), (5, 500))],
    conntrack=[flow(A_TO_WEB, [10, 20], [1_000, 20_000]),
               flow(A_TO_DNS, [1, 1], [60, 120], proto="udp")])

AFTER = Snapshot(
    at=1_700_000_002.0, switch={"name": "vsw0"},
    ports=[port("gateway", (300, 30_000), (50, 5_000)),
           port("vm1", (1_400, 1_500_000), (2_100, 3_250_000),
                drops={"tx-full": 5, "rx-framing": 1}),
           port("new", (9, 900), (0, 0), state="down")],
    fdb=[{"mac": "52:54:00:00:00:0b", "port": "vm1", "port_id": 1, "ageing": 299.6},
         {"mac": "52:54:00:00:00:01", "port": "gateway", "port_id": 0, "ageing": 120.2}],
    conntrack=[flow(A_TO_DNS, [1, 1], [60, 120], proto="udp"),
               flow(A_TO_WEB, [30, 60], [3_000, 420_000]),
               flow("10.0.0.11:1 -> 198.51.100.1:80", [1, 0], [60, 0])],
    leases=[{"ip": "10.0.0.10", "mac": "52:54:00:00:00:0b", "hostname": "vm1",
             "state": "bound", "expires_in": 3500, "expires": 0, "prefix": 24,
             "client_id": ""}],
    forwards=[{"proto": "tcp", "port": "2222", "listen": "0.0.0.0", "to": "10.0.0.10:22"}])


def screen(frame: Frame, width: int = 80, height: int = 24) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, height=height, color_system=None,
            legacy_windows=False).print(render(frame))
    return out.getvalue().splitlines()


def test_port_rates_are_deltas_over_the_elapsed_time():
    frame = compute(BEFORE, AFTER, 2.0)
    ports = {p.name: p for p in frame.ports}
    assert [p.name for p in frame.ports] == ["gateway", "vm1", "new"], "the daemon's order"
    vm1 = ports["vm1"]
    assert (vm1.rx_fps, vm1.rx_bps) == (200.0, 2_000_000.0)  # 400 frames, 500 kB in 2 s
    assert (vm1.tx_fps, vm1.tx_bps) == (50.0, 1_000_000.0)
    assert (vm1.drops, vm1.new_drops) == (6, 4)
    assert ports["gateway"].tx_fps == 0.0 and ports["gateway"].rx_fps == 100.0
    new = ports["new"]
    assert (new.rx_fps, new.rx_bps, new.up) == (None, None, False), "nothing to compare with"
    assert frame.total("rx_fps") == 300.0 and frame.total("tx_bps") == 1_000_000.0


def test_flow_rates_are_keyed_by_the_original_tuple_busiest_first():
    frame = compute(BEFORE, AFTER, 2.0)
    web, dns, new = frame.flows
    assert web.original == A_TO_WEB and web.pps == (10.0, 20.0)
    assert web.bps == (8_000.0, 1_600_000.0)  # 2 kB and 400 kB in 2 s, in bits
    assert (dns.proto, dns.pps, dns.bps) == ("udp", (0.0, 0.0), (0.0, 0.0))
    assert new.pps is None and new.bps is None


def test_first_poll_and_counters_that_went_back_have_no_rate():
    first = compute(None, AFTER, 5.0)
    assert first.elapsed is None and all(p.rx_fps is None for p in first.ports)
    assert all(f.bps is None for f in first.flows)
    restarted = compute(AFTER, BEFORE, 1.0)  # the daemon restarted: counters from zero
    vm1 = next(p for p in restarted.ports if p.name == "vm1")
    assert vm1.rx_fps is None and vm1.new_drops == 0
    web = next(f for f in restarted.flows if f.original == A_TO_WEB)
    assert web.bps is None
    assert compute(BEFORE, AFTER, 0.0).ports[1].rx_fps is None


def test_si_is_short():
    assert [si(None), si(0), si(999), si(1_000), si(12_345), si(999_999), si(2.5e9)] == \
        ["-", "0", "999", "1.0k", "12.3k", "1.0M", "2.5G"]


def test_screen_at_80x24_shows_every_section():
    lines = screen(compute(BEFORE, AFTER, 2.0))
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80, text
    assert lines[0].startswith("vsw0 ") and "up 2/3" in lines[0], lines[0]
    assert "rx 2.1Mb/s 300fr/s" in lines[0] and lines[0].endswith("drops 6"), lines[0]
    vm1 = next(line for line in lines if line.startswith("vm1 ")).split()
    assert vm1 == ["vm1", "stream", "up", "1", "200", "2.0M", "50", "1.0M", "6", "+4"]
    assert next(line for line in lines if line.startswith("new ")).split()[4:6] == ["-", "-"]
    web = next(line for line in lines if "203.0.113.9:443" in line).split()
    assert web[:2] == ["tcp", "established"] and web[-2:] == ["10/20", "8.0k/1.6M"]
    assert any(line.split() == ["52:54:00:00:00:0b", "vm1", "300"] for line in lines), text
    assert any(line.split()[:3] == ["10.0.0.10", "52:54:00:00:00:0b", "vm1"] for line in lines)
    assert any(line.split() == ["tcp", "0.0.0.0", "2222", "10.0.0.10:22"] for line in lines)
    for title in ("Ports (3)", "Flows (3)", "MAC table (2)", "DHCP leases (1)",
                  "Forwards (1)"):
        assert title in lines, title


def test_long_tables_end_in_more_and_the_screen_keeps_its_height():
    many = Snapshot(at=0.0, switch={"name": "big"},
                    ports=[port(f"p{i}", (i, i), (i, i)) for i in range(40)],
                    fdb=[{"mac": f"52:54:00:00:01:{i:02x}", "port": "p1", "port_id": 1,
                          "ageing": 10} for i in range(100)],
                    conntrack=[flow(f"10.0.0.{i}:1 -> 192.0.2.1:80", [i, i], [i, i])
                               for i in range(60)])
    lines = screen(compute(None, many, 1.0))
    text = "\n".join(lines)
    assert len(lines) <= 24, text
    more = [line for line in lines if line.startswith("+")]
    assert len(more) == 3 and all(line.endswith(" more") for line in more), text
    shown_ports = sum(line.startswith("p") and line[1].isdigit() for line in lines)
    assert f"+{40 - shown_ports} more" in more, text
    assert "DHCP leases: none" in lines and "Forwards: none" in lines
    tall = screen(compute(None, many, 1.0), width=120, height=60)
    assert 24 < len(tall) <= 60


def test_allot_gives_every_section_a_look_then_shares():
    assert allot([5, 1, 10], 100) == [5, 1, 10]
    assert allot([12, 12, 12], 12) == [4, 4, 4]
    assert allot([40, 1, 1, 10], 20) == [9, 1, 1, 9]
    assert sum(allot([50, 50], 7)) == 7


def test_a_missing_daemon_is_shown_as_disconnected_not_raised(tmp_path):
    shown: list = []
    watch(str(tmp_path / "nobody.sock"), 0.1, shown.append, polls=2)
    assert len(shown) == 2
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(shown[-1])
    assert "disconnected, retrying" in out.getvalue()
    assert "nobody.sock" in out.getvalue()


def module_level_imports(path: Path) -> set[str]:
    """What a module imports when it is imported (not what its functions import later)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_rich_stays_out_of_the_daemon():
    """Only vswitch/top.py imports rich, and nothing imports vswitch.top when it is imported
    (the CLI does in its ``top`` verb): the daemon's process never loads rich."""
    for floor in ("wire", "nat", "dhcp", "vswitch"):
        for path in (REPO / floor).rglob("*.py"):
            if path == REPO / "vswitch/top.py":
                continue
            imports = module_level_imports(path)
            assert not {n for n in imports if n == "rich" or n.startswith("rich.")}, path
            assert "vswitch.top" not in imports, path
