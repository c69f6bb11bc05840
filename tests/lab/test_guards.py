"""The port guards (vswitch.guard) against real attacks from namespace guests on internal
ports, each with its victim: a forged ARP reply for the gateway, a rogue DHCP server
(dnsmasq), and a spoofed source address on a strict port.  A port with ``guard = false``
lets the same attack through, so each test would see the attack work without its guard.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Daemon, mac_of, ping
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
GW = "10.236.0.1"
VICTIM = "10.236.0.11"
SCRIPT = str(REPO / "tests/peers/dhclient.script")
#: victim and dhcp (default guards), attacker (default guards), open (guard = false),
#: strict (guard = "strict")
GUESTS = {"victim": "", "client": "", "attacker": "", "open": "guard = false\n",
          "strict": 'guard = "strict"\n'}

SENDER = """
import sys
from scapy.all import ARP, IP, UDP, Ether, conf, sendp
conf.verb = 0
kind, dev, mac = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "arp":  # a broadcast ARP reply (and a gratuitous request) claiming the gateway
    frames = [Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
              / ARP(op=2, hwsrc=mac, psrc=sys.argv[4], hwdst="ff:ff:ff:ff:ff:ff",
                    pdst=sys.argv[5]),
              Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
              / ARP(op=1, hwsrc=mac, psrc=sys.argv[4], pdst=sys.argv[4])]
else:  # UDP from a spoofed source to the target's MAC and address
    frames = [Ether(src=mac, dst=sys.argv[6])
              / IP(src=sys.argv[4], dst=sys.argv[5]) / UDP(sport=4242, dport=9999)
              / b"spoofed"]
sendp(frames, iface=dev, count=int(sys.argv[-1]), inter=0.01)
"""

LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    print(peer[0], data.decode(errors="replace"), flush=True)
"""


@pytest.fixture
def guards(lab, tmp_path):
    ns = {g: lab.netns(g[:6]) for g in GUESTS}
    dev = {g: lab.name(g[:4]) for g in GUESTS}
    ports = "".join(f'[[port]]\nname = "{dev[g]}"\ntype = "internal"\nnetns = "{ns[g]}"\n{extra}'
                    for g, extra in GUESTS.items())
    # the rogue DHCP server sits on an attach port (a veth): dnsmasq could not send from the
    # internal port's TAP here ("No such device")
    ns["rogue"], dev["rogue"] = lab.netns("rogue"), "eth0"
    outer = lab.veth(lab.name("vrg"), ns["rogue"], "eth0")
    ports += f'[[port]]\nname = "rogue"\ntype = "attach"\ninterface = "{outer}"\n'
    body = f"""
[switch]
name = "gd{lab.tag}"
[network]
subnet = "10.236.0.0/24"
[dhcp]
range = ["10.236.0.100", "10.236.0.199"]
lease_file = "{tmp_path}/leases"
{ports}"""
    daemon = Daemon(lab, tmp_path, body)
    for g in (*GUESTS, "rogue"):  # the TAPs are moved into the namespaces once vswitch opens them
        wait_for(lambda g=g: lab.run(ns[g], ["ip", "link", "show", dev[g]], check=False)
                 .returncode == 0, 10, f"{dev[g]} in {ns[g]}")
        lab.run(ns[g], ["sysctl", "-qw", f"net.ipv6.conf.{dev[g]}.disable_ipv6=1"])
        lab.run(ns[g], ["ip", "link", "set", dev[g], "up"])
    for g, addr in (("victim", VICTIM), ("attacker", "10.236.0.12"), ("open", "10.236.0.13"),
                    ("rogue", "10.236.0.14")):
        lab.run(ns[g], ["ip", "addr", "add", f"{addr}/24", "dev", dev[g]])
    wait_for(lambda: daemon.up_count() == len(GUESTS) + 2, 10, "gateway and guest ports up")
    return daemon, ns, dev


def send(lab, ns, dev, *args: str) -> None:
    lab.run(ns, [sys.executable, "-c", SENDER, args[0], dev, mac_of(lab, ns, dev), *args[1:]],
            timeout=60)


