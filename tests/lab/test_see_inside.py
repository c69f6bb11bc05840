"""Seeing inside a running switch: `vswitch trace` says each decision in words with its rule,
`vswitch capture` writes what crossed each point as pcapng that tcpdump and tshark read, and
`vswitch explain` agrees with what trace reports.  A raw-uplink router lab (test_router.py):
two DHCP guests, an "internet" namespace, NAT, a forward, DNS local and forwarded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.lab.test_host_egress import UDP_ECHO, serve
from tests.lab.test_lab_guests import capture
from tests.lab.test_router import EXTERNAL, GW, INET, WEB, router_lab
from tests.support import Daemon, tcp_transfer
from vswitch.control import ControlError, request
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

VSWITCH = [sys.executable, "-m", "vswitch.cli"]
REPO = Path(__file__).resolve().parents[2]
UPSTREAM = "127.0.0.77"


class Watcher:
    """A `trace` or `capture` session read in a thread, as the CLI reads it."""

    def __init__(self, path: str, cmd: str, **args: object) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self.file = self.sock.makefile("rb")
        self.header = json.loads(self.file.readline())
        self.records: list[dict] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.file:
                self.records.append(json.loads(line))
        except (OSError, ValueError):
            pass

    def decisions(self) -> list[str]:
        return [f"{d[1]} [{d[2]}]" for r in self.records for d in r.get("decisions", [])]

    def wait(self, text: str, timeout: float = 10) -> None:
        wait_for(lambda: any(text in d for d in self.decisions()), timeout,
                 f"a decision containing {text!r}; got {self.decisions()[-20:]}")

    def close(self) -> None:
        self.sock.close()


def capture_while(daemon, points: str, out: Path, count: int, filter_text: str, action) -> str:
    """`vswitch capture POINTS -w OUT -c COUNT FILTER` while ``action`` runs; what
    `tcpdump -r` reads back from the file."""
    proc = subprocess.Popen([*VSWITCH, "capture", "--socket", daemon.socket, points, "-w",
                             str(out), "-c", str(count), *filter_text.split()],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() or proc.poll() is not None, 10, "the capture to start")
        time.sleep(0.3)  # the session is armed once the daemon has read the request
        action()
        proc.wait(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    return subprocess.run(["tcpdump", "-nr", str(out)], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def routed(lab, tmp_path):
    """The router lab with a forward, a DNS upstream in the internet, and an echo server."""
    extra = f'[[forward]]\nproto = "tcp"\nport = 8080\nto = "{WEB}:80"\n'
    # the DNS upstream is the daemon's own host's (its sockets are in the host namespace)
    upstream = lab.spawn([sys.executable, "-m", "tests.peers.dns_upstream", UPSTREAM],
                         stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert upstream.stdout.readline().strip() == "ready"
    daemon, inet, guests, addresses = router_lab(lab, tmp_path, extra=extra,
                                                 forwarders=f'["{UPSTREAM}"]')
    serve(lab, inet, UDP_ECHO, INET, "7000")
    yield daemon, inet, guests, addresses
    daemon.stop()


def test_trace_says_each_switch_decision_with_its_rule(lab, routed):
    daemon, inet, guests, addresses = routed
    r1, r2 = guests["r1"], guests["r2"]
    trace = Watcher(daemon.socket, "trace", filter="arp or icmp")
    try:
        # A new station's first ARP is flooded as a broadcast, and its source is learned.
        new_mac = "52:54:00:70:00:99"
        lab.run(r2, ["ip", "link", "set", lab.name("r2"), "address", new_mac])
        lab.run(r2, ["ip", "neigh", "flush", "all"])
        lab.run(r2, ["ping", "-n", "-c", "1", "-W", "2", addresses["r1"]])
        trace.wait(f"learned {new_mac} on {lab.name('r2')}")
        trace.wait("(broadcast) [switch Rule 2]")
        # The reply goes only where the station now lives.
        trace.wait(f"forwarded to {lab.name('r2')}")
        # The gateway answers ARP and ping, and says so.
        lab.run(r2, ["ping", "-n", "-c", "1", "-W", "2", GW])
        trace.wait("echo answered from 10.70.0.1 [gateway Rule 2]")
        # The same MAC appearing on another port is a move.
        lab.run(r1, ["ip", "link", "set", lab.name("r1"), "address", new_mac])
        lab.run(r1, ["ping", "-n", "-c", "1", "-W", "1", GW], check=False)
        trace.wait(f"{new_mac} on {lab.name('r1')}: moved from {lab.name('r2')} [fdb Rule 1]")
    finally:
        trace.close()


def test_trace_follows_nat_forwards_dhcp_and_dns(lab, routed):
    daemon, inet, guests, addresses = routed
    r1, r2 = guests["r1"], guests["r2"]
    trace = Watcher(daemon.socket, "trace")
    try:
        # A NAT'd TCP connection: a new mapping (its port preserved), then hits.
        sent, received = tcp_transfer(lab, r2, inet, INET, 100_000, port=5601)
        assert sent == received
        trace.wait(f"mapped to tcp {EXTERNAL}:")
        trace.wait("(port preserved) [conntrack Rule 2]")
        trace.wait(f"hit: tcp {addresses['r2']}:")
        # A forward: the connection from outside matches it and is DNAT'd to the guest.
        lab.run(inet, [sys.executable, "-c", "import socket; s = socket.socket(); "
                       f"s.settimeout(2); s.connect_ex(('{EXTERNAL}', 8080))"], check=False)
        trace.wait(f"forward matched: tcp port 8080 DNAT to {WEB}:80 [conntrack Rule 8]")
        # Unsolicited UDP from an address the mapping never talked to is filtered.
        lab.run(inet, ["ip", "addr", "add", "10.254.0.3/24", "dev", "eth0"])
        lab.run(r2, [sys.executable, "-c", "import socket; s = socket.socket(2, 2); "
                     "s.bind(('', 4444)); "
                     f"s.sendto(b'x', ('{INET}', 7000)); s.settimeout(2); s.recv(99)"])
        lab.run(inet, [sys.executable, "-c", "import socket; s = socket.socket(2, 2); "
                       f"s.bind(('10.254.0.3', 7001)); s.sendto(b'y', ('{EXTERNAL}', 4444))"])
        trace.wait("address-dependent filtering, RFC 4787 REQ-8) [conntrack Rule 3]")
        # DHCP: the whole DORA, with where the address comes from.
        dev = lab.name("r1")
        lab.run(r1, ["udhcpc", "-n", "-q", "-i", dev, "-s", "/bin/true", "-t", "5", "-T", "2"],
                timeout=60)
        trace.wait("taken by the DHCP service [gateway Rule 3]")
        trace.wait(f"DISCOVER: OFFER {WEB} from its static host entry")
        trace.wait(f"REQUEST (SELECTING) for {WEB}: ACK")
        # DNS: a guest's name answered locally, another name forwarded upstream.
        lab.run(r2, ["dig", "+short", "+tries=1", f"@{GW}", "web.vsw.internal"])
        trace.wait(f"question A web.vsw.internal.: answered {WEB} from a static host "
                   "[dns Rule 1]")
        out = lab.run(r2, ["dig", "+short", "+tries=2", f"@{GW}", "www.example.test"]).stdout
        assert "203.0.113.7" in out
        trace.wait(f"question A www.example.test.: forwarded to {UPSTREAM}:53 [dns Rule 3]")
        lab.run(r2, ["dig", "+short", "+tries=1", f"@{GW}", "www.example.test"])
        trace.wait("question A www.example.test.: answered from the cache")
    finally:
        trace.close()


def test_explain_agrees_with_trace_and_changes_nothing(lab, routed):
    daemon, inet, guests, addresses = routed
    r2 = guests["r2"]
    mac = daemon.show("leases")
    row = next(r for r in mac if r["ip"] == addresses["r2"])
    frame = (f"Ether(src='{row['mac']}', dst='ff:ff:ff:ff:ff:ff')/"
             f"ARP(psrc='{addresses['r2']}', hwsrc='{row['mac']}', pdst='{GW}')")
    def state():
        return ([(r["mac"], r["port"]) for r in daemon.show("fdb")],
                len(daemon.show("conntrack")),
                [(r["ip"], r["state"], r["expires"]) for r in daemon.show("leases")])

    before = state()
    out = subprocess.run([*VSWITCH, "explain", "--socket", daemon.socket, "--json", frame],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    explained = [d[1] for r in json.loads(out) for d in r["decisions"]]
    assert state() == before
    assert any(t.startswith("flooded to") and "(broadcast)" in t for t in explained)
    assert "ARP answered: 10.70.0.1 is at" in " ".join(explained)
    # The same frame, sent for real: trace reports the same decisions.
    trace = Watcher(daemon.socket, "trace", filter=f"arp and host {addresses['r2']}")
    try:
        lab.run(r2, ["arping", "-c", "1", "-w", "2", "-I", lab.name("r2"), GW], check=False) \
            if Path("/usr/sbin/arping").exists() else lab.run(
                r2, [sys.executable, "-c", "from scapy.all import *; "
                     f"sendp({frame}, iface='{lab.name('r2')}', verbose=0)"])
        trace.wait("ARP answered: 10.70.0.1 is at")
        traced = [d[1] for r in trace.records for d in r["decisions"]]
        first = traced[:len(explained)]
        assert [t.split(" (")[0] for t in first] == [t.split(" (")[0] for t in explained]
    finally:
        trace.close()


def test_capture_shows_both_sides_of_the_nat_in_pcapng(lab, routed, tmp_path):
    daemon, inet, guests, addresses = routed
    r2 = guests["r2"]
    out = tmp_path / "nat.pcapng"
    text = capture_while(daemon, "uplink-inside,uplink-outside", out, 4, "udp and port 7000",
                         lambda: lab.run(r2, [sys.executable, "-c", "import socket; "
                                              "s = socket.socket(2, 2); "
                                              f"s.sendto(b'ping', ('{INET}', 7000)); "
                                              "s.settimeout(3); s.recv(99)"]))
    assert f"{addresses['r2']}." in text and f"{EXTERNAL}." in text, text
    fields = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e",
                             "frame.interface_name", "-e", "frame.comment", "-e", "ip.src"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in fields]
    assert ["uplink-inside", "uplink-inside rx", addresses["r2"]] in rows, rows
    assert ["uplink-outside", "uplink-outside tx", EXTERNAL] in rows, rows


def test_bad_filters_and_points_get_one_clear_error(lab, routed, tmp_path):
    daemon = routed[0]
    with pytest.raises(ControlError, match="port"):
        list(_first(daemon.socket, "trace", filter="port http"))
    with pytest.raises(ControlError, match="no capture point nowhere"):
        list(_first(daemon.socket, "capture", points=["nowhere"]))
    result = subprocess.run([*VSWITCH, "capture", "--socket", daemon.socket, "gateway",
                             "-w", "/proc/nope/x.pcapng"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 1 and "cannot write /proc/nope/x.pcapng" in result.stderr
    assert request(daemon.socket, "ping") == "pong" and daemon.alive()


def _first(path: str, cmd: str, **args: object):
    from vswitch.control import stream

    records = stream(path, cmd, **args)
    yield next(records)


@pytest.fixture
def mirrored(lab, tmp_path):
    """A plain switch: guests a and b (internal ports), c behind a stream port, and a span
    port that receives copies of a's frames; a MAC table of 3 entries."""
    ns = {g: lab.netns(g) for g in ("a", "b", "c", "span")}
    names = {g: lab.name(g) for g in ns}
    ports = "".join(f'[[port]]\nname = "{names[g]}"\ntype = "internal"\nnetns = "{ns[g]}"\n'
                    for g in ("a", "b", "span"))
    body = f"""
[switch]
name = "m{lab.tag}"
mac_limit = 3
{ports}
[[port]]
name = "{names['c']}"
type = "stream"
path = "{tmp_path}/c.sock"
[[mirror]]
from = ["{names['a']}"]
to = "{names['span']}"
"""
    daemon = Daemon(lab, tmp_path, body)
    lab.spawn([sys.executable, "-m", "tests.peers.socket_peer", "stream", f"{tmp_path}/c.sock",
               names["c"], ns["c"]], stdout=subprocess.DEVNULL, cwd=REPO)
    wait_for(lambda: lab.run(ns["c"], ["ip", "link", "show", names["c"]], check=False)
             .returncode == 0, 10, "the stream peer's TAP")
    for i, g in enumerate(("a", "b", "c", "span"), start=1):
        lab.run(ns[g], ["sysctl", "-qw", f"net.ipv6.conf.{names[g]}.disable_ipv6=1"])
        lab.addr(ns[g], names[g], f"10.71.0.{i}/24")
    wait_for(lambda: daemon.up_count() == 4, 10, "four ports up")
    yield daemon, ns, names
    daemon.stop()


