"""The host uplink (the default): guests reach an "internet" namespace through the sockets of
the namespace vswitch runs in, its "host" (nat.egress).

  guests (namespaces on internal ports, 10.96.0.0/24) -- vswitch, running in namespace H
  H: eth0 10.95.0.2/24 -- veth -- internet namespace I: eth0 10.95.0.1/24 (the servers)

H has no route to the guests and no ip_forward: whatever reaches I was sent by vswitch's own
sockets, so I sees only H's address.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Daemon, ping, tcp_transfer
from vswitch.control import ControlError, request
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

INET, HOST = "10.95.0.1", "10.95.0.2"
GW, G1, G2 = "10.96.0.1", "10.96.0.11", "10.96.0.12"
REPO = Path(__file__).resolve().parents[2]

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data + f" from {peer[0]}".encode(), peer)
"""

UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for _ in range(5):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recv(65535).decode())
        break
    except socket.timeout:
        pass
"""

UDP_CLOSED = """
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
s.send(b"anyone?")
try:
    s.recv(100)
    print("answered")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""

CONNECT = """
import socket, sys, time
start = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    print("connected")
except ConnectionRefusedError:
    print(f"refused {time.monotonic() - start:.3f}")
except OSError as exc:
    print(f"error {exc}")
"""

HALF_CLOSE = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"first half\\n")
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(4096):
    data += chunk
print(repr(data))
"""

BANNER = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, peer = srv.accept()
    conn.sendall(f"{sys.argv[3]} sees {peer[0]}\\n".encode())
    conn.close()
"""


def serve(lab, ns: str, script: str, *args: str) -> None:
    proc = lab.spawn([sys.executable, "-c", script, *args], ns=ns, stdout=subprocess.PIPE,
                     text=True)
    assert proc.stdout.readline().strip() == "listening"


def internet(lab, host: str) -> str:
    """The internet namespace behind a veth from ``host``, with its servers."""
    inet = lab.netns("ei")
    lab.veth("eth0", inet, "eth0", outer_ns=host)
    lab.addr(host, "eth0", f"{HOST}/24")
    lab.addr(inet, "eth0", f"{INET}/24")
    return inet


