"""Four namespace guests on the four host-side port types ping each other through vswitch.

internal (vswitch holds the TAP), attach (AF_PACKET on a veth end), stream and dgram (a relay
speaking qemu's framing, ``tests/peers/socket_peer.py``).  After learning, unicast between two
guests is not seen on a third port; after ageing, it floods there again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Daemon, mac_of, ping, tcp_transfer
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
ADDR = {"g1": "10.231.0.1", "g2": "10.231.0.2", "g3": "10.231.0.3", "g4": "10.231.0.4"}


@pytest.fixture
def four_guests(lab, tmp_path):
    ns = {g: lab.netns(g) for g in ADDR}
    veth = lab.name("v2")
    lab.veth(veth, ns["g2"], "eth0")
    body = f"""
[switch]
name = "t{lab.tag}"
mac_aging = 2
[[port]]
name = "{lab.name('p1')}"
type = "internal"
netns = "{ns['g1']}"
[[port]]
name = "p2"
type = "attach"
interface = "{veth}"
[[port]]
name = "p3"
type = "stream"
path = "{tmp_path}/p3.sock"
[[port]]
name = "p4"
type = "dgram"
path = "{tmp_path}/p4.sock"
peer = "{tmp_path}/p4.sock.peer"
"""
    daemon = Daemon(lab, tmp_path, body)
    devs = {"g1": lab.name("p1"), "g2": "eth0", "g3": lab.name("s3"), "g4": lab.name("d4")}
    for g, mode, sock in (("g3", "stream", "p3.sock"), ("g4", "dgram", "p4.sock")):
        lab.spawn([sys.executable, "-m", "tests.peers.socket_peer", mode,
                   f"{tmp_path}/{sock}", devs[g], ns[g]], stdout=subprocess.DEVNULL, cwd=REPO)
        wait_for(lambda g=g: lab.run(ns[g], ["ip", "link", "show", devs[g]], check=False)
                 .returncode == 0, 10, f"{mode} peer TAP in {ns[g]}")
    for g, addr in ADDR.items():
        lab.addr(ns[g], devs[g], f"{addr}/24")
    try:
        wait_for(lambda: daemon.up_count() == 4, 10, "all four ports up")
    except TimeoutError:
        print(daemon.show("ports"), daemon.log.read_text())
        raise
    return daemon, ns, devs


def capture(lab, ns, dev, seconds_after, action, bpf="icmp"):
    """Run ``action`` while tcpdump listens on ``dev`` in ``ns``; return the captured lines."""
    proc = lab.spawn(["tcpdump", "-l", "-n", "-i", dev, bpf], ns=ns, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    # tcpdump says "listening on" once the capture is armed
    for _ in range(5):
        line = proc.stderr.readline()
        if "listening" in line:
            break
    else:
        raise AssertionError(f"tcpdump did not start: {line}")
    action()
    time.sleep(seconds_after)
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out.splitlines()


def test_four_port_types_ping_each_other(lab, four_guests):
    daemon, ns, devs = four_guests
    for src in ADDR:
        for dst, addr in ADDR.items():
            if src != dst:
                assert ping(lab, ns[src], addr, count=2, interval=0.1) == 2, f"{src} -> {dst}"
    # every guest's MAC was learned on the right port
    fdb = daemon.fdb()
    expected = {"g1": lab.name("p1"), "g2": "p2", "g3": "p3", "g4": "p4"}
    for g, port in expected.items():
        assert fdb[mac_of(lab, ns[g], devs[g])] == port
    for port in daemon.show("ports"):
        assert port["rx_frames"] > 0 and port["tx_frames"] > 0, port


def test_learned_unicast_stays_off_other_ports_until_ageing(lab, four_guests):
    daemon, ns, devs = four_guests
    # Static neighbours: no ARP traffic refreshes the switch while we wait for ageing.
    macs = {g: mac_of(lab, ns[g], devs[g]) for g in ("g1", "g2")}
    lab.run(ns["g1"], ["ip", "neigh", "replace", ADDR["g2"], "lladdr", macs["g2"],
                       "dev", devs["g1"], "nud", "permanent"])
    lab.run(ns["g2"], ["ip", "neigh", "replace", ADDR["g1"], "lladdr", macs["g1"],
                       "dev", devs["g2"], "nud", "permanent"])
    assert ping(lab, ns["g1"], ADDR["g2"], count=1) == 1  # both learned now

    seen = capture(lab, ns["g3"], devs["g3"], 0.5,
                   lambda: ping(lab, ns["g1"], ADDR["g2"], count=5, interval=0.05))
    assert not [s for s in seen if ADDR["g2"] in s], \
        f"learned unicast g1<->g2 leaked to the stream port: {seen}"

    # ageing is 2 s; the daemon expires on a 1 s tick
    wait_for(lambda: macs["g2"] not in daemon.fdb(), 6, "g2's MAC to age out")
    seen = capture(lab, ns["g3"], devs["g3"], 0.5,
                   lambda: ping(lab, ns["g1"], ADDR["g2"], count=1))
    assert [s for s in seen if f"> {ADDR['g2']}: ICMP echo request" in s], \
        f"after ageing, the frame to g2 must flood to every port: {seen}"


def test_tso_frames_are_segmented_in_software_for_a_stream_port(lab, four_guests):
    """TCP from the internal port arrives as 64 KiB TSO frames; the stream port takes only
    plain frames, so vswitch segments and checksums them.  The bytes must arrive intact."""
    daemon, ns, devs = four_guests
    sent, received = tcp_transfer(lab, ns["g1"], ns["g3"], ADDR["g3"], 20 << 20)
    assert sent == received and sent.startswith(str(20 << 20)), (sent, received)
    p1, p3 = daemon.port(lab.name("p1")), daemon.port("p3")
    assert p1["rx_bytes"] / p1["rx_frames"] > 3000, "the kernel handed vswitch TSO frames"
    assert p3["tx_bytes"] / p3["tx_frames"] <= 1514, "the stream peer got MTU-sized frames"
    assert p3["tx_bytes"] > 20_000_000
