"""The router with a raw uplink, against an "internet" namespace: NAT, forwards, hairpin,
modes, ICMP errors translated both ways.  Guests sit on internal ports with DHCP leases.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.lab.test_host_egress import UDP_ECHO, serve
from tests.support import Daemon, tcp_transfer
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
INET, EXTERNAL, GW = "10.254.0.1", "10.254.0.2", "10.70.0.1"
WEB_MAC, WEB = "52:54:00:70:00:50", "10.70.0.50"
SCRIPT = str(REPO / "tests/peers/udhcpc.script")


def router_lab(lab, tmp: Path, mode: str = "nat", extra: str = "", dhcp_uplink: bool = False,
               forwarders: str = "[]"):
    inet = lab.netns("inet")
    up = lab.veth(lab.name("vup"), inet, "eth0")
    lab.addr(inet, "eth0", f"{INET}/24")
    uplink_address = f'address = "{EXTERNAL}/24"\ngateway = "{INET}"'
    if dhcp_uplink:  # the internet's own DHCP server leases the router its address
        uplink_address = 'address = "dhcp"'
        lab.spawn(["dnsmasq", "-k", "-i", "eth0", "--bind-interfaces", "--port=0",
                   "--dhcp-range=10.254.0.100,10.254.0.150,1h", f"--dhcp-option=3,{INET}",
                   f"--dhcp-leasefile={tmp}/inet.leases", f"--pid-file={tmp}/inet.pid"],
                  ns=inet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    guests = {g: lab.netns(g) for g in ("r1", "r2")}
    ports = "".join(f'[[port]]\nname = "{lab.name(g)}"\ntype = "internal"\nnetns = "{ns}"\n'
                    for g, ns in guests.items())
    body = f"""