def test_a_mirror_port_gets_copies_and_switches_nothing(lab, mirrored):
    daemon, ns, names = mirrored
    lines = capture(lab, ns["span"], names["span"], 0.5, lambda: lab.run(
        ns["a"], ["ping", "-n", "-c", "2", "-i", "0.2", "10.71.0.2"]))
    assert any("10.71.0.1 > 10.71.0.2: ICMP echo request" in x for x in lines), lines
    assert any("10.71.0.2 > 10.71.0.1: ICMP echo reply" in x for x in lines), lines
    assert daemon.show("switch")["mirror_copies"] >= 4
    # what the span port sends is not switched: b never hears it
    heard = capture(lab, ns["b"], names["b"], 0.5, lambda: lab.run(
        ns["span"], ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "10.71.0.2"],
        check=False), bpf="arp or icmp")
    assert not [x for x in heard if "10.71.0.4" in x], heard
    assert daemon.port(names["span"])["drops"].get("mirror-port-ingress", 0) > 0


def test_a_stream_port_is_a_capture_point(lab, mirrored, tmp_path):
    daemon, ns, names = mirrored
    out = tmp_path / "c.pcapng"
    text = capture_while(daemon, names["c"], out, 2, "icmp", lambda: lab.run(
        ns["c"], ["ping", "-n", "-c", "1", "-W", "2", "10.71.0.1"]))
    assert "10.71.0.3 > 10.71.0.1: ICMP echo request" in text, text
    assert "10.71.0.1 > 10.71.0.3: ICMP echo reply" in text, text


