"""A bounded soak through the host uplink: guests, flows, leases and forwards churn for
SOAK_SECONDS (45 by default, as `make test` and CI run it; `make soak` sets 600) while the
daemon's memory, descriptors and tables are sampled; then vswitch is killed with -9 under load
and started again with the same config.

  guests s1, s2 (steady: udhcpc -f, renewing; flows and DNS all the time), c1, c2 (churned:
  lease released, link down, a new MAC from a small pool, link up, leased again), server
  (a static DHCP host, behind the forwards): namespaces on attach ports (veths), so their
  interfaces outlive the daemon -- vswitch, running in namespace H (host uplink, the default)
  H: eth0 10.95.0.2/24 -- veth -- internet namespace I: eth0 10.95.0.1/24 (echo servers)

What must stay flat once warmed up: RSS (growth under RSS_GROWTH_KIB), open descriptors not
held by a flow (the baseline +- FD_SLACK), the MAC table, the leases, the forwards, the flows.
What must never happen: a lease a live guest holds, or a configured forward, going missing.

After kill -9, by design (README, "Host uplink details"): leases come back from the lease file
and a renewing guest keeps its address; the config's forwards listen again; forwards added at
run time are gone (the control socket changes the running daemon, not the config); open TCP
flows are lost: the host sockets closed with the process, and a guest's next segment on such a
connection is answered with a RST by the new daemon, which knows no such flow.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.test_host_egress import BANNER, HOST, INET, UDP_ECHO, internet, serve
from tests.support import Daemon
from vswitch.control import request
from vswitch.lab import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.soak]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "45"))
REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests/peers/udhcpc.script")
GW = "10.93.0.1"
SERVER_MAC, SERVER_IP = "52:54:00:93:00:50", "10.93.0.50"
CHURN_MACS = {c: [f"52:54:00:93:{i + 1:02x}:{m:02x}" for m in range(4)]
              for i, c in enumerate(("c1", "c2"))}
STEADY = ("s1", "s2")
UDP_POOL = "41000,41001,41002,41003,41004,41005,41006,41007"

RSS_GROWTH_KIB = 10 * 1024  # after warm-up, whatever the budget
FD_SLACK = 8  # descriptors not held by a flow: control connections closing, flows in between
MAX_FLOWS = 64  # steady UDP pools (2 x 8), churned guests' endpoints (8), forward sessions (4),
#                 open TCP
MAX_ROWS = 1024 + MAX_FLOWS  # plus closed TCP flows listed for 30 s (nat/egress/tcp.py RECENT)
MAX_FDB = 1 + 3 + sum(len(m) for m in CHURN_MACS.values())  # gateway, steady, churn pools
MAX_LEASES = 3 + sum(len(m) for m in CHURN_MACS.values())

TCP_ECHO = """
import socketserver, sys
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(10)
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128
srv = Server((sys.argv[1], int(sys.argv[2])), Echo)
print("listening", flush=True)
srv.serve_forever()
"""

# Flows from a steady guest for argv[3] seconds: a short TCP echo connection, a UDP echo from
# one of a fixed pool of source ports (so the host's UDP mappings stay bounded) and a DNS query
# for a guest's name, every argv[5] seconds; counts and the first errors as JSON at the end.
FLOWS = r"""
import json, socket, sys, time
import dns.message, dns.query, dns.rdatatype
inet, gw, seconds, names, pause = sys.argv[1], sys.argv[2], float(sys.argv[3]), \
    sys.argv[4].split(","), float(sys.argv[5])
pool = []
for port in sys.argv[6].split(","):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(2)
    pool.append(s)
stats = dict.fromkeys(("tcp", "tcp_fail", "udp", "udp_fail", "dns", "dns_fail"), 0)
errors = []
def failed(kind, exc):
    stats[kind + "_fail"] += 1
    if len(errors) < 10:
        errors.append(f"{time.time():.1f} {kind}: {exc!r}"[:160])