[switch]
name = "r{lab.tag}"
[network]
mode = "{mode}"
subnet = "10.70.0.0/24"
[dhcp]
lease_file = "{tmp}/leases"
[[dhcp.host]]
mac = "{WEB_MAC}"
ip = "{WEB}"
name = "web"
[dns]
forwarders = {forwarders}
[uplink]
type = "raw"
interface = "{up}"
{uplink_address}
{extra}
{ports}"""
    daemon = Daemon(lab, tmp, body)
    lab.run(guests["r1"], ["ip", "link", "set", lab.name("r1"), "address", WEB_MAC])
    addresses = {}
    for ns in (*guests.values(), inet):
        # each namespace its own resolv.conf (the guests': the gateway, as DHCP says), so
        # nothing asks the host's resolvers (http.server looks its own name up)
        etc = Path(f"/etc/netns/{ns}")
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {GW if ns != inet else INET}\n")
        lab.files.append(etc / "resolv.conf")
        lab.dirs.append(etc)
    for g, ns in guests.items():
        dev = lab.name(g)
        lab.run(ns, ["ip", "link", "set", dev, "up"])
        out = lab.run(ns, ["udhcpc", "-n", "-q", "-i", dev, "-s", SCRIPT, "-t", "5", "-T", "2"],
                      timeout=60).stdout
        addresses[g] = next(x.split()[-1] for x in out.splitlines() if "EVENT bound" in x)
        lab.run(ns, ["ip", "route", "add", "default", "via", GW])
    return daemon, inet, guests, addresses


def capture(lab, ns: str, dev: str, bpf: str):
    proc = lab.spawn(["tcpdump", "-l", "-n", "-i", dev, bpf], ns=ns, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    for _ in range(5):
        if "listening" in proc.stderr.readline():
            return proc
    raise AssertionError("tcpdump did not start")


def stop(proc) -> list[str]:
    proc.terminate()
    return proc.communicate(timeout=10)[0].splitlines()


def serve_http(lab, ns: str, addr: str, port: int):
    proc = lab.spawn([sys.executable, "-m", "http.server", str(port), "--bind", addr], ns=ns,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: f"{addr}:{port}" in lab.run(ns, ["ss", "-Hltn"]).stdout, 10,
                 "http server")
    except TimeoutError:
        proc.kill()
        raise AssertionError(str(proc.communicate()) + lab.run(ns, ["ss", "-ltnp"]).stdout
                             + lab.run(ns, ["ip", "addr"]).stdout) from None
    return proc


def curl(lab, ns: str, url: str) -> str:
    return lab.run(ns, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url],
                   check=False).stdout


def test_guests_reach_the_internet_through_nat_and_only_the_external_address_shows(lab,
                                                                                   tmp_path):
    daemon, inet, guests, addr = router_lab(lab, tmp_path)
    serve_http(lab, inet, INET, 8081)
    lab.spawn(["socat", "UDP-RECVFROM:7777,fork", "EXEC:cat"], ns=inet)
    dump = capture(lab, inet, "eth0", "ip")
    assert lab.run(guests["r2"], ["ping", "-c", "2", "-W", "2", INET], check=False).returncode == 0
    assert curl(lab, guests["r2"], f"http://{INET}:8081/") == "200"
    echo = lab.run(guests["r2"], ["sh", "-c", f"echo hello | socat -t 2 - UDP:{INET}:7777"],
                   timeout=20).stdout
    assert echo.strip() == "hello"
    seen = stop(dump)
    assert any(f"{EXTERNAL} > {INET}" in line for line in seen), seen
    assert not [line for line in seen if "10.70.0." in line], "a guest address leaked out"
    flows = daemon.show("conntrack")
    assert {"icmp", "tcp", "udp"} <= {f["proto"] for f in flows}
    assert all(f["reply"].endswith(f"-> {EXTERNAL}:" + f["reply"].rsplit(":", 1)[1])
               for f in flows)


def test_forwards_tcp_and_udp_hairpin_and_runtime_changes_keep_flows(lab, tmp_path):
    extra = f'[[forward]]\nproto = "tcp"\nport = 8080\nto = "{WEB}:8000"\n'
    daemon, inet, guests, addr = router_lab(lab, tmp_path, extra=extra)
    assert addr["r1"] == WEB
    lab.run(guests["r1"], ["ip", "link", "set", "lo", "up"])
    serve_http(lab, guests["r1"], WEB, 8000)
    assert curl(lab, inet, f"http://{EXTERNAL}:8080/") == "200", "TCP forward from outside"
    assert curl(lab, guests["r2"], f"http://{EXTERNAL}:8080/") == "200", "hairpin"
    # a UDP forward added at run time
    lab.spawn(["socat", "UDP-RECVFROM:5353,fork", "EXEC:cat"], ns=guests["r1"])
    time.sleep(0.3)
    subprocess.run([sys.executable, "-m", "vswitch.cli", "forward", "add", "udp", "5353",
                    f"{WEB}:5353", "--socket", daemon.socket], check=True, capture_output=True)
    echo = lab.run(inet, ["sh", "-c", f"echo ping | socat -t 2 - UDP:{EXTERNAL}:5353"],
                   timeout=20).stdout
    assert echo.strip() == "ping"
    # an established TCP flow through the forward survives the forward's removal
    lab.spawn(["socat", "TCP-LISTEN:9000,reuseaddr", "EXEC:cat"], ns=guests["r1"])
    time.sleep(0.3)
    subprocess.run([sys.executable, "-m", "vswitch.cli", "forward", "add", "tcp", "9000",
                    f"{WEB}:9000", "--socket", daemon.socket], check=True, capture_output=True)
    client = lab.spawn(["socat", "-", f"TCP:{EXTERNAL}:9000"], ns=inet, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)
    client.stdin.write("one\n")
    client.stdin.flush()
    assert client.stdout.readline() == "one\n"
    subprocess.run([sys.executable, "-m", "vswitch.cli", "forward", "del", "tcp", "9000",
                    "--socket", daemon.socket], check=True, capture_output=True)
    client.stdin.write("two\n")
    client.stdin.flush()
    assert client.stdout.readline() == "two\n", "the established flow kept working"
    forwards = {(f["proto"], f["port"]) for f in daemon.show("forwards")}
    assert forwards == {("tcp", "8080"), ("udp", "5353")}
    assert curl(lab, inet, f"http://{EXTERNAL}:9000/") == "000", "no new flows after del"


def test_icmp_errors_are_translated_both_ways(lab, tmp_path):
    daemon, inet, guests, addr = router_lab(lab, tmp_path)
    ns = guests["r2"]
    # TTL 1 dies at the router itself: time exceeded from the gateway
    out = lab.run(ns, ["ping", "-c", "1", "-W", "2", "-t", "1", INET], check=False).stdout
    assert f"From {GW}" in out and "Time to live exceeded" in out, out
    # TTL 2 dies one hop beyond: the far router's error comes back translated to the guest
    lab.run(inet, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    lab.run(inet, ["ip", "link", "add", "far0", "type", "veth", "peer", "name", "far1"])
    lab.run(inet, ["ip", "link", "set", "far0", "up"])
    lab.run(inet, ["ip", "link", "set", "far1", "up"])
    lab.run(inet, ["ip", "route", "add", "10.255.0.0/24", "dev", "far0"])
    out = lab.run(ns, ["ping", "-c", "1", "-W", "2", "-t", "2", "10.255.0.9"],
                  check=False).stdout
    assert f"From {INET}" in out and "Time to live exceeded" in out, out
    # port unreachable from the far side reaches the guest's socket
    probe = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("{INET}", 9))
s.send(b"x")
try:
    s.recv(10)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("silence")
"""
    assert lab.run(ns, [sys.executable, "-c", probe], timeout=20).stdout.strip() == "refused"
    assert daemon.alive()


