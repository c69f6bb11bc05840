"""Forwards to an IPv6 guest on the host uplink (nat.egress.forwards): a namespace guest takes
its SLAAC address from the gateway's advertisements, and ports the host listens on, IPv4 or
IPv6, reach its services on that address.

  guest namespace (SLAAC in PREFIX/64) -- vswitch, running in namespace H
  H: eth0 fd0e:97::1/64 -- veth -- internet namespace I: eth0 fd0e:97::2/64 (an IPv6 client)

How peers appear to the guest: an IPv6 peer as itself, the host's ::1 and every IPv4 (or
IPv4-mapped) peer as the gateway's IPv6 address.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.test_host_egress import UDP_ASK, UDP_ECHO, serve
from tests.lab.test_ipv6 import PREFIX, global_addresses
from tests.support import Daemon
from vswitch.control import request
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
GUEST_MAC = "52:54:00:77:f6:10"
#: The guest's SLAAC address: the prefix and the modified EUI-64 of GUEST_MAC (RFC 4291 2.5.1)
GUEST6 = str(ipaddress.IPv6Address(PREFIX) + 0x5054_00ff_fe77_f610)
GATEWAY6 = f"{PREFIX}1"
HOST6, INET6 = "fd0e:97::1", "fd0e:97::2"
MIB = 1 << 20

#: In the guest: each connection is told the peer it comes from, then echoed back until EOF.
ECHO_SERVER = """
import socket, sys, threading
srv = socket.create_server((sys.argv[1], int(sys.argv[2])), family=socket.AF_INET6)
print("listening", flush=True)
def serve(conn, peer):
    with conn:
        conn.sendall(f"sees {peer[0]}\\n".encode())
        while data := conn.recv(1 << 16):
            conn.sendall(data)
while True:
    conn, peer = srv.accept()
    threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