end, i = time.monotonic() + seconds, 0
while time.monotonic() < end:
    i += 1
    try:
        with socket.create_connection((inet, 7000), timeout=3) as s:
            s.settimeout(3)
            payload = b"%d" % i * 100 + b"\n"
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        if got != payload:
            raise ValueError(f"echoed {len(got)} of {len(payload)} bytes")
        stats["tcp"] += 1
    except (OSError, ValueError) as exc:
        failed("tcp", exc)
    u = pool[i % len(pool)]
    try:
        u.sendto(b"u%d" % i, (inet, 7))
        while not u.recv(2048).startswith(b"u%d " % i):  # (a late answer to an earlier one)
            pass
        stats["udp"] += 1
    except OSError as exc:
        failed("udp", exc)
    name = names[i % len(names)]
    try:
        answer = dns.query.udp(dns.message.make_query(name, dns.rdatatype.A), gw, timeout=2)
        if not answer.answer:
            raise ValueError(f"{name}: no answer, rcode {answer.rcode()}")
        stats["dns"] += 1
    except (OSError, ValueError, dns.exception.DNSException) as exc:
        failed("dns", exc)
    time.sleep(pause)
print(json.dumps({"stats": stats, "errors": errors}), flush=True)
"""

# One of each from a churned guest just after it leased: TCP and UDP echo, its own name.
ONCE = r"""
import socket, sys
import dns.message, dns.query, dns.rdatatype
inet, gw, name, ip = sys.argv[1:5]
with socket.create_connection((inet, 7000), timeout=5) as s:
    s.sendall(b"once\n")
    s.shutdown(socket.SHUT_WR)
    assert s.recv(100) == b"once\n"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 42000))
u.settimeout(3)
for _ in range(3):
    u.sendto(b"once", (inet, 7))
    try:
        assert u.recv(100).startswith(b"once from ")
        break
    except socket.timeout:
        pass
else:
    raise SystemExit("udp: no echo")
answer = dns.query.udp(dns.message.make_query(name, dns.rdatatype.A), gw, timeout=3)
got = [r.address for rrset in answer.answer for r in rrset]
assert got == [ip], (name, got, ip)
print("ok")
"""

# A UDP question through a forward from a given source port (a pool of them: the forward's
# sessions stay bounded).
UDP_FROM = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[4])))
s.settimeout(3)
for _ in range(3):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recv(65535).decode())
        break
    except socket.timeout:
        pass
"""