def test_isolated_mode_blocks_egress_while_guests_still_talk(lab, tmp_path):
    daemon, inet, guests, addr = router_lab(lab, tmp_path, mode="isolated")
    out = lab.run(guests["r2"], ["ping", "-c", "1", "-W", "2", INET], check=False)
    assert out.returncode != 0
    assert lab.run(guests["r2"], ["ping", "-c", "1", "-W", "2", addr["r1"]],
                   check=False).returncode == 0
    assert daemon.show("conntrack") == []


def test_route_mode_keeps_guest_addresses(lab, tmp_path):
    daemon, inet, guests, addr = router_lab(lab, tmp_path, mode="route")
    lab.run(inet, ["ip", "route", "add", "10.70.0.0/24", "via", EXTERNAL])
    dump = capture(lab, inet, "eth0", "icmp")
    assert lab.run(guests["r2"], ["ping", "-c", "2", "-W", "2", INET],
                   check=False).returncode == 0
    seen = stop(dump)
    assert any(f"{addr['r2']} > {INET}" in line for line in seen), seen
    assert socket.inet_aton(addr["r2"])


JUNK = r"""
import random, socket, struct, sys
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
dev, gw_mac, dst = sys.argv[1], sys.argv[2], sys.argv[3]
src = sys.argv[4] if len(sys.argv) > 4 else "10.70.0.99"
rng = random.Random(4)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
eth = bytes(Ether(dst=gw_mac, src=s.getsockname()[4].hex(":"), type=0x0800))
def ip(**kw):
    return IP(src=src, dst=dst, **kw)
templates = [
    lambda: bytes(ip(ihl=3) / UDP()),                                   # IHL < 5
    lambda: bytes(ip(len=rng.choice([10, 19, 2000])) / UDP()),          # total length wrong
    lambda: bytes(ip(chksum=0x1234) / UDP(dport=53)),                   # bad checksum
    lambda: bytes(ip(ttl=rng.choice([0, 1])) / UDP(dport=53)),          # TTL 0/1
    lambda: bytes(ip(flags="MF", id=rng.randrange(65536)) / UDP() / bytes(64)),  # never completed
    lambda: bytes(ip(frag=rng.randrange(1, 8191), id=rng.randrange(65536)) / bytes(64)),
    lambda: bytes(ip(frag=8190, id=rng.randrange(65536)) / bytes(200)),  # offset+len > 65535
    lambda: bytes(ip() / TCP(dataofs=rng.choice([0, 3, 15]), sport=rng.randrange(1024, 65535))),
    lambda: bytes(ip() / TCP(flags="SF", sport=rng.randrange(1024, 65535))),
    lambda: bytes(ip() / TCP(flags=0, sport=rng.randrange(1024, 65535))),
    lambda: bytes(ip() / UDP(len=rng.choice([0, 7, 500]), sport=rng.randrange(1024, 65535))),
    lambda: bytes(ip() / ICMP(type=3, code=3) / bytes(rng.randrange(0, 20))),  # truncated quote
    lambda: bytes(ip() / ICMP(type=11) / IP(dst=src) / ICMP(type=3) / bytes(8)),
    lambda: rng.randbytes(rng.randrange(0, 80)),
]
for i in range(20000):
    s.send(eth + templates[i % len(templates)]())
"""


