"""Port isolation and storm control (switch Rules 5 and 6) with three namespace guests.

i1 and i2 sit on isolated internal ports, p3 on a plain one.  The isolated two never reach each
other, not by unicast (even when the switch knows the other's MAC) and not by broadcast ARP;
both reach the gateway and p3.  Then p3 floods broadcasts far above its storm limit: the switch
passes no more than the limit allows, and i1's ARP and pings to the gateway go on.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.lab.test_lab_guests import capture
from tests.support import Daemon, mac_of, ping
from vswitch.lab import wait_for
from vswitch.switch import ISOLATED, ISOLATED_FLOOD, STORM, storm_burst

pytestmark = pytest.mark.privileged

GW = "10.213.0.1"
ADDR = {"i1": "10.213.0.11", "i2": "10.213.0.12", "p3": "10.213.0.13"}
STORM_LIMIT = 500  # p3's limit: burst 100

#: A broadcast storm out of one interface, bounded: COUNT frames or SECONDS, whichever first,
#: paced at about 20 000 frames a second.  Prints how many it sent.
STORMER = """
import socket, sys, time
dev, src, count, seconds = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), \\
    float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
frame = b"\\xff" * 6 + src + b"\\x88\\xb5" + b"storm" * 10
sent, start = 0, time.monotonic()
while sent < count and time.monotonic() - start < seconds:
    for _ in range(100):
        try:
            s.send(frame)
            sent += 1
        except OSError:  # a full device queue: the storm goes on
            pass
    time.sleep(0.005)
print(sent, flush=True)
"""


@pytest.fixture
def guests(lab, tmp_path):
    ns = {g: lab.netns(g) for g in ADDR}
    devs = {g: lab.name(g) for g in ADDR}
    ports = "".join(f'[[port]]\nname = "{devs[g]}"\ntype = "internal"\nnetns = "{ns[g]}"\n'
                    + ("isolated = true\n" if g.startswith("i") else
                       f"storm_limit = {STORM_LIMIT}\n")
                    for g in ADDR)
    daemon = Daemon(lab, tmp_path, f"""
[switch]
name = "i{lab.tag}"
[network]
subnet = "10.213.0.0/24"
[dhcp]
lease_file = "{tmp_path}/leases"
[dns]
forwarders = []
{ports}""")
    for g, addr in ADDR.items():
        lab.addr(ns[g], devs[g], f"{addr}/24")
    try:
        wait_for(lambda: daemon.up_count() == 4, 10, "the gateway and three guest ports up")
    except TimeoutError:
        print(daemon.show("ports"), daemon.log.read_text())
        raise
    return daemon, ns, devs


def drops(daemon, dev: str) -> dict[str, int]:
    return daemon.port(dev)["drops"]


def test_isolated_guests_reach_the_gateway_and_the_third_but_not_each_other(lab, guests):
    daemon, ns, devs = guests
    rows = {r["name"]: r for r in daemon.show("ports")}
    assert rows[devs["i1"]]["isolated"] and rows[devs["i2"]]["isolated"]
    assert not rows[devs["p3"]]["isolated"] and rows[devs["p3"]]["storm_limit"] == STORM_LIMIT
    assert rows[devs["i1"]]["storm_limit"] == 1000, "the [switch] default"
    for g in ("i1", "i2"):
        assert ping(lab, ns[g], GW, count=2, interval=0.1) == 2, f"{g} -> gateway"
        assert ping(lab, ns[g], ADDR["p3"], count=2, interval=0.1) == 2, f"{g} -> p3"
        assert ping(lab, ns["p3"], ADDR[g], count=2, interval=0.1) == 2, f"p3 -> {g}"

    # broadcast ARP: i1's who-has for i2 never reaches i2, and the ping fails
    seen = capture(lab, ns["i2"], devs["i2"], 0.3,
                   lambda: ping(lab, ns["i1"], ADDR["i2"], count=2, interval=0.2, timeout=10),
                   bpf="arp or icmp")
    assert not [s for s in seen if ADDR["i1"] in s], f"i1 reached isolated i2: {seen}"
    assert drops(daemon, devs["i1"]).get(ISOLATED_FLOOD, 0) >= 1
    assert ping(lab, ns["i2"], ADDR["i1"], count=2, interval=0.2, timeout=10) == 0

    # unicast to a MAC the switch knows on the other isolated port: dropped and counted
    macs = {g: mac_of(lab, ns[g], devs[g]) for g in ("i1", "i2")}
    assert daemon.fdb()[macs["i2"]] == devs["i2"], "i2's MAC is learned"
    lab.run(ns["i1"], ["ip", "neigh", "replace", ADDR["i2"], "lladdr", macs["i2"], "dev",
                       devs["i1"], "nud", "permanent"])
    before = drops(daemon, devs["i1"]).get(ISOLATED, 0)
    seen = capture(lab, ns["i2"], devs["i2"], 0.3,
                   lambda: ping(lab, ns["i1"], ADDR["i2"], count=3, interval=0.2, timeout=10))
    assert not [s for s in seen if s.strip()], f"a unicast frame crossed from i1 to i2: {seen}"
    assert drops(daemon, devs["i1"]).get(ISOLATED, 0) >= before + 3


def test_a_broadcast_storm_is_held_to_its_limit_and_others_still_reach_the_gateway(lab, guests):
    daemon, ns, devs = guests
    assert ping(lab, ns["p3"], GW, count=1) == 1
    before = daemon.port(devs["p3"])
    lab.run(ns["i1"], ["ip", "neigh", "flush", "dev", devs["i1"]])
    start = time.monotonic()
    stormer = lab.spawn([sys.executable, "-c", STORMER, devs["p3"],
                         mac_of(lab, ns["p3"], devs["p3"]).replace(":", ""), "60000", "3"],
                        ns=ns["p3"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the storm is on
    # i1 resolves the gateway by ARP and pings it, 200 times in 2 s, through the storm
    received = ping(lab, ns["i1"], GW, count=200, interval=0.01, timeout=60)
    out, _ = stormer.communicate(timeout=30)
    sent = int(out.strip())
    time.sleep(0.5)  # the switch reads what p3's socket still holds
    elapsed = time.monotonic() - start
    after = daemon.port(devs["p3"])
    rx = after["rx_frames"] - before["rx_frames"]
    storm_drops = after["drops"].get(STORM, 0) - before["drops"].get(STORM, 0)
    passed = rx - storm_drops
    limit = storm_burst(STORM_LIMIT) + STORM_LIMIT * elapsed
    print(f"storm: sent {sent}, switch read {rx}, passed {passed} (bound {limit:.0f}), "
          f"dropped {storm_drops}, in {elapsed:.2f} s; i1 got {received}/200 echo replies")
    assert sent >= 20_000 and rx >= 10_000, "the storm was a storm"
    assert passed <= limit, "storm control let more through than its limit"
    assert passed >= STORM_LIMIT, "storm control is a limit, not a wall"
    assert received >= 198, f"i1 lost {200 - received} of 200 pings to the gateway in the storm"
    assert not drops(daemon, devs["i1"]).get(STORM), "i1 never went over its limit"
