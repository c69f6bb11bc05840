"""IPv6 on the guest network with real kernels: a namespace guest takes a SLAAC address from
the gateway's router advertisements and a default route via its link-local address, rdisc6
reads the advertisement's flags, RDNSS and DNSSL, and ping6 reaches the gateway; a second
guest's own router advertisements and DHCPv6 replies never reach it (RFC 6105 guard)."""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.test_host_egress import UDP_ASK, UDP_ECHO, serve
from tests.support import Daemon
from vswitch.lab import sh, wait_for

pytestmark = pytest.mark.privileged

PREFIX = "fd42:0:0:7::"
SIX_MAC = "52:54:00:77:00:66"
UPSTREAM_NET = "fd0e:99::"
REPO = Path(__file__).resolve().parents[2]
SCRIPT6 = str(REPO / "tests/peers/dhclient6.script")
ROGUE_RA = """
import sys, time
from scapy.all import (Ether, IPv6, ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr,
                       UDP, Raw, sendp, get_if_hwaddr)
dev = sys.argv[1]
mac = get_if_hwaddr(dev)
ra = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::bad", dst="ff02::1", hlim=255)
      / ICMPv6ND_RA(routerlifetime=9000) / ICMPv6NDOptSrcLLAddr(lladdr=mac)
      / ICMPv6NDOptPrefixInfo(prefix="fd99::", prefixlen=64, L=1, A=1))
reply = (Ether(src=mac, dst="33:33:00:01:00:02") / IPv6(src="fe80::bad", dst="ff02::1:2")
         / UDP(sport=547, dport=546) / Raw(b"\\x07" + bytes(3)))
for _ in range(5):
    sendp([ra, reply], iface=dev, verbose=0)
    time.sleep(0.3)
"""


@pytest.fixture
def v6_guests(lab, tmp_path):
    """A guest on an internal port, and a rogue guest behind a veth on an attach port."""
    ns, rogue_ns, up_ns = lab.netns("g6"), lab.netns("r6"), lab.netns("u6")
    dev, outer = lab.name("v6"), lab.name("r6o")
    lab.veth(outer, rogue_ns, "eth0")
    # an IPv6-only DNS upstream, reached from the host (where vswitch's sockets are)
    root = lab.veth(lab.name("u6o"), up_ns, "eth0")
    sh(["sysctl", "-qw", f"net.ipv6.conf.{root}.disable_ipv6=0"])  # Lab.veth turns it off
    sh(["ip", "-6", "addr", "add", f"{UPSTREAM_NET}1/64", "dev", root, "nodad"])
    lab.run(up_ns, ["ip", "-6", "addr", "add", f"{UPSTREAM_NET}2/64", "dev", "eth0", "nodad"])
    lab.run(up_ns, ["ip", "link", "set", "eth0", "up"])
    upstream = lab.spawn([sys.executable, "-m", "tests.peers.dns_upstream", f"{UPSTREAM_NET}2"],
                         ns=up_ns, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert upstream.stdout.readline().strip() == "ready"
    body = f"""
[switch]
name = "s{lab.tag}"
[network]
subnet = "10.77.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
[[dhcp.host]]
mac = "{SIX_MAC}"
ip = "10.77.0.66"
name = "six"
ip6 = "{PREFIX}66"
[dns]
domain = "six.internal"
forwarders = ["[{UPSTREAM_NET}2]:53"]
[[port]]
name = "{dev}"
type = "internal"
netns = "{ns}"
[[port]]
name = "rogue"
type = "attach"
interface = "{outer}"
"""
    daemon = Daemon(lab, tmp_path, body)
    lab.run(rogue_ns, ["ip", "link", "set", "eth0", "up"])
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_ra=2",
                 f"net.ipv6.conf.{dev}.disable_ipv6=0"])
    lab.run(ns, ["ip", "link", "set", dev, "address", SIX_MAC])
    lab.run(ns, ["ip", "link", "set", dev, "up"])
    wait_for(lambda: daemon.up_count() == 3, 10, "three ports up")
    yield daemon, ns, dev, rogue_ns
    daemon.stop()


def global_addresses(lab, ns: str, dev: str) -> list[ipaddress.IPv6Address]:
    out = lab.run(ns, ["ip", "-j", "-6", "addr", "show", "dev", dev]).stdout
    return [ipaddress.IPv6Address(a["local"]) for i in json.loads(out) for a in i["addr_info"]
            if a.get("scope") == "global" and "tentative" not in a]