def test_malformed_ip_traffic_at_the_router_is_counted_and_survived(lab, tmp_path):
    daemon, inet, guests, addr = router_lab(lab, tmp_path)
    ns, dev = guests["r2"], lab.name("r2")
    assert lab.run(ns, ["ping", "-c", "1", "-W", "2", GW], check=False).returncode == 0
    gw_mac = next(r["mac"] for r in daemon.show("fdb") if r["port"] == "gateway")
    lab.run(ns, [sys.executable, "-c", JUNK, dev, gw_mac, INET], timeout=300)
    assert daemon.alive()
    assert lab.run(ns, ["ping", "-c", "2", "-W", "2", INET], check=False).returncode == 0
    assert curl(lab, ns, f"http://{INET}:1/") == "000"  # a refused port: RST comes back
    counters = daemon.show("router")
    assert sum(v for k, v in counters.items() if k.startswith(("drop-", "malformed"))) > 5000
    assert counters["conntrack"] < 20000


def test_tso_super_frames_cross_the_nat_intact_both_ways(lab, tmp_path):
    """64 KiB TSO frames are translated once with incremental checksums (RFC 1624): 20 MiB each
    way must arrive with the same sha256, out through SNAT and in through a forward."""
    extra = f'[[forward]]\nproto = "tcp"\nport = 6000\nto = "{WEB}:6000"\n'
    daemon, inet, guests, addr = router_lab(lab, tmp_path, extra=extra)
    lab.run(guests["r1"], ["ip", "link", "set", "lo", "up"])
    sent, got = tcp_transfer(lab, guests["r1"], inet, INET, 20 << 20, port=5001)
    assert sent == got and sent.startswith(str(20 << 20)), (sent, got)
    sent, got = tcp_transfer(lab, inet, guests["r1"], WEB, 20 << 20, port=6000, dial=EXTERNAL)
    assert sent == got, (sent, got)
    gso = daemon.port(lab.name("r1"))
    assert gso["rx_bytes"] / gso["rx_frames"] > 3000, "the guest handed vswitch TSO frames"


def test_a_raw_uplink_without_cap_net_raw_says_so(lab):
    inet = lab.netns("inet")
    up = lab.veth(lab.name("vup"), inet, "eth0")
    tmp_path = Path(tempfile.mkdtemp(prefix="vswitch-nobody-"))  # pytest's tmp is root-only
    tmp_path.chmod(0o777)
    lab.dirs.append(tmp_path)
    config = tmp_path / "nobody.toml"
    lab.files.append(config)
    config.write_text(f"""
[control]
socket = "{tmp_path}/ctl.sock"
[network]
subnet = "10.70.0.0/24"
[dhcp]
enabled = false
[dns]
enabled = false
[uplink]
interface = "{up}"
address = "{EXTERNAL}/24"
gateway = "{INET}"
""")
    config.chmod(0o644)
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           sys.executable, "-m", "vswitch.cli", "run", str(config)],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode != 0
    assert "CAP_NET_RAW" in done.stderr and up in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