def gateway_neighbour(lab, ns, dev) -> str:
    out = lab.run(ns, ["ip", "neigh", "show", GW, "dev", dev]).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def drops(daemon, port: str) -> dict[str, int]:
    return daemon.port(port)["drops"]


def dhclient(lab, tmp, ns, dev, name: str) -> str:
    """A lease by dhclient (its script only sets the address); the address."""
    files = ["-lf", f"{tmp}/{name}.lease", "-pf", f"{tmp}/{name}.pid", "-sf", SCRIPT]
    done = lab.run(ns, ["timeout", "60", "dhclient", "-1", "-v", *files, dev], timeout=70)
    out = lab.run(ns, ["ip", "-4", "-o", "addr", "show", "dev", dev]).stdout
    assert "inet " in out, done.stdout + done.stderr
    return out.split("inet ")[1].split("/")[0]


def test_a_forged_arp_reply_for_the_gateway_changes_nobodys_neighbour(guards, lab):
    daemon, ns, dev = guards
    v = ns["victim"]
    assert ping(lab, v, GW, count=3) == 3
    gw_mac = gateway_neighbour(lab, v, dev["victim"])
    assert gw_mac
    send(lab, ns["attacker"], dev["attacker"], "arp", GW, VICTIM, "20")
    assert gateway_neighbour(lab, v, dev["victim"]) == gw_mac
    assert ping(lab, v, GW, count=30, interval=0.05) == 30
    assert gateway_neighbour(lab, v, dev["victim"]) == gw_mac
    assert drops(daemon, dev["attacker"]).get("guard-gateway-arp", 0) >= 40, \
        drops(daemon, dev["attacker"])
    # the same attack from a port without guards poisons the victim's cache: the guard is
    # what stopped it
    send(lab, ns["open"], dev["open"], "arp", GW, VICTIM, "5")
    wait_for(lambda: gateway_neighbour(lab, v, dev["victim"])
             == mac_of(lab, ns["open"], dev["open"]), 5, "the unguarded port's forgery")
    assert "guard-gateway-arp" not in drops(daemon, dev["open"])


def test_a_rogue_dhcp_server_on_a_guest_serves_nobody(guards, lab, tmp_path):
    daemon, ns, dev = guards
    rogue = lab.spawn(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                       f"--interface={dev['rogue']}",
                       "--dhcp-range=10.236.0.50,10.236.0.60,1h", "--dhcp-authoritative",
                       "--dhcp-broadcast", "--no-ping",
                       f"--dhcp-leasefile={tmp_path}/rogue.leases",
                       f"--pid-file={tmp_path}/rogue.pid", "--log-dhcp"], ns=ns["rogue"],
                      stdout=subprocess.DEVNULL, stderr=(tmp_path / "rogue.log").open("w"))
    time.sleep(0.5)
    assert rogue.poll() is None, (tmp_path / "rogue.log").read_text()
    address = dhclient(lab, tmp_path, ns["client"], dev["client"], "client")
    last = int(address.rsplit(".", 1)[1])
    assert 100 <= last <= 199, f"leased {address}, not from vswitch's range"
    # the rogue OFFER races vswitch's (--no-ping: at once); it is dropped on its port
    wait_for(lambda: drops(daemon, "rogue").get("guard-dhcp-server", 0) >= 1, 10,
             "the rogue OFFER dropped on its port")
    assert "DHCPOFFER" in (tmp_path / "rogue.log").read_text()  # the rogue did offer
    lab.run(ns["client"], ["dhclient", "-r", "-lf", f"{tmp_path}/client.lease", "-pf",
                           f"{tmp_path}/client.pid", "-sf", SCRIPT, dev["client"]],
            timeout=30, check=False)