def take_slaac(lab, ns: str, dev: str) -> None:
    """Bring a guest's port up with IPv6 and router advertisements on; wait for its SLAAC
    address in PREFIX."""
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_ra=2",
                 f"net.ipv6.conf.{dev}.disable_ipv6=0"])
    lab.run(ns, ["ip", "link", "set", dev, "up"])
    prefix = ipaddress.IPv6Network(f"{PREFIX}/64")
    wait_for(lambda: any(a in prefix for a in global_addresses(lab, ns, dev)), 30,
             "a SLAAC address")


def test_a_guest_takes_slaac_and_a_default_route_from_the_advertisement(lab, v6_guests):
    daemon, ns, dev, _ = v6_guests
    prefix = ipaddress.IPv6Network(f"{PREFIX}/64")
    wait_for(lambda: any(a in prefix for a in global_addresses(lab, ns, dev)), 30,
             "a SLAAC address in the prefix")
    route = lab.run(ns, ["ip", "-6", "route", "show", "default"]).stdout
    assert re.search(r"default via fe80::5054:ff:fe[0-9a-f:]+ dev " + re.escape(dev), route), \
        route
    out = lab.run(ns, ["rdisc6", "-1", "-w", "3000", dev], timeout=30).stdout
    assert re.search(r"Stateful address conf\.\s*:\s*No", out), out
    assert re.search(r"Stateful other conf\.\s*:\s*Yes", out), out
    assert re.search(r"Router lifetime\s*:\s*1800", out), out
    assert re.search(r"Prefix\s*:\s*fd42:0:0:7::/64", out), out
    assert re.search(r"Recursive DNS server\s*:\s*fd42:0:0:7::1", out), out
    assert re.search(r"DNS search list\s*:\s*six\.internal", out), out
    assert re.search(r"MTU\s*:\s*1500", out), out
    done = lab.run(ns, ["ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "2",
                        f"{PREFIX}1"], check=False)
    assert " 0% packet loss" in done.stdout, done.stdout


def test_a_guest_cannot_advertise_itself_as_the_router(lab, v6_guests):
    daemon, ns, dev, rogue_ns = v6_guests
    prefix = ipaddress.IPv6Network(f"{PREFIX}/64")
    wait_for(lambda: any(a in prefix for a in global_addresses(lab, ns, dev)), 30,
             "the guest's own SLAAC address first")
    lab.run(rogue_ns, [sys.executable, "-c", ROGUE_RA, "eth0"], timeout=30)
    time.sleep(1)  # what got through would be configured by now
    rogue_prefix = ipaddress.IPv6Network("fd99::/64")
    assert not any(a in rogue_prefix for a in global_addresses(lab, ns, dev))
    routes = lab.run(ns, ["ip", "-6", "route", "show", "default"]).stdout
    assert "fe80::bad" not in routes, routes
    drops = daemon.port("rogue")["drops"]
    assert drops.get("ra-guard", 0) >= 10, drops  # 5 advertisements, 5 DHCPv6 replies


def test_guests_names_resolve_to_their_ipv6_addresses_over_ipv6(lab, v6_guests):
    daemon, ns, dev, _ = v6_guests
    prefix = ipaddress.IPv6Network(f"{PREFIX}/64")
    wait_for(lambda: any(a in prefix for a in global_addresses(lab, ns, dev)), 30,
             "a SLAAC address")
    slaac = next(a for a in global_addresses(lab, ns, dev) if a in prefix)
    # talking to the gateway from its SLAAC address teaches the gateway that address
    lab.run(ns, ["ping", "-6", "-n", "-c", "1", "-W", "2", "-I", str(slaac), f"{PREFIX}1"])

    def aaaa() -> set[ipaddress.IPv6Address]:
        out = lab.run(ns, ["dig", "+short", "+tries=1", "+time=2", "AAAA",
                           "six.six.internal", f"@{PREFIX}1"]).stdout
        return {ipaddress.IPv6Address(x) for x in out.split()}

    wait_for(lambda: aaaa() == {ipaddress.IPv6Address(f"{PREFIX}66"), slaac}, 10,
             "the static ip6 and the SLAAC address in the AAAA answer")
    out = lab.run(ns, ["dig", "+short", "+tries=1", "-x", str(slaac), f"@{PREFIX}1"]).stdout
    assert out.strip() == "six.six.internal.", out
    out = lab.run(ns, ["dig", "+short", "+tries=1", "A", "six.six.internal",
                       f"@{PREFIX}1"]).stdout
    assert out.strip() == "10.77.0.66", out
    out = lab.run(ns, ["dig", "+short", "+tries=2", "+time=3", "A", "www.example.test",
                       f"@{PREFIX}1"]).stdout
    assert out.strip() == "203.0.113.7", out  # forwarded to the IPv6 upstream
    out = lab.run(ns, ["dig", "+short", "+tries=2", "+time=3", "AAAA", "www.example.test",
                       f"@{PREFIX}1"]).stdout
    assert out.strip() == "2001:db8::7", out  # an AAAA forwarded to it too