"""

#: Sends N bytes while reading the echo, half-closes, and prints what the server saw and
#: whether the bytes came back whole: "sees ADDRESS LENGTH SAME".
ECHO_CLIENT = """
import hashlib, socket, sys, threading
data = hashlib.sha256(b"vswitch").digest() * (int(sys.argv[3]) // 32)
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
def send():
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
sender = threading.Thread(target=send)
sender.start()
got = bytearray()
while chunk := conn.recv(1 << 16):
    got += chunk
sender.join()
head, _, body = bytes(got).partition(b"\\n")
print(head.decode(), len(body), hashlib.sha256(body).digest() == hashlib.sha256(data).digest())
"""


@pytest.fixture
def forward6_lab(lab, tmp_path):
    """vswitch in a host namespace with forwards to the guest's SLAAC address from the config:
    TCP on 127.0.0.1:8022 and on [::]:8222 (dual stack), UDP on 127.0.0.1:8053."""
    host, inet, guest = lab.netns("f6h"), lab.netns("f6i"), lab.netns("f6g")
    lab.veth("eth0", inet, "eth0", outer_ns=host)
    for ns, address in ((host, HOST6), (inet, INET6)):
        lab.run(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0",
                     "net.ipv6.conf.lo.disable_ipv6=0"])
        lab.run(ns, ["ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad"])
        lab.run(ns, ["ip", "link", "set", "eth0", "up"])
    dev = lab.name("f6")
    body = f"""
[switch]
name = "f{lab.tag}"
[network]
subnet = "10.98.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
[dns]
forwarders = []
[[forward]]
proto = "tcp"
port = 8022
to = "[{GUEST6}]:22"
listen = "127.0.0.1"
[[forward]]
proto = "tcp"
port = 8222
to = "[{GUEST6}]:22"
listen = "::"
[[forward]]
proto = "udp"
port = 8053
to = "[{GUEST6}]:53"
listen = "127.0.0.1"
[[port]]
name = "{dev}"
type = "internal"
netns = "{guest}"
"""
    daemon = Daemon(lab, tmp_path, body, ports_up=2, ns=host)
    try:
        lab.run(guest, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0",
                        f"net.ipv6.conf.{dev}.accept_ra=2",
                        f"net.ipv6.conf.{dev}.addr_gen_mode=0",  # EUI-64: GUEST6
                        f"net.ipv6.conf.{dev}.use_tempaddr=0"])
        lab.run(guest, ["ip", "link", "set", dev, "address", GUEST_MAC])
        lab.run(guest, ["ip", "link", "set", dev, "up"])
        wait_for(lambda: ipaddress.IPv6Address(GUEST6) in global_addresses(lab, guest, dev), 30,
                 f"the guest's SLAAC address {GUEST6}")
        wait_for(lambda: "default" in lab.run(guest, ["ip", "-6", "route", "show",
                                                      "default"]).stdout, 10,
                 "the guest's default route from the advertisement")
        yield daemon, host, inet, guest
    finally:
        daemon.stop()


def cli(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``vswitch ARGS --socket ...``, as a user types it."""
    return subprocess.run([sys.executable, "-m", "vswitch.cli", *args, "--socket",
                           daemon.socket], capture_output=True, text=True, check=check,
                          cwd=REPO, timeout=30)


def echo(lab, ns: str, address: str, port: int, nbytes: int = MIB) -> str:
    return lab.run(ns, [sys.executable, "-c", ECHO_CLIENT, address, str(port), str(nbytes)],
                   timeout=120).stdout.strip()


def test_tcp_forwards_to_an_ipv6_guest_from_ipv4_and_ipv6_peers(lab, forward6_lab):
    daemon, host, inet, guest = forward6_lab
    serve(lab, guest, ECHO_SERVER, GUEST6, "22")
    whole = f"{MIB} True"
    # from the config, listening on IPv4: the IPv4 peer appears as the gateway's IPv6 address
    assert echo(lab, host, "127.0.0.1", 8022) == f"sees {GATEWAY6} {whole}"
    # a dual-stack listener: a real IPv6 peer appears as itself, an IPv4 one (v4-mapped on
    # the socket) as the gateway
    assert echo(lab, inet, HOST6, 8222) == f"sees {INET6} {whole}"
    assert echo(lab, host, "127.0.0.1", 8222) == f"sees {GATEWAY6} {whole}"
    # added at run time by the CLI, listening on ::1: the host's loopback is the gateway
    added = cli(daemon, "forward", "add", "tcp", "8122", f"[{GUEST6}]:22", "--listen", "::1")
    assert f"-> [{GUEST6}]:22" in added.stdout, added.stdout
    assert {"proto": "tcp", "port": "8122", "listen": "::1", "to": f"[{GUEST6}]:22"} in \
        daemon.show("forwards")
    assert f"[{GUEST6}]:22" in cli(daemon, "show", "forwards").stdout
    assert echo(lab, host, "::1", 8122) == f"sees {GATEWAY6} {whole}"
    rows = [r for r in daemon.show("conntrack")
            if r["proto"] == "tcp" and r["kind"] == "host-forward"]
    originals = {r["original"] for r in rows}
    assert f"[{GUEST6}]:22 -> [{INET6}]:" in " ".join(originals), rows
    assert sum(f"[{GUEST6}]:22 -> [{GATEWAY6}]:" in o for o in originals) == 3, rows
    # removed: the listening socket is gone, new connections are refused
    removed = cli(daemon, "forward", "remove", "tcp", "8122", "--listen", "::1")
    assert "removed" in removed.stdout, removed.stdout
    assert all(f["port"] != "8122" for f in daemon.show("forwards"))
    gone = lab.run(host, [sys.executable, "-c", ECHO_CLIENT, "::1", "8122", "32"], check=False)
    assert gone.returncode != 0 and "ConnectionRefusedError" in gone.stderr, gone.stderr
    assert echo(lab, host, "127.0.0.1", 8022, 32) == f"sees {GATEWAY6} 32 True", \
        "the other forwards go on"
    # a guest outside the prefix, or an IPv6 guest by a bracket-less address, is refused
    bad = cli(daemon, "forward", "add", "tcp", "8123", "[fd43::10]:22", check=False)
    assert bad.returncode != 0 and "not a host address of network.subnet6" in bad.stderr, \
        (bad.stdout, bad.stderr)
    assert daemon.alive()


def test_udp_forwards_echo_through_an_ipv6_guest(lab, forward6_lab):
    daemon, host, inet, guest = forward6_lab
    serve(lab, guest, UDP_ECHO, GUEST6, "53")
    out = lab.run(host, [sys.executable, "-c", UDP_ASK, "127.0.0.1", "8053", "q4"]).stdout
    assert out.strip() == f"q4 from {GATEWAY6}", out  # the guest's answer left by the forward
    request(daemon.socket, "forward", action="add", proto="udp", port="8153",
            to=f"[{GUEST6}]:53", listen="::1")
    out = lab.run(host, [sys.executable, "-c", UDP_ASK, "::1", "8153", "q6"]).stdout
    assert out.strip() == f"q6 from {GATEWAY6}", out
    request(daemon.socket, "forward", action="add", proto="udp", port="8253",
            to=f"[{GUEST6}]:53", listen="::")
    out = lab.run(inet, [sys.executable, "-c", UDP_ASK, HOST6, "8253", "far"]).stdout
    assert out.strip() == f"far from {INET6}", out
    rows = [r for r in daemon.show("conntrack")
            if r["proto"] == "udp" and r["kind"] == "host-forward"]
    assert any(r["reply"].startswith(f"[{GUEST6}]:53 -> [{GATEWAY6}]:")
               and r["original"].startswith("127.0.0.1:") for r in rows), rows
    assert any(r["reply"].startswith(f"[{GUEST6}]:53 -> [{INET6}]:")
               and r["original"].startswith(f"[{INET6}]:") for r in rows), rows
    assert all(r["packets"][1] >= 1 for r in rows), rows  # each one answered