def test_strict_ports_send_only_from_their_lease(guards, lab, tmp_path):
    daemon, ns, dev = guards
    s, target = ns["strict"], ns["victim"]
    leased = dhclient(lab, tmp_path, s, dev["strict"], "strict")
    assert ping(lab, s, GW, count=5, interval=0.1) == 5  # its own address works
    assert ping(lab, s, VICTIM, count=3, interval=0.1) == 3
    listener = lab.spawn([sys.executable, "-u", "-c", LISTENER], ns=target,
                         stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "listening"
    victim_mac = mac_of(lab, target, dev["victim"])
    spoofed = "10.236.0.77"
    send(lab, s, dev["strict"], "udp", spoofed, VICTIM, victim_mac, "5")
    send(lab, s, dev["strict"], "udp", leased, VICTIM, victim_mac, "1")  # its own: arrives
    line = listener.stdout.readline().split()
    assert line == [leased, "spoofed"], line  # the spoofed ones never came
    assert drops(daemon, dev["strict"]).get("guard-ip-source", 0) >= 5, \
        drops(daemon, dev["strict"])
    # the same spoof from the port without guards arrives: the guard is what stopped it
    send(lab, ns["open"], dev["open"], "udp", spoofed, VICTIM, victim_mac, "1")
    assert listener.stdout.readline().split() == [spoofed, "spoofed"]


SPOOF6 = """
import sys
from scapy.all import ICMPv6EchoRequest, IPv6, Ether, conf, sendp
conf.verb = 0
dev, mac, gw_mac, src, dst = sys.argv[1:6]
sendp(Ether(src=mac, dst=gw_mac) / IPv6(src=src, dst=dst) / ICMPv6EchoRequest(), iface=dev,
      count=5, inter=0.01)
"""


def test_strict_ipv6_slaac_a_probed_address_and_a_spoof(lab, tmp_path):
    """A strict guest with IPv6: its SLAAC (EUI-64) address and an address it probed (DAD,
    as a privacy address is) reach the gateway; a spoofed source is dropped and counted."""
    ns, dev = lab.netns("s6"), lab.name("s6")
    prefix, gw6 = "fd42:0:0:36::", "fd42:0:0:36::1"
    daemon = Daemon(lab, tmp_path, f"""
[switch]
name = "g6{lab.tag}"
guard = "strict"
[network]
subnet = "10.237.0.0/24"
subnet6 = "{prefix}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
[[port]]
name = "{dev}"
type = "internal"
netns = "{ns}"
""")
    wait_for(lambda: lab.run(ns, ["ip", "link", "show", dev], check=False).returncode == 0,
             10, f"{dev} in {ns}")
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.addr_gen_mode=0",
                 f"net.ipv6.conf.{dev}.use_tempaddr=0", f"net.ipv6.conf.{dev}.accept_ra=2",
                 f"net.ipv6.conf.{dev}.disable_ipv6=0"])
    lab.run(ns, ["ip", "link", "set", dev, "up"])

    def addresses() -> str:
        return lab.run(ns, ["ip", "-6", "addr", "show", "dev", dev]).stdout

    try:
        wait_for(lambda: "scope global" in addresses() and "tentative" not in addresses(),
                 30, "a SLAAC address")
    except TimeoutError:
        print(addresses(), daemon.port(dev), daemon.show("router"), daemon.log.read_text())
        raise
    assert lab.run(ns, ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", gw6],
                   check=False).returncode == 0, daemon.port(dev)["drops"]
    probed = f"{prefix}1234:5678:9abc"
    lab.run(ns, ["ip", "-6", "addr", "add", f"{probed}/64", "dev", dev])  # with DAD
    wait_for(lambda: "tentative" not in addresses(), 10, "DAD of the probed address")
    assert lab.run(ns, ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-I", probed, gw6],
                   check=False).returncode == 0, daemon.port(dev)["drops"]
    gw_mac = lab.run(ns, ["ip", "-6", "neigh", "show", gw6]).stdout.split("lladdr ")[1].split()[0]
    lab.run(ns, [sys.executable, "-c", SPOOF6, dev, mac_of(lab, ns, dev), gw_mac,
                 f"{prefix}77", gw6], timeout=60)
    wait_for(lambda: daemon.port(dev)["drops"].get("guard-ip6-source", 0) >= 5, 5,
             "the spoofed IPv6 sources dropped and counted")