@pytest.fixture
def dhcp6_guest(lab, tmp_path):
    """A guest on a network with stateful DHCPv6 (range6) and a static host's ip6."""
    ns, dev = lab.netns("d6"), lab.name("d6")
    # clients in the namespace see a resolv.conf of their own (ip netns exec binds it), so
    # nothing they do reaches the host's
    etc = Path(f"/etc/netns/{ns}")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {PREFIX}1\n")
    lab.files.append(etc / "resolv.conf")
    lab.dirs.append(etc)
    lab.files += [Path(f"/var/lib/dhcpcd/{dev}.lease6"), Path(f"/run/dhcpcd/{dev}.pid")]
    host_resolv = Path("/etc/resolv.conf").read_bytes()
    body = f"""
[switch]
name = "d{lab.tag}"
[network]
subnet = "10.78.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
range6 = ["{PREFIX}100", "{PREFIX}1ff"]
[[dhcp.host]]
mac = "{SIX_MAC}"
ip = "10.78.0.66"
name = "six"
ip6 = "{PREFIX}66"
[dns]
domain = "six.internal"
forwarders = []
[[port]]
name = "{dev}"
type = "internal"
netns = "{ns}"
"""
    daemon = Daemon(lab, tmp_path, body, ports_up=2)
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0",
                 f"net.ipv6.conf.{dev}.accept_ra=2"])
    lab.run(ns, ["ip", "link", "set", dev, "up"])

    def link_local_ready() -> bool:
        out = lab.run(ns, ["ip", "-6", "addr", "show", "dev", dev, "scope", "link"]).stdout
        return "fe80" in out and "tentative" not in out

    wait_for(link_local_ready, 10, "the guest's link-local address")
    yield daemon, ns, dev, tmp_path
    daemon.stop()
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv, "the host's resolv.conf changed"


def leases6(daemon) -> dict[str, dict]:
    return {r["ip"]: r for r in daemon.show("leases") if r.get("protocol") == "ipv6"}


def test_dhclient_leases_releases_and_takes_again_an_address_from_range6(lab, dhcp6_guest):
    """(RENEW and REBIND are unit-tested: dhclient renews only at T1, half the lease.)"""
    daemon, ns, dev, tmp = dhcp6_guest
    files = ["-lf", f"{tmp}/dhclient6.leases", "-pf", f"{tmp}/dhclient6.pid", "-sf", SCRIPT6]
    lab.run(ns, ["dhclient", "-6", "-1", "-v", *files, dev], timeout=60)
    held = leases6(daemon)
    assert len(held) == 1, held
    (address,) = held
    first, last = ipaddress.IPv6Address(f"{PREFIX}100"), ipaddress.IPv6Address(f"{PREFIX}1ff")
    assert first <= ipaddress.IPv6Address(address) <= last
    configured = lab.run(ns, ["ip", "-6", "addr", "show", "dev", dev]).stdout
    assert address in configured, configured
    lab.run(ns, ["dhclient", "-6", "-r", "-v", *files, dev], timeout=60)
    wait_for(lambda: address not in leases6(daemon), 10, "the release")
    # taken again, it is the same address (from the DUID and IAID), and in the journal
    lab.run(ns, ["dhclient", "-6", "-1", "-v", *files, dev], timeout=60)
    assert list(leases6(daemon)) == [address]
    lines = [json.loads(x) for x in (tmp / "leases").read_text().splitlines()]
    assert any(x.get("ip") == address and not x.get("free") for x in lines), lines


