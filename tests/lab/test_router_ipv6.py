"""IPv6 through the raw uplink, against an "internet" namespace: NAT66 (only the uplink's
address shows outside), ICMPv6 errors translated back, an IPv6 forward through NAT66, route
mode (the guest's own address shows), and the uplink's own IPv6 address by SLAAC and by
DHCPv6 from dnsmasq in the internet namespace."""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.test_ipv6 import global_addresses
from tests.lab.test_router import capture, curl, stop
from tests.support import Daemon
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

PREFIX, INET6, UPLINK6 = "fd42:0:0:9::", "fd94::1", "fd94::2"
GUEST_MAC = "52:54:00:79:00:10"
UDP_ECHO6 = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data + ("|" + peer[0]).encode(), peer)
"""
UDP_ASK6 = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"hello")
try:
    print(s.recv(65535).decode())
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""
TCP_SINK6 = """
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, peer = s.accept()
h, n = hashlib.sha256(), 0
while True:
    data = c.recv(1 << 16)
    if not data:
        break
    h.update(data)
    n += len(data)
c.sendall(f"{n} {h.hexdigest()} {peer[0]}".encode())
c.close()
"""
TCP_SEND6 = """
import socket, sys
data = bytes(range(256)) * (int(sys.argv[3]) // 256)
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
print(c.recv(4096).decode())
"""


def raw6_lab(lab, tmp: Path, mode: str = "nat", uplink6: str = "", extra: str = "",
             inet_setup=None):
    """vswitch with a raw uplink into an internet namespace that has ``INET6``/64, and one
    SLAAC guest on an internal port."""
    inet = lab.netns("i6")
    up = lab.veth(lab.name("u6"), inet, "eth0")
    lab.addr(inet, "eth0", "10.254.6.1/24")  # (it turns IPv6 off: on again after it)
    lab.run(inet, ["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0",
                   "net.ipv6.conf.all.forwarding=1"])
    lab.run(inet, ["ip", "-6", "addr", "add", f"{INET6}/64", "dev", "eth0", "nodad"])
    if inet_setup is not None:
        inet_setup(inet)
    ns, dev = lab.netns("g9"), lab.name("g9")
    uplink6 = uplink6 or f'address6 = "{UPLINK6}/64"\ngateway6 = "{INET6}"'
    body = f"""
[switch]
name = "x{lab.tag}"
[network]
mode = "{mode}"
subnet = "10.79.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp}/leases"
[dns]
forwarders = []
[uplink]
type = "raw"
interface = "{up}"
address = "10.254.6.2/24"
gateway = "10.254.6.1"
mac = "52:54:00:94:00:02"
{uplink6}
{extra}
[[port]]
name = "{dev}"
type = "internal"
netns = "{ns}"
"""
    daemon = Daemon(lab, tmp, body)
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_ra=2",
                 f"net.ipv6.conf.{dev}.disable_ipv6=0"])
    lab.run(ns, ["ip", "link", "set", dev, "address", GUEST_MAC])
    lab.run(ns, ["ip", "link", "set", dev, "up"])
    prefix = ipaddress.IPv6Network(f"{PREFIX}/64")
    wait_for(lambda: any(a in prefix for a in global_addresses(lab, ns, dev)), 30,
             "the guest's SLAAC address")
    wait_for(lambda: "default" in lab.run(ns, ["ip", "-6", "route"]).stdout, 10,
             "the guest's default route")
    guest = next(a for a in global_addresses(lab, ns, dev) if a in prefix)
    return daemon, inet, ns, str(guest)


def serve_http6(lab, ns: str, addr: str, port: int):
    proc = lab.spawn([sys.executable, "-m", "http.server", str(port), "--bind", addr], ns=ns,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: f"[{addr}]:{port}" in lab.run(ns, ["ss", "-Hltn"]).stdout, 10,
             "http server")
    return proc


def udp_echo(lab, ns: str, addr: str, port: int):
    proc = lab.spawn([sys.executable, "-c", UDP_ECHO6, addr, str(port)], ns=ns,
                     stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def ask(lab, ns: str, addr: str, port: int) -> str:
    return lab.run(ns, [sys.executable, "-c", UDP_ASK6, addr, str(port)], timeout=20,
                   check=False).stdout.strip()


def sink(lab, ns: str, addr: str, port: int):
    proc = lab.spawn([sys.executable, "-c", TCP_SINK6, addr, str(port)], ns=ns,
                     stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def send(lab, ns: str, addr: str, port: int, nbytes: int) -> list[str]:
    out = lab.run(ns, [sys.executable, "-c", TCP_SEND6, addr, str(port), str(nbytes)],
                  timeout=60, check=False)
    return out.stdout.split() or [out.stderr]


def expected(nbytes: int) -> str:
    return hashlib.sha256(bytes(range(256)) * (nbytes // 256)).hexdigest()


def test_nat66_only_the_uplink_address_shows_outside(lab, tmp_path):
    daemon, inet, ns, guest = raw6_lab(lab, tmp_path)
    seen = capture(lab, inet, "eth0", "ip6 and not icmp6")
    serve_http6(lab, inet, INET6, 8081)
    udp_echo(lab, inet, INET6, 7777)
    assert curl(lab, ns, f"http://[{INET6}]:8081/") == "200"
    assert ask(lab, ns, INET6, 7777) == f"hello|{UPLINK6}"
    done = lab.run(ns, ["ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2", INET6],
                   check=False)
    assert " 0% packet loss" in done.stdout, done.stdout
    nbytes = 4 << 20  # TSO super-frames out, GRO'd ones in: whole and in order
    sink(lab, inet, INET6, 9000)
    assert send(lab, ns, INET6, 9000, nbytes) == [str(nbytes), expected(nbytes), UPLINK6]
    lines = stop(seen)
    assert lines and all(guest not in line and PREFIX not in line for line in lines), lines
    assert any(f"{UPLINK6}." in line for line in lines), lines
    rows = daemon.show("conntrack")
    assert any(guest in r["original"] and UPLINK6 in r["reply"] for r in rows), rows


def test_nat66_icmpv6_errors_come_back_translated(lab, tmp_path):
    daemon, inet, ns, guest = raw6_lab(lab, tmp_path)
    # nothing listens on 7778 in the internet: its port unreachable reaches the guest
    assert ask(lab, ns, INET6, 7778) == "refused"
    # the internet has no route to fd95::/64: its no-route error comes back through the
    # echo flow it quotes
    out = lab.run(ns, ["ping", "-6", "-n", "-c", "1", "-W", "2", "fd95::9"], check=False).stdout
    assert f"From {INET6}" in out and "Destination unreachable" in out, out
    # hop limit 1 ends at the router
    out = lab.run(ns, ["ping", "-6", "-n", "-c", "1", "-W", "2", "-t", "1", "fd95::9"],
                  check=False).stdout
    assert f"From {PREFIX}1" in out and "Time exceeded" in out, out


def test_an_ipv6_forward_reaches_a_guest_through_nat66(lab, tmp_path):
    extra = f'\n[[forward]]\nproto = "udp"\nport = 5353\nto = "[{PREFIX}10]:5353"\n'
    daemon, inet, ns, guest = raw6_lab(lab, tmp_path, extra=extra)
    dev = lab.name("g9")
    lab.run(ns, ["ip", "-6", "addr", "add", f"{PREFIX}10/64", "dev", dev, "nodad"])
    udp_echo(lab, ns, f"{PREFIX}10", 5353)
    assert ask(lab, inet, UPLINK6, 5353) == f"hello|{INET6}"


def test_route_mode_keeps_the_guests_ipv6_address(lab, tmp_path):
    def routed(inet: str) -> None:
        lab.run(inet, ["ip", "-6", "route", "add", f"{PREFIX}/64", "via", UPLINK6])

    daemon, inet, ns, guest = raw6_lab(lab, tmp_path, mode="route", inet_setup=routed)
    udp_echo(lab, inet, INET6, 7777)
    assert ask(lab, ns, INET6, 7777) == f"hello|{guest}"
    # and the internet reaches the guest's own address
    udp_echo(lab, ns, guest, 6000)
    assert ask(lab, inet, guest, 6000) == f"hello|{INET6}"


@pytest.mark.parametrize("how", ["slaac", "dhcp"])
def test_the_uplink_takes_its_ipv6_address_from_the_internet(lab, tmp_path, how):
    """dnsmasq in the internet namespace advertises fd94::/64: with ``address6 = "slaac"``
    the uplink forms its address from its MAC, with ``"dhcp"`` it leases one of the range."""
    def advertise(inet: str) -> None:
        mode = "slaac" if how == "slaac" else "64,1h"
        first = "fd94::" if how == "slaac" else "fd94::100,fd94::1ff"
        lab.spawn(["dnsmasq", "-k", "-i", "eth0", "--bind-interfaces", "--port=0",
                   "--enable-ra", f"--dhcp-range={first},{mode}",
                   f"--dhcp-leasefile={tmp_path}/inet.leases",
                   f"--pid-file={tmp_path}/inet.pid"],
                  ns=inet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    daemon, inet, ns, guest = raw6_lab(lab, tmp_path, uplink6=f'address6 = "{how}"',
                                       inet_setup=advertise)
    udp_echo(lab, inet, INET6, 7777)

    def answer() -> str:
        return ask(lab, ns, INET6, 7777)

    try:
        wait_for(lambda: answer().startswith("hello|fd94::"), 40, "the uplink's IPv6 address")
    except TimeoutError as exc:
        raise AssertionError(daemon.show("router").get("uplink6")) from exc
    shown = ipaddress.IPv6Address(answer().split("|")[1])
    if how == "dhcp":
        assert ipaddress.IPv6Address("fd94::100") <= shown <= ipaddress.IPv6Address("fd94::1ff")
    else:  # the modified EUI-64 of the uplink's MAC (RFC 4291 2.5.1)
        assert shown == ipaddress.IPv6Address("fd94::5054:ff:fe94:2")
