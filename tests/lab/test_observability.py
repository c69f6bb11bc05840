"""Seeing inside a running daemon: the Prometheus endpoint scraped before and after guests lease
addresses and ping each other, and ``vswitch show topology`` naming the guests it saw.  Guests
are namespaces on internal ports; the endpoint listens on loopback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Daemon, mac_of, ping
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests/peers/udhcpc.script")
GW = "10.72.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(lab, tmp: Path, metrics_port: int | None = None):
    """A daemon with two guests o1, o2 on internal ports, not yet configured."""
    guests = {g: lab.netns(g) for g in ("o1", "o2")}
    ports = "".join(f'[[port]]\nname = "{lab.name(g)}"\ntype = "internal"\nnetns = "{ns}"\n'
                    for g, ns in guests.items())
    metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
    daemon = Daemon(lab, tmp, f"""
[switch]
name = "o{lab.tag}"
{metrics}
[network]
subnet = "10.72.0.0/24"
[dhcp]
lease_file = "{tmp}/leases"
[dns]
forwarders = []
{ports}""", ports_up=3)
    for g, ns in guests.items():
        lab.run(ns, ["ip", "link", "set", lab.name(g), "up"])
    return daemon, guests


def lease(lab, ns: str, dev: str, hostname: str) -> str:
    out = lab.run(ns, ["udhcpc", "-n", "-q", "-i", dev, "-x", f"hostname:{hostname}", "-s",
                       SCRIPT, "-t", "5", "-T", "2"], timeout=60).stdout
    return next(x.split()[-1] for x in out.splitlines() if "EVENT bound" in x)


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = reply.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_endpoint_counts_traffic_and_leases(lab, tmp_path):
    port = free_port()
    daemon, guests = start(lab, tmp_path, port)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in daemon.log.read_text()
    o1, o2 = lab.name("o1"), lab.name("o2")
    before = scrape(port)
    assert before["vswitch_port_up"][(("port", o1), ("type", "internal"))] == 1
    assert before["vswitch_dhcp_leases"] == {(("state", "bound"),): 0}

    lease(lab, guests["o1"], o1, "one")
    ip2 = lease(lab, guests["o2"], o2, "two")
    assert ping(lab, guests["o1"], ip2, count=5) == 5
    after = scrape(port)

    def moved(name: str, *labels: tuple[str, str]) -> float:
        key = tuple(sorted(labels))
        return after[name][key] - before[name].get(key, 0.0)

    assert moved("vswitch_port_rx_frames_total", ("port", o1)) >= 5 + 2  # echoes, DHCP
    assert moved("vswitch_port_rx_bytes_total", ("port", o1)) >= 5 * 98
    assert moved("vswitch_port_tx_frames_total", ("port", o2)) >= 5
    assert moved("vswitch_port_rx_frames_total", ("port", "gateway")) >= 4  # offers, acks
    assert after["vswitch_dhcp_leases"][(("state", "bound"),)] == 2
    assert moved("vswitch_dhcp_replies_total", ("type", "ack")) == 2
    assert moved("vswitch_fdb_learned_total") >= 2
    assert after["vswitch_fdb_entries"][()] >= 3  # the gateway and both guests

    # junk on the endpoint leaves the daemon and the endpoint as they were
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    assert daemon.alive() and scrape(port)["vswitch_dhcp_leases"][(("state", "bound"),)] == 2
    assert daemon.stop() == 0
    with pytest.raises(OSError):  # closed with the daemon
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def show(daemon: Daemon, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "vswitch.cli", "show", "topology", "--socket",
                           daemon.socket, *args], capture_output=True, text=True, check=True,
                          cwd=REPO, timeout=30).stdout


def test_show_topology_names_the_guests_that_leased(lab, tmp_path):
    daemon, guests = start(lab, tmp_path)
    o1 = lab.name("o1")
    ip = lease(lab, guests["o1"], o1, "alpha")
    mac = mac_of(lab, guests["o1"], o1)
    assert ping(lab, guests["o1"], GW, count=1) == 1
    wait_for(lambda: mac in daemon.fdb(), 5, "the guest's MAC in the MAC table")
    topo = daemon.show("topology")
    port = next(p for p in topo["ports"] if p["name"] == o1)
    assert {"mac": mac, "ip": ip, "name": "alpha"} in port["guests"]
    assert topo["gateway"]["ip"] == GW and topo["uplink"]["kind"] == "host"
    for args in ((), ("--mermaid",), ("--dot",)):
        out = show(daemon, *args)
        assert mac in out and ip in out and "alpha" in out and o1 in out, (args, out)
    assert show(daemon, "--mermaid").startswith("graph LR\n")
    assert show(daemon, "--dot").startswith("graph topology {\n")