def test_a_capture_reader_that_stops_reading_does_not_slow_the_switch(lab, mirrored):
    daemon, ns, names = mirrored
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(daemon.socket)
    stalled.sendall(json.dumps({"cmd": "capture", "points": [names["a"]]}).encode() + b"\n")
    try:
        # 10000 echo requests as fast as replies come, each captured twice (request and
        # reply: 6 MB of records), none read: far beyond what the session holds
        out = lab.run(ns["a"], ["ping", "-n", "-f", "-c", "10000", "-W", "1", "10.71.0.2"],
                      timeout=120).stdout
        received = int(out.split(" received")[0].rsplit(" ", 1)[-1])
        assert received >= 9700, out
        assert daemon.alive() and request(daemon.socket, "ping") == "pong"
        # the session kept its bound and counts what it dropped for its reader
        stalled.settimeout(5)
        data = b""
        deadline = time.monotonic() + 20
        while b'"dropped"' not in data and time.monotonic() < deadline:
            try:
                chunk = stalled.recv(1 << 16)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        assert b'"dropped"' in data
    finally:
        stalled.close()


def test_trace_says_when_a_full_table_evicts(lab, mirrored):
    daemon, ns, names = mirrored
    trace = Watcher(daemon.socket, "trace", filter="arp")
    try:
        for i in range(4):  # four new stations on b: the 3-entry table must evict
            lab.run(ns["b"], ["ip", "link", "set", names["b"], "address",
                              f"52:54:00:71:00:{0x10 + i:02x}"])
            lab.run(ns["b"], ["ping", "-n", "-c", "1", "-W", "1", "10.71.0.1"], check=False)
        trace.wait("(table full: 3 entries) [fdb Rule 3]")
    finally:
        trace.close()


