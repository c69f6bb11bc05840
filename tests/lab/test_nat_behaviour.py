"""NAT behaviour end to end, as a STUN client sees it (RFC 4787), through both uplinks; and the
raw uplink's next hop for destinations on its own link (nat/router.py Rule 4; IPv6:
nat/uplink6.py Rule 7).

A tiny reflector answers each datagram with the source address:port it saw (what a STUN
Binding response carries).  One guest socket asks two reflectors on two addresses: under
endpoint-independent mapping both see the same external address:port (REQ-1).  Then hosts in
the "internet" send to that mapping: under address-dependent filtering (the default, REQ-8)
one the guest talked to gets through from another port too, and a third address does not;
with ``[nat] filtering = "endpoint-independent"`` the third address gets through.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.test_host_egress import HOST, one_guest, serve
from tests.lab.test_router import EXTERNAL, router_lab
from tests.lab.test_router_ipv6 import INET6, UPLINK6, raw6_lab, udp_echo
from tests.lab.test_router_ipv6 import ask as ask6
from tests.support import Daemon, ping

pytestmark = pytest.mark.privileged

#: the reflectors' two addresses, and a third address that the guest never sends to
S1, S2, S3 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
STUN = 3478
GUEST_PORT = 40000

REFLECTOR = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
"""

#: argv: local port, seconds to listen afterwards, then the reflectors as ip:port.  Prints
#: "mapped SERVER ADDRESS:PORT" (or "no answer SERVER") for each, "ready", then every datagram
#: that arrives as "got PAYLOAD from ADDRESS:PORT" until "done" arrives or time is up.
CLIENT = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(1)
for server in sys.argv[3:]:
    host, port = server.rsplit(":", 1)
    for _ in range(4):
        s.sendto(b"binding request", (host, int(port)))
        try:
            data, peer = s.recvfrom(2048)
        except socket.timeout:
            continue
        print("mapped", server, data.decode(), flush=True)
        break
    else:
        print("no answer", server, flush=True)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    print("got", data.decode(), "from", f"{peer[0]}:{peer[1]}", flush=True)
    if data == b"done":
        break
"""

#: argv: target ip, target port, then SOURCE_IP:SOURCE_PORT:PAYLOAD each (port 0: any).
POKE = """
import socket, sys, time
for spec in sys.argv[3:]:
    ip, port, payload = spec.split(":", 2)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, int(port)))
    for _ in range(2):
        s.sendto(payload.encode(), (sys.argv[1], int(sys.argv[2])))
    s.close()
    time.sleep(0.3)
"""


def reflectors(lab, ns: str) -> None:
    """S1, S2 and S3 on the internet namespace's loopback; reflectors on S1 and S2."""
    for address in (S1, S2, S3):
        lab.run(ns, ["ip", "addr", "add", f"{address}/32", "dev", "lo"])
    for address in (S1, S2):
        serve(lab, ns, REFLECTOR, address, str(STUN))


def ask(lab, ns: str, *servers: str, listen: float = 0.0):
    """Run CLIENT in the guest namespace: the process, its "mapped" answers by server (None
    for no answer), read up to "ready"."""
    proc = lab.spawn([sys.executable, "-c", CLIENT, str(GUEST_PORT), str(listen), *servers],
                     ns=ns, stdout=subprocess.PIPE, text=True)
    mapped: dict[str, str | None] = {}
    while (line := proc.stdout.readline().strip()) != "ready":
        assert line, f"the client ended early: {mapped}"
        words = line.split()
        mapped[words[-1] if words[0] == "no" else words[1]] = (
            None if words[0] == "no" else words[2])
    return proc, mapped


def behaviour(lab, guest: str, inet: str, external: str) -> set[tuple[str, str]]:
    """The exchange: the mapping both reflectors saw (REQ-1, and the guest's port kept), then
    what reaches the guest's socket of "third" (S3, never contacted), "other-port" (S1 from a
    port the guest never sent to) and "done" (S2, from another port too); (payload, source)."""
    proc, mapped = ask(lab, guest, f"{S1}:{STUN}", f"{S2}:{STUN}", listen=15)
    try:
        assert mapped == {f"{S1}:{STUN}": f"{external}:{GUEST_PORT}",
                          f"{S2}:{STUN}": f"{external}:{GUEST_PORT}"}, \
            "endpoint-independent mapping: one address:port whatever the destination"
        lab.run(inet, [sys.executable, "-c", POKE, external, str(GUEST_PORT), f"{S3}:0:third",
                       f"{S1}:3479:other-port", f"{S2}:3479:done"])
        out = proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = set()
    for line in out.splitlines():
        _, payload, _, source = line.split()
        got.add((payload, source.rsplit(":", 1)[0] if payload == "third" else source))
    return got


ADDRESS_DEPENDENT = {("other-port", f"{S1}:3479"), ("done", f"{S2}:3479")}
ENDPOINT_INDEPENDENT = ADDRESS_DEPENDENT | {("third", S3)}
FILTERING = [("address-dependent", ADDRESS_DEPENDENT),
             ("endpoint-independent", ENDPOINT_INDEPENDENT)]


@pytest.mark.parametrize(("filtering", "expected"), FILTERING)
def test_rfc4787_mapping_and_filtering_through_the_raw_nat(lab, tmp_path, filtering, expected):
    extra = f'[nat]\nfiltering = "{filtering}"\n'
    daemon, inet, guests, _ = router_lab(lab, tmp_path, extra=extra)
    reflectors(lab, inet)  # off the uplink's link: through its gateway, which holds them
    assert behaviour(lab, guests["r1"], inet, EXTERNAL) == expected
    drops = daemon.show("router").get("drop-filtered", 0)
    assert (drops > 0) == (filtering == "address-dependent"), drops