FLOOD = r"""
import socket, sys, errno
refused = sent = 0
for port in range(20000, 20500):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    s.connect((sys.argv[1], 9999))
    s.settimeout(1)
    try:
        s.send(b"x")
        sent += 1
        s.recv(1)
    except OSError as exc:
        refused += exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    s.close()
print(sent, refused)
"""


def test_a_full_conntrack_refuses_new_flows_and_keeps_established_ones(lab, tmp_path):
    """Replied flows fill the table (an unreplied one would be dropped early to make room, as
    Linux does): then new flows get ICMP 3/13 and established ones go on."""
    daemon, inet, guests, addr = router_lab(lab, tmp_path,
                                            extra="[nat]\nmax_entries = 64\nmax_per_guest = 64\n")
    lab.spawn(["socat", "TCP-LISTEN:7000,reuseaddr", "EXEC:cat"], ns=inet)
    lab.spawn(["socat", "UDP-RECVFROM:9999,fork", "EXEC:cat"], ns=inet)
    time.sleep(0.3)
    client = lab.spawn(["socat", "-", f"TCP:{INET}:7000"], ns=guests["r2"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    client.stdin.write("before\n")
    client.stdin.flush()
    assert client.stdout.readline() == "before\n"
    sent, refused = lab.run(guests["r2"], [sys.executable, "-c", FLOOD, INET],
                            timeout=120).stdout.split()
    assert int(refused) > 300, "new flows got ICMP 3/13 once the table was full"
    assert len(daemon.show("conntrack")) <= 64
    client.stdin.write("after\n")
    client.stdin.flush()
    assert client.stdout.readline() == "after\n", "the established flow went on"


def test_the_uplink_can_lease_its_address_by_dhcp(lab, tmp_path):
    daemon, inet, guests, addr = router_lab(lab, tmp_path, dhcp_uplink=True)
    wait_for(lambda: daemon.show("router")["uplink_address"] != "none", 30, "the uplink lease")
    leased = daemon.show("router")["uplink_address"].split("/")[0]
    assert leased.startswith("10.254.0.1"), leased
    dump = capture(lab, inet, "eth0", "icmp")
    assert lab.run(guests["r2"], ["ping", "-c", "2", "-W", "2", INET], check=False).returncode == 0
    seen = stop(dump)
    assert any(f"{leased} > {INET}" in line for line in seen), seen
    assert leased in (tmp_path / "inet.leases").read_text(), "dnsmasq handed it out"

BIG_DATAGRAM = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: no DF
s.settimeout(3)
data = bytes(range(256)) * 12
for _ in range(3):
    s.sendto(data, (sys.argv[1], int(sys.argv[2])))
    try:
        print("echoed" if s.recv(65535).startswith(data) else "different")
        break
    except socket.timeout:
        print("timeout")
"""


def test_fragments_too_big_for_a_smaller_uplink_mtu_are_cut_again(lab, tmp_path):
    """Router Rule 3: the guest's 1500-byte fragments of a 3072-byte datagram without DF are
    cut to the uplink's 1280 (fragments of fragments, RFC 791 3.2); the echo comes back."""
    daemon, inet, guests, addr = router_lab(lab, tmp_path, extra="mtu = 1280")
    subprocess.run(["ip", "link", "set", lab.name("vup"), "mtu", "1280"], check=True)
    lab.run(inet, ["ip", "link", "set", "eth0", "mtu", "1280"])
    serve(lab, inet, UDP_ECHO, INET, "7777")
    out = lab.run(guests["r2"], [sys.executable, "-c", BIG_DATAGRAM, INET, "7777"]).stdout
    assert out.split() == ["echoed"], out
    router = daemon.show("router")
    assert router.get("drop-too-big", 0) == 0, router