def test_capture_streams_to_tcpdump_and_a_full_disk_stops_only_the_capture(lab, mirrored,
                                                                            tmp_path):
    daemon, ns, names = mirrored
    # -w - | tcpdump -r -: frames arrive while the capture runs
    pipeline = subprocess.Popen(
        f"{sys.executable} -m vswitch.cli capture --socket {daemon.socket} {names['a']} "
        "-w - -c 2 icmp | tcpdump -l -nr -", shell=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        lab.run(ns["a"], ["ping", "-n", "-c", "1", "-W", "2", "10.71.0.2"])
        out, _ = pipeline.communicate(timeout=20)
    finally:
        pipeline.kill()
    assert "10.71.0.1 > 10.71.0.2: ICMP echo request" in out, out
    # a capture file on a full disk: the capture says so and stops, the switch goes on
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        proc = subprocess.Popen([*VSWITCH, "capture", "--socket", daemon.socket, names["a"],
                                 "-w", str(disk / "big.pcapng")], stderr=subprocess.PIPE,
                                text=True)
        time.sleep(1.0)
        lab.run(ns["a"], ["ping", "-n", "-f", "-c", "2000", "-s", "1000", "10.71.0.2"],
                timeout=60)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 1 and "capture stopped: No space left on device" in err, err
    finally:
        proc.kill()
        subprocess.run(["umount", str(disk)], check=False)
    assert daemon.alive() and request(daemon.socket, "ping") == "pong"
    assert lab.run(ns["a"], ["ping", "-n", "-c", "1", "-W", "2", "10.71.0.2"]).returncode == 0