def test_a_static_host_gets_its_ip6_and_dhcpcd_takes_a_lease(lab, dhcp6_guest):
    daemon, ns, dev, tmp = dhcp6_guest
    lab.run(ns, ["ip", "link", "set", dev, "address", SIX_MAC])
    files = ["-lf", f"{tmp}/static.leases", "-pf", f"{tmp}/static.pid", "-sf", SCRIPT6]
    lab.run(ns, ["dhclient", "-6", "-1", "-v", *files, dev], timeout=60)
    assert f"{PREFIX}66" in leases6(daemon)
    lab.run(ns, ["dhclient", "-6", "-r", *files, dev], timeout=60)
    lab.run(ns, ["ip", "link", "set", dev, "address", "52:54:00:77:00:99"])
    # -c /bin/true: no hook scripts (they would write the host's resolv.conf and more)
    done = lab.run(ns, ["dhcpcd", "--ipv6only", "--oneshot", "--nobackground", "-t", "30",
                        "--noipv6rs", "--ia_na", "1", "-f", "/dev/null", "-c", "/bin/true",
                        dev], timeout=60, check=False)
    ours = [r for r in leases6(daemon).values() if r["mac"] == "52:54:00:77:00:99"]
    assert ours, (done.stdout, done.stderr, daemon.show("dhcp"))


def test_guests_ipv6_udp_ping_and_tcp_leave_by_the_hosts_sockets(lab, tmp_path):
    """The host uplink for IPv6: an IPv6-only server in the internet sees the host's address."""
    host, inet, guest = lab.netns("x6h"), lab.netns("x6i"), lab.netns("x6g")
    lab.veth("eth0", inet, "eth0", outer_ns=host)
    for ns, address in ((host, "fd0e:96::1"), (inet, "fd0e:96::2")):
        lab.run(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"])
        lab.run(ns, ["ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad"])
        lab.run(ns, ["ip", "link", "set", "eth0", "up"])
    dev = lab.name("x6")
    body = f"""
[switch]
name = "x{lab.tag}"
[network]
subnet = "10.97.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
[dns]
forwarders = []
[[port]]
name = "{dev}"
type = "internal"
netns = "{guest}"
"""
    daemon = Daemon(lab, tmp_path, body, ports_up=2, ns=host)
    take_slaac(lab, guest, dev)
    serve(lab, inet, UDP_ECHO, "fd0e:96::2", "7")
    out = lab.run(guest, [sys.executable, "-c", UDP_ASK, "fd0e:96::2", "7", "hello"]).stdout
    assert out.strip() == "hello from fd0e:96::1", out  # the internet sees only the host
    # 3000 bytes: fragmented by the guest (reassembled before the host socket) and, coming
    # back, by vswitch as the datagram's source (the guest reassembles)
    big = "x" * 3000
    out = lab.run(guest, [sys.executable, "-c", UDP_ASK, "fd0e:96::2", "7", big]).stdout
    assert out.strip() == f"{big} from fd0e:96::1", (len(out), daemon.show("router"))
    done = lab.run(guest, ["ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "2",
                           "fd0e:96::2"], check=False)
    assert " 0% packet loss" in done.stdout, (done.stdout, daemon.show("router"))
    rows = daemon.show("conntrack")
    assert any(r["kind"] == "host6" and r["proto"] == "udp" for r in rows), rows
    # TCP: a 2 MB download over IPv6 arrives whole, and the server saw the host's address
    www = tmp_path / "www"
    www.mkdir()
    (www / "blob").write_bytes(bytes(range(256)) * 8192)
    lab.spawn([sys.executable, "-m", "http.server", "-b", "fd0e:96::2", "-d", str(www), "8000"],
              ns=inet, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.7)
    got = lab.run(guest, [sys.executable, "-c", "import hashlib, urllib.request; print("
                          "hashlib.sha256(urllib.request.urlopen('http://[fd0e:96::2]:8000/blob',"
                          " timeout=20).read()).hexdigest())"], timeout=60).stdout.strip()
    assert got == hashlib.sha256(bytes(range(256)) * 8192).hexdigest()
    assert any(r["proto"] == "tcp" and "[fd0e:96::2]:8000" in r["original"]
               for r in daemon.show("conntrack"))
    # a closed port: refused at once (the host's RST becomes the guest's)
    refused = lab.run(guest, [sys.executable, "-c", "import socket; s = socket.socket("
                              "socket.AF_INET6); s.settimeout(5)\n"
                              "try: s.connect(('fd0e:96::2', 81))\n"
                              "except OSError as e: print(e.errno)"]).stdout.strip()
    assert refused == str(errno.ECONNREFUSED), refused