@pytest.mark.parametrize(("filtering", "expected"), FILTERING)
def test_rfc4787_mapping_and_filtering_through_the_host_uplink(lab, tmp_path, filtering,
                                                               expected):
    """One host socket per guest endpoint: the mapping is the host's address and the socket's
    port (the guest's, free on the host); ``nat.egress.flows`` filters by the peers' addresses
    (Rule 1), the same behaviour as the raw NAT."""
    daemon, inet, guest = one_guest(lab, tmp_path, f'[nat]\nfiltering = "{filtering}"\n')
    host = next(ns for ns in lab.namespaces if ns.startswith("eh-"))
    lab.run(host, ["ip", "route", "add", "192.0.2.0/24", "via", "10.95.0.1"])
    reflectors(lab, inet)
    assert behaviour(lab, guest, inet, HOST) == expected
    drops = daemon.show("router").get("drop-udp-filtered", 0)
    assert (drops > 0) == (filtering == "address-dependent"), drops


# -- the raw uplink's on-link next hop (nat/router.py Rule 4) ----------------------------------

ON_LINK, UPLINK, GATEWAY = "198.51.100.1", "198.51.100.2", "198.51.100.254"
FAR = "203.0.113.10"


def test_the_raw_uplink_reaches_on_link_hosts_directly_and_the_rest_through_the_gateway(
        lab, tmp_path: Path):
    """The uplink's link is a bridge in namespace "lan" with a server at ON_LINK and, behind a
    veth, namespace "gw" that routes to FAR.  While the configured gateway does not exist
    (nobody answers ARP for GATEWAY) the server on the link answers and FAR does not; once gw
    takes GATEWAY, FAR answers through it."""
    lan, gw, far = lab.netns("nl"), lab.netns("ng"), lab.netns("nf")
    up = lab.veth(lab.name("vup"), lan, "eth0")
    lab.run(lan, ["ip", "link", "add", "br0", "type", "bridge"])
    lab.veth("gwp", gw, "eth0", outer_ns=lan)
    for ns, dev in ((lan, "eth0"), (gw, "eth0")):
        lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
    for dev in ("eth0", "gwp"):
        lab.run(lan, ["ip", "link", "set", dev, "master", "br0", "up"])
    lab.addr(lan, "br0", f"{ON_LINK}/24")
    lab.run(gw, ["ip", "link", "set", "eth0", "up"])  # no address yet: no gateway
    lab.veth("far", far, "eth0", outer_ns=gw)
    lab.addr(gw, "far", "203.0.113.1/24")
    lab.addr(far, "eth0", f"{FAR}/24")
    lab.run(far, ["ip", "route", "add", "default", "via", "203.0.113.1"])
    lab.run(gw, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    serve(lab, lan, REFLECTOR, ON_LINK, str(STUN))
    serve(lab, far, REFLECTOR, FAR, str(STUN))

    guest = lab.netns("ng1")
    body = f"""
[switch]
name = "b{lab.tag}"
[network]
subnet = "10.71.0.0/24"
[dhcp]
lease_file = "{tmp_path}/leases"
[dns]
forwarders = []
[uplink]
type = "raw"
interface = "{up}"
address = "{UPLINK}/24"
gateway = "{GATEWAY}"
[[port]]
name = "{lab.name('g1')}"
type = "internal"
netns = "{guest}"
"""
    daemon = Daemon(lab, tmp_path, body)
    lab.addr(guest, lab.name("g1"), "10.71.0.10/24")
    lab.run(guest, ["ip", "route", "add", "default", "via", "10.71.0.1"])

    proc, mapped = ask(lab, guest, f"{ON_LINK}:{STUN}", f"{FAR}:{STUN}")
    proc.wait(timeout=10)
    assert mapped == {f"{ON_LINK}:{STUN}": f"{UPLINK}:{GUEST_PORT}", f"{FAR}:{STUN}": None}
    assert ping(lab, guest, ON_LINK, count=2) == 2
    neighbours = lab.run(lan, ["ip", "neigh", "show", "dev", "br0"]).stdout
    assert UPLINK in neighbours, neighbours  # the server answered the router itself

    lab.addr(gw, "eth0", f"{GATEWAY}/24")  # now the gateway exists
    proc, mapped = ask(lab, guest, f"{FAR}:{STUN}", f"{ON_LINK}:{STUN}")
    proc.wait(timeout=10)
    assert mapped == {f"{FAR}:{STUN}": f"{UPLINK}:{GUEST_PORT}",
                      f"{ON_LINK}:{STUN}": f"{UPLINK}:{GUEST_PORT}"}
    assert ping(lab, guest, FAR, count=2) == 2
    assert daemon.show("router").get("drop-directed-broadcast", 0) == 0
    assert ping(lab, guest, "198.51.100.255", count=1) == 0
    assert daemon.show("router")["drop-directed-broadcast"] == 1, "not forwarded (RFC 2644)"


def test_the_raw_uplink_reaches_an_on_link_ipv6_host_while_gateway6_does_not_exist(lab,
                                                                                   tmp_path):
    """IPv6 (nat/uplink6.py Rule 7): INET6 is in the static address6's prefix, so it is
    solicited itself; gateway6 is an address nobody holds."""
    uplink6 = f'address6 = "{UPLINK6}/64"\ngateway6 = "fd94::fffe"'
    _, inet, guest, _ = raw6_lab(lab, tmp_path, uplink6=uplink6)
    udp_echo(lab, inet, INET6, 7777)
    assert ask6(lab, guest, INET6, 7777) == f"hello|{UPLINK6}"
