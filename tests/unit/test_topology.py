"""``show topology``: joining the views into one structure, and its text, Graphviz and Mermaid
renderings (dot is run on the output when graphviz is installed; otherwise, and for Mermaid,
the structure is checked: every edge joins declared nodes, labels are quoted and escaped)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from vswitch import cli
from vswitch.topology import render_dot, render_mermaid, render_text, topology

GW_MAC = "52:54:00:aa:bb:cc"
PORTS = [
    {"name": "gateway", "type": "router", "state": "up"},
    {"name": "vm1", "type": "tap", "state": "up"},
    {"name": "vm2", "type": "stream", "state": "down"},
    {"name": "eth1", "type": "uplink", "state": "up"},
]
FDB = [
    {"mac": GW_MAC, "port": "gateway", "port_id": 0, "ageing": 300.0},
    {"mac": "52:54:00:00:00:01", "port": "vm1", "port_id": 1, "ageing": 300.0},
    {"mac": "52:54:00:00:00:02", "port": "vm1", "port_id": 1, "ageing": 12.0},
    {"mac": "52:54:00:00:00:03", "port": "vm2", "port_id": 2, "ageing": 100.0},
]
LEASES = [
    {"mac": "52:54:00:00:00:01", "ip": "10.0.0.50", "hostname": "", "state": "offered"},
    {"mac": "52:54:00:00:00:01", "ip": "10.0.0.10", "hostname": "web", "state": "bound"},
]
GATEWAY = {"ip": "10.0.0.1", "mac": GW_MAC, "subnet": "10.0.0.0/24", "mode": "nat"}
RAW = {"kind": "raw", "interface": "eth1", "address": "203.0.113.2/24",
       "next_hop": "203.0.113.1"}
FORWARDS = [{"proto": "tcp", "port": "8080", "to": "10.0.0.10:80"},
            {"proto": "udp", "port": "5000-5001", "to": "10.0.0.99:5000"}]


def sample(uplink=RAW, forwards=FORWARDS) -> dict:
    return topology("vsw0", PORTS, FDB, LEASES, [("10.0.0.20", "52:54:00:00:00:02")],
                    {"52:54:00:00:00:03": "db", "10.0.0.20": "cache"}, GATEWAY, uplink,
                    forwards)


def test_guests_join_the_mac_table_with_leases_arp_and_static_names():
    topo = sample()
    assert topo["switch"] == "vsw0" and topo["gateway"] == GATEWAY and topo["uplink"] == RAW
    assert [p["name"] for p in topo["ports"]] == ["vm1", "vm2"], "gateway and uplink apart"
    vm1, vm2 = topo["ports"]
    assert vm1["guests"] == [
        {"mac": "52:54:00:00:00:01", "ip": "10.0.0.10", "name": "web"},  # the bound lease
        {"mac": "52:54:00:00:00:02", "ip": "10.0.0.20", "name": "cache"},  # ARP, static name
    ]
    assert vm2 == {"name": "vm2", "type": "stream", "state": "down",
                   "guests": [{"mac": "52:54:00:00:00:03", "ip": None, "name": "db"}]}
    assert topo["forwards"][0] == {"proto": "tcp", "port": "8080", "listen": None,
                                   "to": "10.0.0.10:80"}
    json.dumps(topo)  # it crosses the control socket


def test_a_plain_switch_has_no_gateway_or_uplink():
    topo = topology("sw", PORTS[1:3], FDB[1:], [], [], {}, None, None, [])
    assert topo["gateway"] is None and topo["uplink"] is None
    assert [g["ip"] for g in topo["ports"][0]["guests"]] == [None, None]
    text = render_text(topo)
    assert "gateway" not in text and "uplink" not in text
    check_dot(render_dot(topo))
    check_mermaid(render_mermaid(topo))


def test_text_lists_each_port_with_its_guests():
    text = render_text(sample())
    assert text.splitlines()[0] == "switch vsw0"
    assert "gateway 10.0.0.1  52:54:00:aa:bb:cc  (10.0.0.0/24, mode nat)" in text
    assert "uplink: raw on eth1, 203.0.113.2/24, via 203.0.113.1" in text
    assert re.search(r"port vm1 .*\n +web +10\.0\.0\.10 +52:54:00:00:00:01\n +cache", text)
    assert "port vm2  (stream, down)" in text
    assert "forward tcp 8080 -> 10.0.0.10:80 (web)" in text
    host = render_text(sample({"kind": "host", "address": "10.0.0.1"}))
    assert "uplink: host sockets, the host is 10.0.0.1" in host


def check_dot(text: str) -> None:
    """Structure: one graph, statements end with ';', every edge joins declared nodes, labels
    are quoted with their quotes escaped; and dot itself parses it when it is installed."""
    lines = text.splitlines()
    assert lines[0] == "graph topology {" and lines[-1] == "}"
    declared, edges = set(), []
    for line in lines[1:-1]:
        assert line.endswith(";"), line
        if m := re.fullmatch(r"  (\w+) -- (\w+)( \[.*\])?;", line):
            edges.append((m[1], m[2]))
        elif m := re.fullmatch(r'  (\w+) \[.*label="((?:[^"\\]|\\.)*)"\];', line):
            declared.add(m[1])
        else:
            assert re.fullmatch(r"  (rankdir=LR|node \[.*\]);", line), line
    assert edges and all(a in declared and b in declared for a, b in edges)
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0 and "<svg" in done.stdout, done.stderr


def check_mermaid(text: str) -> None:
    """Structure: a left-to-right flowchart; nodes declared once with a quoted label in one of
    the shapes used; every edge joins declared nodes."""
    lines = text.splitlines()
    assert lines[0] == "graph LR"
    shapes = r'\[\[".*"\]\]|\{\{".*"\}\}|\(\(".*"\)\)|\(\[".*"\]\)|\[".*"\]'
    declared, edges = set(), []
    for line in lines[1:]:
        if m := re.fullmatch(r"  (\w+) (---|-\.-) (\w+)", line):
            edges.append((m[1], m[3]))
        elif m := re.fullmatch(r'  (\w+) -\.->\|"[^"]*"\| (\w+)', line):
            edges.append((m[1], m[2]))
        else:
            m = re.fullmatch(rf"  (\w+)({shapes})", line)
            assert m, line
            assert m[1] not in declared, f"{m[1]} declared twice"
            declared.add(m[1])
            assert '"' not in m[2].strip('[](){}"'), "quotes inside labels are escaped"
    assert edges and all(a in declared and b in declared for a, b in edges)


def test_dot_has_every_node_and_edge():
    text = render_dot(sample())
    check_dot(text)
    assert 'switch [shape=box3d, label="switch vsw0"];' in text
    assert 'g0_0 [label="web\\n10.0.0.10\\n52:54:00:00:00:01"];' in text
    assert "uplink -- gateway;" in text and "gateway -- switch;" in text
    assert "switch -- p1 [style=dashed];" in text, "a down port"
    assert re.search(r'uplink -- g0_0 \[style=dashed, dir=forward, label="tcp 8080 → '
                     r'10\.0\.0\.10:80"\];', text), "a forward to a guest we know"
    assert 'f1 [shape=plaintext, label="10.0.0.99:5000"];' in text


def test_mermaid_has_every_node_and_edge():
    text = render_mermaid(sample())
    check_mermaid(text)
    assert '  g0_0["web<br/>10.0.0.10<br/>52:54:00:00:00:01"]' in text
    assert "  switch -.- p1" in text, "a down port is dotted"
    assert '  uplink -.->|"tcp 8080 → 10.0.0.10:80"| g0_0' in text


def test_labels_are_escaped_in_both_languages():
    odd = [{"mac": "52:54:00:00:00:09", "port": "vm1", "port_id": 1, "ageing": 1.0}]
    lease = [{"mac": "52:54:00:00:00:09", "ip": "10.0.0.9", "hostname": 'a"b<c>\\',
              "state": "bound"}]
    topo = topology("vsw0", PORTS, odd, lease, [], {}, GATEWAY, RAW, [])
    dot = render_dot(topo)
    check_dot(dot)
    assert 'label="a\\"b<c>\\\\\\n10.0.0.9' in dot
    mermaid = render_mermaid(topo)
    check_mermaid(mermaid)
    assert '["a#quot;b#lt;c#gt;\\<br/>10.0.0.9' in mermaid


def test_cli_draws_only_the_topology(monkeypatch, capsys):
    monkeypatch.setattr(cli, "request", lambda path, cmd, **kw: sample())
    assert cli.main(["show", "ports", "--dot", "--socket", "/nonexistent"]) == 2
    assert "--dot and --mermaid draw the topology" in capsys.readouterr().err
    assert cli.main(["show", "topology", "--mermaid", "--socket", "/x"]) == 0
    check_mermaid(capsys.readouterr().out.rstrip("\n"))
    assert cli.main(["show", "topology", "--dot", "--socket", "/x"]) == 0
    check_dot(capsys.readouterr().out.rstrip("\n"))
    assert cli.main(["show", "topology", "--socket", "/x"]) == 0
    assert capsys.readouterr().out.startswith("switch vsw0\n")
    with pytest.raises(SystemExit):  # argparse: one output form at a time
        cli.main(["show", "topology", "--dot", "--mermaid"])