HOLD = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
conn, _ = srv.accept()
try:
    while data := conn.recv(65536):
        conn.sendall(data)
    print("eof", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
"""

# A TCP connection held open across the kill: one echo before, then (after a line on stdin)
# one more send, and what came of it.
HOLDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"before\\n")
assert s.recv(100) == b"before\\n"
print("open", flush=True)
sys.stdin.readline()
s.settimeout(20)
try:
    s.sendall(b"after\\n")
    data = s.recv(100)
    print("eof" if not data else f"data {data!r}", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
except socket.timeout:
    print("timeout", flush=True)
"""


class Soak:
    """The lab: host, internet, guests and the daemon (see the module docstring)."""

    def __init__(self, lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.host = lab.netns("kh")
        self.inet = internet(lab, self.host)
        self.ns: dict[str, str] = {}
        ports = ""
        for g in (*STEADY, "server", *CHURN_MACS):
            ns = self.ns[g] = lab.netns("k" + g)
            outer = lab.veth("v" + g, ns, "eth0", outer_ns=self.host)
            lab.run(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"])
            ports += f'[[port]]\nname = "{g}"\ntype = "attach"\ninterface = "{outer}"\n'
        lab.run(self.ns["server"], ["ip", "link", "set", "eth0", "address", SERVER_MAC])
        self.mac_index = dict.fromkeys(CHURN_MACS, 0)
        for c, macs in CHURN_MACS.items():
            lab.run(self.ns[c], ["ip", "link", "set", "eth0", "address", macs[0]])
        for ns in self.ns.values():  # up first: an attach port is up with its carrier
            lab.run(ns, ["ip", "link", "set", "eth0", "up"])
        self.body = f"""
[switch]
name = "sk{lab.tag}"
[network]
subnet = "10.93.0.0/24"
[dhcp]
range = ["10.93.0.100", "10.93.0.199"]
lease_time = 120
lease_file = "{tmp}/leases"
[[dhcp.host]]
mac = "{SERVER_MAC}"
ip = "{SERVER_IP}"
name = "server"
[dns]
domain = "soak.internal"
forwarders = []
[nat]
udp = 120
tcp_transitory = 10
icmp = 10
fragments = 5
[[forward]]
proto = "tcp"
port = 8022
to = "{SERVER_IP}:22"
[[forward]]
proto = "udp"
port = 8053
to = "{SERVER_IP}:53"
{ports}"""
        self.daemon = self.start()
        #: what each guest holds now: guest -> (MAC, address), None once released
        self.held: dict[str, tuple[str, str] | None] = {}
        self.renewing: dict[str, subprocess.Popen[str]] = {}
        self.restarts = 0
        self.busy: list[int] = []  # forwards whose connection closed empty (through_forward)

    def start(self) -> Daemon:
        return Daemon(self.lab, self.tmp, self.body, ports_up=1 + len(self.ns), ns=self.host)

    def restart(self) -> None:
        self.restarts += 1
        self.daemon.log.rename(self.tmp / f"vswitch.{self.restarts}.log")
        self.daemon = self.start()

    # -- guests ---------------------------------------------------------------------------

    def mac(self, g: str) -> str:
        return self.lab.run(self.ns[g], ["cat", "/sys/class/net/eth0/address"]).stdout.strip()

    def renewing_lease(self, g: str) -> str:
        """udhcpc -f: leased now, renewing at T1 for as long as the test runs; its address."""
        proc = self.lab.spawn(["udhcpc", "-f", "-i", "eth0", "-x", f"hostname:{g}", "-s",
                               SCRIPT, "-t", "5", "-T", "1"], ns=self.ns[g],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ip = wait_event(proc, "bound").split()[-1]
        self.renewing[g] = proc
        self.lab.run(self.ns[g], ["ip", "route", "replace", "default", "via", GW])
        self.held[g] = (self.mac(g), ip)
        return ip

    def churn(self, c: str) -> str:
        """Release c's lease, take its link down, give it the next MAC of its pool, bring it up
        and lease again; then one TCP flow, one UDP flow and its own name in DNS.  (Busybox's
        udhcpc -q -R sends no RELEASE as it quits; a udhcpc -f releases on SIGUSR2.)"""
        lab, ns = self.lab, self.ns[c]
        if c in self.renewing:
            proc = self.renewing.pop(c)
            proc.send_signal(signal.SIGUSR2)
            wait_event(proc, "entering released state")
            proc.terminate()
            proc.wait(5)
            assert proc.stdout is not None
            LINES.pop(proc.stdout.fileno(), None)
            proc.stdout.close()
            held = self.held[c]
            assert held is not None
            mac, self.held[c] = held[0], None
            wait_for(lambda: not any(r["mac"] == mac for r in self.daemon.show("leases")), 5,
                     f"{c}'s released lease to go")
        self.mac_index[c] = (self.mac_index[c] + 1) % len(CHURN_MACS[c])
        lab.run(ns, ["ip", "link", "set", "eth0", "down"])
        lab.run(ns, ["ip", "link", "set", "eth0", "address", CHURN_MACS[c][self.mac_index[c]]])
        lab.run(ns, ["ip", "link", "set", "eth0", "up"])
        ip = self.renewing_lease(c)
        assert self.held[c] == (CHURN_MACS[c][self.mac_index[c]], ip)
        once = lab.run(ns, [sys.executable, "-c", ONCE, INET, GW, c, ip], check=False,
                       timeout=30)
        assert once.stdout.strip() == "ok", (c, ip, once.stdout, once.stderr[-600:])
        return ip

    def flows(self, g: str, seconds: float, pause: float = 0.2) -> subprocess.Popen[str]:
        return self.lab.spawn([sys.executable, "-c", FLOWS, INET, GW, str(seconds),
                               "s1,s2,server,server.soak.internal", str(pause), UDP_POOL],
                              ns=self.ns[g], stdout=subprocess.PIPE, text=True)

    # -- the internet's side of the forwards ------------------------------------------------

    def through_forward(self, port: int) -> str:
        """What the guest's banner server said through forward ``port``.  A connection
        closed with nothing said (see the test's end) is counted and tried once more."""
        for _ in range(2):
            done = self.lab.run(self.inet, ["socat", "-T", "5", "-", f"TCP:{HOST}:{port}"],
                                check=False, timeout=15)
            if done.returncode != 0:
                return f"failed: {done.stderr}"
            if done.stdout.strip():
                return done.stdout.strip()
            self.busy.append(port)
        return ""

    def udp_forward(self, sport: int = 43000) -> str:
        return self.lab.run(self.inet, [sys.executable, "-c", UDP_FROM, HOST, "8053", "q",
                                        str(sport)], timeout=30).stdout.strip()

    def forward(self, action: str, proto: str, port: int, to: str = "") -> None:
        args = {"to": to} if to else {}
        request(self.daemon.socket, "forward", action=action, proto=proto, port=str(port),
                **args)

    # -- what is measured -------------------------------------------------------------------

    def sample(self, t0: float) -> dict:
        d = self.daemon
        fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        router = d.show("router")
        rows = d.show("conntrack")
        leases = d.show("leases")
        s = {"t": round(time.monotonic() - t0, 1), "rss_kib": d.rss_kib(), "fds": fds,
             "flows": router["flows"], "rows": len(rows),
             "open_tcp": sum(r["proto"] == "tcp" and not r["state"].startswith("closed")
                             for r in rows),
             "leases": len(leases), "fdb": len(d.show("fdb")),
             "forwards": len(d.show("forwards"))}
        # flows holding a host socket: open TCP, UDP mappings (a forward's UDP sessions use its
        # listening socket; closed TCP flows are listed for 30 s without one)
        s["socket_flows"] = sum(not r["state"].startswith("closed") and r["proto"] in ("tcp", "udp")
                                and not (r["proto"] == "udp" and r["kind"] == "host-forward")
                                for r in rows)
        s["fds_not_flows"] = fds - s["socket_flows"]
        s["missing"] = self.missing(leases)
        return s

    def missing(self, leases: list[dict]) -> list[str]:
        """Leases live guests hold and forwards the config (or the test) keeps, not listed."""
        have = {(r["mac"], r["ip"]) for r in leases}
        gone = [f"lease {g} {held}" for g, held in self.held.items()
                if held is not None and held not in have]
        listed = {(f["proto"], str(f["port"])) for f in self.daemon.show("forwards")}
        gone += [f"forward {f}" for f in self.kept_forwards if f not in listed]
        return gone

    kept_forwards = {("tcp", "8022"), ("udp", "8053"), ("tcp", "8090")}


def wait_event(proc: subprocess.Popen[str], event: str, seconds: float = 30) -> str:
    """The first line of ``proc``'s output from now on that starts with ``EVENT event`` (or
    contains ``event`` when it is not a script event); bounded in time, never a blocking read."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    pending = LINES.setdefault(fd, [""])
    deadline = time.monotonic() + seconds
    while True:
        *lines, pending[0] = pending[0].split("\n")
        for i, line in enumerate(lines):
            if line.startswith(f"EVENT {event}") or (" " in event and event in line):
                pending[0] = "\n".join([*lines[i + 1:], pending[0]])
                return line.strip()
        left = deadline - time.monotonic()
        if left <= 0:
            break
        select.select([fd], [], [], min(left, 0.5))
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        pending[0] += chunk.decode(errors="replace")
    raise AssertionError(f"udhcpc never said {event!r} (exit {proc.poll()})")


LINES: dict[int, list[str]] = {}  # what was read of each udhcpc's output, not yet a line


def result(proc: subprocess.Popen[str], timeout: float) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def curve(samples: list[dict], key: str) -> str:
    return " ".join(str(s[key]) for s in samples)


@pytest.fixture
def soak(lab, tmp_path):
    return Soak(lab, tmp_path)


def test_soak_churn_then_kill_9_under_load(soak):
    lab, t0 = soak.lab, time.monotonic()
    serve(lab, soak.inet, TCP_ECHO, INET, "7000")
    serve(lab, soak.inet, UDP_ECHO, INET, "7")
    assert soak.renewing_lease("server") == SERVER_IP, "the static host's address"
    serve(lab, soak.ns["server"], BANNER, SERVER_IP, "22", "ssh")
    serve(lab, soak.ns["server"], BANNER, SERVER_IP, "80", "web")
    serve(lab, soak.ns["server"], UDP_ECHO, SERVER_IP, "53")
    for g in STEADY:
        soak.renewing_lease(g)
    for c in CHURN_MACS:
        soak.churn(c)
    soak.forward("add", "tcp", 8090, f"{SERVER_IP}:80")  # kept for the whole soak
    assert soak.through_forward(8090) == f"web sees {INET}"

    # -- the soak ---------------------------------------------------------------------------
    warm_up = max(10.0, SOAK_SECONDS / 4)
    steady = {g: soak.flows(g, SOAK_SECONDS) for g in STEADY}
    start = time.monotonic()
    samples: list[dict] = []
    last = 0.0
    rounds = {"churn": 0, "forwards": 0}
    while time.monotonic() - start < SOAK_SECONDS:
        began = time.monotonic()
        c = list(CHURN_MACS)[rounds["churn"] % len(CHURN_MACS)]
        soak.churn(c)
        rounds["churn"] += 1
        port = 9100 + rounds["forwards"] % 50  # a forward added, used and removed
        soak.forward("add", "tcp", port, f"{SERVER_IP}:80")
        assert soak.through_forward(port) == f"web sees {INET}", port
        soak.forward("del", "tcp", port)
        if rounds["forwards"] % 2 == 0:
            soak.forward("add", "udp", port, f"{SERVER_IP}:53")
            soak.forward("del", "udp", port)
        rounds["forwards"] += 1
        assert soak.through_forward(8022) == f"ssh sees {INET}"
        assert soak.udp_forward(43000 + rounds["forwards"] % 4) == f"q from {INET}"
        time.sleep(max(0.0, began + 1 - time.monotonic()))  # about a round a second
        if time.monotonic() - last >= 3:
            last = time.monotonic()
            samples.append(soak.sample(start))
            assert samples[-1]["missing"] == [], samples[-1]
    stats = {g: result(p, timeout=30) for g, p in steady.items()}
    busy = soak.daemon.show("router").get("drop-forward-busy", 0)
    quiet_at = time.monotonic()

    def settled() -> bool:
        s = soak.sample(start)
        samples.append(s)
        return s["open_tcp"] == 0
    for _ in range(20):
        if settled():
            break
        time.sleep(0.5)
    quiet = samples[-1]
    print(f"\nsoak {SOAK_SECONDS:g} s: {rounds}, settled {time.monotonic() - quiet_at:.1f} s "
          f"after the flows stopped; forward connections closed empty, on ports: {soak.busy} "
          f"(daemon: drop-forward-busy {busy}); flows from the steady guests: {json.dumps(stats)}")
    for key in ("t", "rss_kib", "fds", "fds_not_flows", "socket_flows", "flows", "rows",
                "open_tcp", "leases", "fdb", "forwards"):
        print(f"  {key:>13}: {curve(samples, key)}")

    for g, r in stats.items():
        counts = r["stats"]
        assert counts["tcp_fail"] == 0 and counts["dns_fail"] == 0, (g, r)
        assert counts["udp_fail"] <= counts["udp"] // 100, (g, r)  # UDP: 1% may be lost
        assert counts["tcp"] >= SOAK_SECONDS, (g, r)  # (a few per second)
    warm = [s for s in samples if s["t"] >= warm_up]
    assert len(warm) >= 3, samples
    base = warm[0]
    assert max(s["rss_kib"] for s in warm) - base["rss_kib"] < RSS_GROWTH_KIB, \
        curve(samples, "rss_kib")
    for s in warm:
        assert abs(s["fds_not_flows"] - base["fds_not_flows"]) <= FD_SLACK, \
            curve(samples, "fds_not_flows")
        assert s["flows"] <= MAX_FLOWS and s["rows"] <= MAX_ROWS, s
        assert s["fdb"] <= MAX_FDB and s["leases"] <= MAX_LEASES, s
        assert s["forwards"] == len(Soak.kept_forwards), s
    assert quiet["open_tcp"] == 0, quiet
    assert abs(quiet["fds_not_flows"] - base["fds_not_flows"]) <= 3, (base, quiet)
    assert quiet["missing"] == [], quiet
    # Known, not understood yet: now and then (2 in 1200 in a 600 s run) a connection through
    # a forward is accepted and closed with nothing said, without drop-forward-busy (the
    # daemon's answer when the guest-side 4-tuple is still a flow, nat/egress/forwards.py).
    # A second try has always worked; more than 1% would be a regression.
    assert len(soak.busy) <= max(1, 2 * rounds["forwards"] // 100), (soak.busy, busy)

    # -- kill -9 under load, start again ------------------------------------------------------
    serve(lab, soak.inet, HOLD, INET, "7001")
    hold_server = lab.procs[-1]
    holder = lab.spawn([sys.executable, "-c", HOLDER, INET, "7001"], ns=soak.ns["s1"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    load = {g: soak.flows(g, 4, pause=0.05) for g in STEADY}
    time.sleep(1.5)
    before = soak.daemon.show("conntrack")
    assert any(f"{INET}:7001" in r["original"] for r in before), before
    held = {g: h for g, h in soak.held.items() if h is not None}
    pid = soak.daemon.proc.pid
    os.kill(pid, signal.SIGKILL)
    soak.daemon.proc.wait(10)
    killed_at = time.monotonic()
    soak.restart()
    print(f"restarted in {time.monotonic() - killed_at:.2f} s; under load: "
          f"{len(before)} conntrack rows, {sum(r['proto'] == 'tcp' for r in before)} TCP")

    leases = {(r["mac"], r["ip"]) for r in soak.daemon.show("leases")}
    assert set(held.values()) <= leases, ("leases back from the lease file", held, leases)
    for g in ("server", *STEADY):  # a renewing guest keeps its address
        soak.renewing[g].send_signal(signal.SIGUSR1)
        assert wait_event(soak.renewing[g], "renew") == f"EVENT renew {held[g][1]}", g
    forwards = {(f["proto"], str(f["port"])) for f in soak.daemon.show("forwards")}
    assert forwards == {("tcp", "8022"), ("udp", "8053")}, "the config's forwards, no others"
    assert soak.through_forward(8022) == f"ssh sees {INET}"
    assert soak.udp_forward() == f"q from {INET}"
    gone = soak.through_forward(8090)
    assert gone.startswith("failed") and "refused" in gone.lower(), gone
    assert not any(f"{INET}:7001" in r["original"] for r in soak.daemon.show("conntrack"))

    # the held connection: the internet saw the host socket close with the process; the
    # guest's next segment gets a RST from the new daemon
    peer_saw = hold_server.stdout.readline().strip()
    assert peer_saw in ("eof", "reset"), peer_saw
    holder.stdin.write("go\n")
    holder.stdin.flush()
    guest_saw = holder.stdout.readline().strip()
    print(f"the held TCP connection: the internet peer saw {peer_saw}, the guest {guest_saw}")
    assert guest_saw == "reset"
    assert soak.daemon.show("router").get("tcp-resets", 0) >= 1
    under_load = {g: result(p, timeout=30) for g, p in load.items()}
    print(f"flows across the kill: {json.dumps(under_load)}")
    after = {g: soak.flows(g, 1) for g in STEADY}  # new flows work at once
    for g, r in ((g, result(p, timeout=30)) for g, p in after.items()):
        assert sum(v for k, v in r["stats"].items() if k.endswith("_fail")) == 0, (g, r)
    soak.churn("c1")
    print(f"total {time.monotonic() - t0:.1f} s")