def beyond_the_internet(lab, host: str, inet: str) -> None:
    """A host 10.99.0.2 one router further: the internet namespace routes to it."""
    far = lab.netns("ef")
    lab.veth("far", far, "eth0", outer_ns=inet)
    lab.addr(inet, "far", "10.99.0.1/24")
    lab.addr(far, "eth0", "10.99.0.2/24")
    lab.run(inet, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    lab.run(far, ["ip", "route", "add", "default", "via", "10.99.0.1"])
    lab.run(host, ["ip", "route", "add", "10.99.0.0/24", "via", INET])


def guest_body(lab, tmp: Path, guests: dict[str, str], extra: str = "") -> str:
    ports = "".join(f'[[port]]\nname = "{lab.name(g)}"\ntype = "internal"\nnetns = "{ns}"\n'
                    for g, ns in guests.items())
    return f"""
[switch]
name = "e{lab.tag}"
[network]
subnet = "10.96.0.0/24"
[dhcp]
lease_file = "{tmp}/leases"
[dns]
forwarders = []
{extra}
{ports}"""


def address_guests(lab, guests: dict[str, str], addresses: dict[str, str]) -> None:
    for g, ns in guests.items():
        lab.addr(ns, lab.name(g), f"{addresses[g]}/24")
        lab.run(ns, ["ip", "route", "add", "default", "via", GW])


def one_guest(lab, tmp_path, extra: str) -> tuple[Daemon, str, str]:
    """vswitch in a host namespace with ``extra`` config, one guest e1 at G1: (daemon, internet
    namespace, guest namespace)."""
    host = lab.netns("eh")
    inet = internet(lab, host)
    guests = {"e1": lab.netns("e1")}
    daemon = Daemon(lab, tmp_path, guest_body(lab, tmp_path, guests, extra), ports_up=2, ns=host)
    address_guests(lab, guests, {"e1": G1})
    return daemon, inet, guests["e1"]


@pytest.fixture
def egress_lab(lab, tmp_path):
    host = lab.netns("eh")
    inet = internet(lab, host)
    guests = {g: lab.netns(g) for g in ("e1", "e2")}
    extra = f"""
[[forward]]
proto = "tcp"
port = 8022
to = "{G1}:22"
[[forward]]
proto = "udp"
port = 8053
to = "{G1}:53"
"""
    daemon = Daemon(lab, tmp_path, guest_body(lab, tmp_path, guests, extra), ports_up=3,
                    ns=host)
    address_guests(lab, guests, {"e1": G1, "e2": G2})
    return daemon, host, inet, guests


def test_guests_reach_the_internet_through_host_sockets(lab, egress_lab, tmp_path):
    """HTTP, ping, UDP echo and iperf3 both ways; the internet sees only the host's address."""
    daemon, host, inet, guests = egress_lab
    g1, g2 = guests["e1"], guests["e2"]
    www = tmp_path / "www"
    www.mkdir()
    page = hashlib.sha256(b"page").hexdigest() * 1000
    (www / "index.html").write_text(page)
    lab.spawn([sys.executable, "-m", "http.server", "-b", INET, "-d", str(www), "8000"],
              ns=inet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve(lab, inet, UDP_ECHO, INET, "7")
    lab.spawn(["iperf3", "-s", "-B", INET], ns=inet, stdout=subprocess.DEVNULL)
    capture = tmp_path / "inet.pcap"
    dump = lab.spawn(["tcpdump", "-i", "eth0", "-n", "-U", "-w", str(capture), "ip"], ns=inet,
                     stderr=subprocess.PIPE)
    wait_for(lambda: capture.exists(), 5, "tcpdump to start")
    time.sleep(0.5)

    wait_for(lambda: lab.run(g1, ["curl", "-sf", "-m", "3", f"http://{INET}:8000/"],
                             check=False).returncode == 0, 15, "the web server")
    fetched = lab.run(g1, ["curl", "-sf", "-m", "10", f"http://{INET}:8000/index.html"])
    assert fetched.stdout == page, "the page arrived whole"
    assert ping(lab, g2, INET, count=3) == 3
    echoed = lab.run(g2, [sys.executable, "-c", UDP_ASK, INET, "7", "hello"]).stdout.strip()
    assert echoed == f"hello from {HOST}", "the echo server saw the host's address"
    closed = lab.run(g2, [sys.executable, "-c", UDP_CLOSED, INET, "9"]).stdout.strip()
    assert closed == "ECONNREFUSED", "the port unreachable the host got reached the guest"
    for direction in ([], ["-R"]):
        done = lab.run(g1, ["iperf3", "-c", INET, "-t", "2", "-J", *direction], timeout=60)
        result = json.loads(done.stdout)
        assert result["end"]["sum_received"]["bytes"] > 10_000_000, direction

    rows = daemon.show("conntrack")
    assert any(r["proto"] == "udp" and r["original"].startswith(f"{G2}:")
               and f"-> {HOST}:" in r["reply"] for r in rows), rows
    dump.terminate()
    dump.wait(5)
    sources = lab.run(inet, ["tcpdump", "-n", "-r", str(capture), "src", "not", INET]).stdout
    assert sources and HOST in sources
    assert "10.96.0." not in sources, "no guest address ever reaches the internet"


def test_refused_port_half_close_and_a_gigabyte(lab, egress_lab):
    daemon, host, inet, guests = egress_lab
    g1 = guests["e1"]
    refused = lab.run(g1, [sys.executable, "-c", CONNECT, INET, "9"]).stdout.split()
    assert refused[0] == "refused", refused  # a RST, not a timeout or an ICMP error
    # nobody at 10.95.0.99: the host's connect fails (no ARP answer), the guest gets ICMP
    # host unreachable, which its kernel reports as EHOSTUNREACH
    lost = lab.run(g1, [sys.executable, "-c", CONNECT, "10.95.0.99", "80"], timeout=30).stdout
    assert lost.strip() == "error [Errno 113] No route to host", lost
    # socat's child reads until our FIN, then answers and closes: data after a half-close
    lab.spawn(["socat", f"TCP-LISTEN:7001,bind={INET},reuseaddr",
               "SYSTEM:'cat; echo after-eof'"], ns=inet)
    wait_for(lambda: lab.run(inet, ["ss", "-ltn", "sport = :7001"]).stdout.count("LISTEN"),
             5, "socat to listen")
    answer = lab.run(g1, [sys.executable, "-c", HALF_CLOSE, INET, "7001"]).stdout.strip()
    assert answer == repr(b"first half\nafter-eof\n")
    # 1 GiB each way: from the guest, and to it through a forward (GSO frames toward it)
    sent, received = tcp_transfer(lab, g1, inet, INET, 1 << 30, port=5601)
    assert sent == received and sent.startswith(f"{1 << 30} "), (sent, received)
    request(daemon.socket, "forward", action="add", proto="tcp", port="5602", to=f"{G1}:5602")
    sent, received = tcp_transfer(lab, inet, g1, G1, 1 << 30, port=5602, dial=HOST)
    assert sent == received and sent.startswith(f"{1 << 30} "), (sent, received)


def test_forwards_reach_guest_services_and_change_at_run_time(lab, egress_lab):
    daemon, host, inet, guests = egress_lab
    g1 = guests["e1"]
    serve(lab, g1, BANNER, G1, "22", "ssh")
    serve(lab, g1, UDP_ECHO, G1, "53")
    banner = lab.run(inet, ["socat", "-T", "5", "-", f"TCP:{HOST}:8022"]).stdout.strip()
    assert banner == f"ssh sees {INET}", "the guest sees the real client address"
    echoed = lab.run(inet, [sys.executable, "-c", UDP_ASK, HOST, "8053", "q"]).stdout.strip()
    assert echoed == f"q from {INET}"
    # at run time: add a forward, use it, remove it
    serve(lab, g1, BANNER, G1, "80", "web")
    request(daemon.socket, "forward", action="add", proto="tcp", port="8080", to=f"{G1}:80")
    assert {"proto": "tcp", "port": "8080", "listen": "0.0.0.0", "to": f"{G1}:80"} in \
        daemon.show("forwards")
    assert lab.run(inet, ["socat", "-T", "5", "-", f"TCP:{HOST}:8080"]).stdout.startswith("web")
    with pytest.raises(ControlError, match="10.95.0.1 is not in the guest network"):
        request(daemon.socket, "forward", action="add", proto="tcp", port="8090",
                to="10.95.0.1:80")
    request(daemon.socket, "forward", action="del", proto="tcp", port="8080")
    gone = lab.run(inet, ["socat", "-T", "5", "-", f"TCP:{HOST}:8080"], check=False)
    assert gone.returncode != 0 and "refused" in gone.stderr.lower()
    # IPv6 listen addresses: an IPv6 client appears to the guest as the host address
    lab.run(host, ["sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0"])
    request(daemon.socket, "forward", action="add", proto="tcp", port="8081", to=f"{G1}:80",
            listen="::1")
    request(daemon.socket, "forward", action="add", proto="udp", port="8054", to=f"{G1}:53",
            listen="::1")
    v6 = lab.run(host, ["socat", "-T", "5", "-", "TCP6:[::1]:8081"]).stdout.strip()
    assert v6 == f"web sees {GW}", "the guest sees an IPv6 peer as the host address"
    asked = lab.run(host, ["socat", "-T", "3", "-", "UDP6:[::1]:8054"], input="q6")
    assert asked.stdout == f"q6 from {GW}"


def test_the_host_address_is_the_hosts_loopback(lab, egress_lab):
    daemon, host, inet, guests = egress_lab
    serve(lab, host, BANNER, "127.0.0.1", "9100", "host")
    seen = lab.run(guests["e2"], ["socat", "-T", "5", "-", f"TCP:{GW}:9100"]).stdout.strip()
    assert seen == "host sees 127.0.0.1"
    # the gateway's own services still answer there: DNS on 53 is vswitch's, not the host's
    assert ping(lab, guests["e2"], GW, count=1) == 1
    assert lab.run(guests["e2"], ["socat", "-T", "5", "-", f"TCP:{GW}:9"],
                   check=False).returncode != 0


def test_malformed_traffic_toward_the_host_uplink_is_counted_and_survived(lab, egress_lab):
    """docs/testing.md's IPv4, TCP, UDP, ICMP and fragment lists, 20k frames from a guest toward
    the internet: the daemon lives, counts them, and the guests still get out."""
    from tests.lab.test_router import JUNK

    daemon, host, inet, guests = egress_lab
    ns, dev = guests["e2"], lab.name("e2")
    assert ping(lab, ns, INET, count=1) == 1
    gw_mac = next(r["mac"] for r in daemon.show("fdb") if r["port"] == "gateway")
    lab.run(ns, [sys.executable, "-c", JUNK, dev, gw_mac, INET, G2], timeout=300)
    assert daemon.alive()
    assert ping(lab, ns, INET, count=2) == 2
    refused = lab.run(ns, [sys.executable, "-c", CONNECT, INET, "9"]).stdout.split()
    assert refused[0] == "refused"
    counters = daemon.show("router")
    dropped = sum(v for k, v in counters.items() if k.startswith(("drop-", "malformed")))
    assert dropped > 5000, counters
    assert counters["flows"] < 2000, "junk made few flows, and they expire"


FLOWS = """
import errno, socket, sys
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((sys.argv[1], 7))
    s.settimeout(2)
    s.send(b"x")
    try:
        s.recv(100)
        print("answered")
    except socket.timeout:
        print("timeout")
    except OSError as exc:  # ICMP 3/13 (filtered) is EHOSTUNREACH to the socket (RFC 1122)
        print(errno.errorcode[exc.errno])
    socks.append(s)
"""


def test_a_full_flow_table_refuses_new_flows_and_keeps_the_old(lab, tmp_path):
    """[nat] max_entries bounds the host sockets: beyond it new flows get ICMP 3/13."""
    daemon, inet, guest = one_guest(lab, tmp_path, "[nat]\nmax_entries = 16\nmax_per_guest = 16")
    serve(lab, inet, UDP_ECHO, INET, "7")
    results = lab.run(guest, [sys.executable, "-c", FLOWS, INET, "24"],
                      timeout=120).stdout.split()
    assert results[:16] == ["answered"] * 16 and set(results[16:]) == {"EHOSTUNREACH"}, results
    counters = daemon.show("router")
    assert counters["drop-table-full"] == 8 and counters["flows"] == 16
    assert ping(lab, guest, INET, count=1) == 0, "a new echo flow is refused too"


UDP_GSO_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)  # UDP_SEGMENT: the kernel may hand on one GSO frame
s.sendto(bytes(5000), (sys.argv[1], int(sys.argv[2])))
"""

UDP_SIZES = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(5)
print("listening", flush=True)
sizes = []
try:
    while len(sizes) < 5:
        sizes.append(len(s.recv(65535)))
except socket.timeout:
    pass
print(sizes, flush=True)
"""


def test_udp_gso_from_a_veth_guest_leaves_as_separate_datagrams(lab, tmp_path):
    """A guest behind an attach port (veth, packet socket with virtio-net headers) may send
    one UDP GSO frame for several datagrams (UDP_SEGMENT): the host sends each one."""
    host = lab.netns("eh")
    inet = internet(lab, host)
    guest = lab.netns("eg")
    outer = lab.veth("guest", guest, "eth0", outer_ns=host)
    body = guest_body(lab, tmp_path, {}, f'[[port]]\nname = "va"\ntype = "attach"\n'
                                          f'interface = "{outer}"\n')
    lab.addr(guest, "eth0", f"{G1}/24")  # up first: the attach port is up with its carrier
    lab.run(guest, ["ip", "route", "add", "default", "via", GW])
    Daemon(lab, tmp_path, body, ports_up=2, ns=host)
    receiver = lab.spawn([sys.executable, "-c", UDP_SIZES, INET, "9999"], ns=inet,
                         stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline().strip() == "listening"
    assert ping(lab, guest, INET, count=1) == 1  # ARP for the gateway done
    lab.run(guest, [sys.executable, "-c", UDP_GSO_SEND, INET, "9999"])
    assert receiver.stdout.readline().strip() == "[1000, 1000, 1000, 1000, 1000]"


SINK = """
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # hold little in the kernel
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
print("listening", flush=True)
held = []
while True:
    held.append(srv.accept()[0])  # and never read
"""

STUFF = """
import socket, sys
conns = []
for i in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.settimeout(3)
    sent = 0
    try:
        while sent < 16 << 20:
            sent += s.send(bytes(65536))
    except socket.timeout:
        pass
    conns.append(s)
    print(sent, flush=True)
"""


def test_tcp_buffers_stay_within_the_budget_when_sinks_stop_reading(lab, tmp_path):
    """Rule 6 of nat.egress: six connections to a server that never reads would each hold
    1 MiB toward it; with buffer_mib = 1 they hold about the budget all together, and a new
    connection still works."""
    daemon, inet, guest = one_guest(lab, tmp_path, "[uplink]\nbuffer_mib = 1")
    serve(lab, inet, SINK, INET, "7100")
    serve(lab, inet, BANNER, INET, "7101", "fine")
    sent = lab.run(guest, [sys.executable, "-c", STUFF, INET, "7100", "6"],
                   timeout=120).stdout.split()
    assert len(sent) == 6 and all(int(n) < 16 << 20 for n in sent), "every sink stalled"
    router = daemon.show("router")
    assert router["tcp_buffer_budget"] == 1 << 20
    assert (1 << 20) <= router["tcp_buffered"] <= (2 << 20) + 6 * (64 << 10), router
    reply = lab.run(guest, ["socat", "-T", "5", "-", f"TCP:{INET}:7101"]).stdout
    assert reply.startswith("fine"), "new flows still work"


TRACE = """
import select, socket, struct, sys
for ttl in (1, 2, 3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR: the ICMP error, and who sent it
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.sendto(b"probe", (sys.argv[1], 33434 + ttl))
    poll = select.poll()
    poll.register(s, select.POLLERR)
    if not poll.poll(3000):
        print(ttl, "nothing")
        continue
    _, ancillary, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    for level, kind, value in ancillary:
        if (level, kind) == (socket.IPPROTO_IP, 11):
            _, _, icmp_type, code = struct.unpack_from("=IBBB", value)
            print(ttl, socket.inet_ntoa(value[20:24]), f"{icmp_type}/{code}")
"""


def test_a_udp_traceroute_sees_the_routers_beyond_the_host(lab, egress_lab):
    """The guest's TTL (less the gateway's hop) goes on the host socket, and the ICMP errors
    the host gets come back to the guest from the routers that sent them."""
    daemon, host, inet, guests = egress_lab
    beyond_the_internet(lab, host, inet)
    hops = lab.run(guests["e1"], [sys.executable, "-c", TRACE, "10.99.0.2"]).stdout
    assert hops.splitlines() == [f"1 {GW} 11/0", f"2 {INET} 11/0", "3 10.99.0.2 3/3"], hops


RAW_ECHO = """
import socket, struct, sys
from wire.checksum import internet_checksum
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for seq in range(3):
    body = struct.pack("!BBHHH", 8, 0, 0, int(sys.argv[2]), seq) + b"not the guest's"
    body = body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]
    s.sendto(body, (sys.argv[1], 0))
"""


def test_another_programs_echo_replies_do_not_reach_a_guest(lab, egress_lab):
    """As root the host uplink pings through one raw socket, which hears every echo reply in
    the namespace: one for another program, with the identifier a guest's flow uses, must not
    be passed to that guest."""
    daemon, host, inet, guests = egress_lab
    assert daemon.show("router")["ping"] == "raw"
    assert ping(lab, guests["e1"], INET, count=2) == 2
    (row,) = [r for r in daemon.show("conntrack") if r["proto"] == "icmp"]
    ident = row["reply"].split("host id ")[1]
    lab.run(host, ["env", f"PYTHONPATH={REPO}", sys.executable, "-c", RAW_ECHO, "127.0.0.1",
                   ident], timeout=30)
    time.sleep(0.5)
    (after,) = [r for r in daemon.show("conntrack") if r["proto"] == "icmp"]
    assert after["packets"] == [2, 2], after


def test_ping_errors_come_back_through_the_host_uplink(lab, egress_lab):
    """An echo request's ICMP errors reach the guest's ping: host unreachable for an address
    nobody answers ARP for, and time exceeded from a router beyond the host for ping -t 2."""
    daemon, host, inet, guests = egress_lab
    beyond_the_internet(lab, host, inet)
    g1 = guests["e1"]
    assert ping(lab, g1, "10.99.0.2", count=1) == 1, "two routers away, reachable"
    expired = lab.run(g1, ["ping", "-n", "-c", "1", "-W", "3", "-t", "2", "10.99.0.2"],
                      check=False).stdout
    assert f"From {INET} icmp_seq=1 Time to live exceeded" in expired, expired
    lost = lab.run(g1, ["ping", "-n", "-c", "1", "-W", "6", "10.95.0.99"], check=False).stdout
    assert "Destination Host Unreachable" in lost, lost


def test_fragmented_datagrams_from_guests_are_reassembled_for_the_host_socket(lab, egress_lab):
    """A host socket sends whole datagrams only: the guest's fragments (MTU 1500) of a 4000-byte
    ping and a 6000-byte UDP datagram are reassembled (nat.reassembly), the host's kernel
    fragments them again toward the internet, and the answers come back in fragments.  The
    same to the gateway itself, and to the host's loopback through the host address (the
    router port reassembles before it knows whose the datagram is)."""
    daemon, host, inet, guests = egress_lab
    g1 = guests["e1"]
    serve(lab, inet, UDP_ECHO, INET, "7")
    serve(lab, host, UDP_ECHO, "127.0.0.1", "7")
    message = "x" * 6000
    for target, seen in ((INET, HOST), (GW, "127.0.0.1")):
        big = lab.run(g1, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-M", "dont", "-s",
                           "4000", target], check=False).stdout
        assert "3 received" in big and "4008 bytes from" in big, (target, big)
        echoed = lab.run(g1, [sys.executable, "-c", UDP_ASK, target, "7", message]).stdout
        assert echoed.strip() == f"{message} from {seen}", target
    router = daemon.show("router")
    assert router["reassembly-reassembled"] >= 4, router
    assert router.get("reassembly-overlap", 0) == 0 and router.get("malformed", 0) == 0
    gateway = next(p for p in daemon.show("ports") if p["type"] == "router")
    assert not gateway["drops"], gateway


HALF_A_DATAGRAM = """
import socket, sys, time
from scapy.layers.inet import IP, UDP
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp.settimeout(10)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
first = IP(src=sys.argv[1], dst=sys.argv[2], id=4242, flags="MF") / UDP(sport=4000, dport=7)
raw.sendto(bytes(first / bytes(1472)), (sys.argv[2], 0))
start = time.monotonic()
while True:
    data = icmp.recv(2000)
    ihl = (data[0] & 15) * 4
    if data[ihl] == 11:
        quoted = data[ihl + 8:]
        print(data[ihl], data[ihl + 1], socket.inet_ntoa(data[12:16]),
              int.from_bytes(quoted[4:6], "big"), round(time.monotonic() - start))
        break
"""


def test_a_datagram_missing_fragments_times_out_with_icmp_time_exceeded(lab, tmp_path):
    """nat.reassembly Rule R4: the first fragment alone, then `[nat] fragments` seconds later
    ICMP 11/1 quoting it, from the gateway for a datagram to the internet (the host uplink
    reassembles) and for one to the gateway itself (the router port does); nothing reached the
    internet."""
    daemon, inet, guest = one_guest(lab, tmp_path, "[nat]\nfragments = 2")
    for target in (INET, GW):
        answer = lab.run(guest, ["env", f"PYTHONPATH={REPO}", sys.executable, "-c",
                                 HALF_A_DATAGRAM, G1, target], timeout=30).stdout.split()
        icmp_type, code, source, ident, seconds = answer
        assert (icmp_type, code, source, ident) == ("11", "1", GW, "4242"), (target, answer)
        assert 1 <= int(seconds) <= 4, answer
    counters = daemon.show("router")
    assert counters["reassembly-timeout"] == 1 and counters.get("reassembly-reassembled", 0) == 0
    assert counters["gateway-reassembly-timeout"] == 1
    assert daemon.show("conntrack") == [], "no flow was opened for half a datagram"
    snmp = lab.run(inet, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    udp = dict(zip(*(line.split()[1:] for line in snmp if line.startswith("Udp:")), strict=True))
    assert udp["InDatagrams"] == "0" and udp["NoPorts"] == "0", "nothing reached the internet"
