"""Hostile frames into a port while two guests ping: counted, dropped, the daemon lives on.

docs/testing.md's Ethernet list: runts, frames above the MTU up to 65535 bytes, stacked VLAN tags,
multicast or all-zero source MACs, random bytes.  Then a MAC flood: 100k random source MACs
from one port must keep the table within its limit and leave the other ports' entries alone.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import pytest

from tests.support import Daemon, mac_of
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

G1, G2 = "10.232.0.1", "10.232.0.2"


@pytest.fixture
def two_guests_and_injector(lab, tmp_path):
    ns1, ns2 = lab.netns("b1"), lab.netns("b2")
    veth = lab.name("vb2")
    lab.veth(veth, ns2, "eth0")
    body = f"""
[switch]
name = "b{lab.tag}"
mac_limit = 4096
[[port]]
name = "{lab.name('q1')}"
type = "internal"
netns = "{ns1}"
[[port]]
name = "q2"
type = "attach"
interface = "{veth}"
[[port]]
name = "junk"
type = "dgram"
path = "{tmp_path}/junk.sock"
"""
    daemon = Daemon(lab, tmp_path, body)
    lab.addr(ns1, lab.name("q1"), f"{G1}/24")
    lab.addr(ns2, "eth0", f"{G2}/24")
    wait_for(lambda: daemon.up_count() >= 2, 10, "guest ports up")
    inject = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    inject.bind(f"{tmp_path}/junk.peer")
    inject.connect(f"{tmp_path}/junk.sock")
    inject.settimeout(5)
    yield daemon, (ns1, ns2), inject
    inject.close()


def junk_frames(rng: random.Random, count: int):
    """docs/testing.md's Ethernet bad-input list, cycled."""
    unicast = bytes.fromhex("525400abcdef")
    for i in range(count):
        kind = i % 8
        if kind == 0:  # runt
            yield rng.randbytes(rng.randrange(0, 14))
        elif kind == 1:  # multicast source
            yield unicast + b"\x01" + rng.randbytes(5) + b"\x08\x00" + rng.randbytes(46)
        elif kind == 2:  # all-zero source
            yield b"\xff" * 6 + bytes(6) + b"\x08\x06" + rng.randbytes(28)
        elif kind == 3:  # stacked VLAN tags, to a unicast nobody has
            tags = b"".join(struct.pack("!HH", 0x8100, rng.randrange(4096)) for _ in range(4))
            yield unicast + b"\x02" + rng.randbytes(5) + tags + b"\x08\x00" + rng.randbytes(40)
        elif kind == 4 and i % 800 == 4:  # above the MTU, up to 65535 bytes (rarely: big)
            yield unicast + b"\x02" + rng.randbytes(5) + b"\x08\x00" + rng.randbytes(
                rng.randrange(1600, 65535 - 14))
        else:  # random bytes of a random ordinary size
            yield rng.randbytes(rng.randrange(14, 1515))


def send_all(inject: socket.socket, frames, deadline: float) -> int:
    sent = 0
    for frame in frames:
        if time.monotonic() > deadline:
            break
        try:
            inject.send(frame)
        except BlockingIOError:
            continue
        sent += 1
    return sent


def ping_in_background(lab, ns, addr, count):
    import subprocess

    return lab.spawn(["ping", "-n", "-c", str(count), "-i", "0.1", "-W", "2", addr], ns=ns,
                     stdout=subprocess.PIPE, text=True)


def replies(proc) -> int:
    out, _ = proc.communicate(timeout=60)
    line = next(x for x in out.splitlines() if "received" in x)
    return int(line.split(",")[1].split()[0])


def test_100k_malformed_frames_while_guests_ping(lab, two_guests_and_injector):
    daemon, (ns1, ns2), inject = two_guests_and_injector
    pinger = ping_in_background(lab, ns1, G2, 60)
    sent = send_all(inject, junk_frames(random.Random(7), 100_000), time.monotonic() + 120)
    assert sent == 100_000
    assert replies(pinger) >= 57, "pings keep working while junk pours in (<= 5% loss)"
    assert daemon.alive()
    drops = daemon.port("junk")["drops"]
    assert drops.get("runt", 0) >= 12_000
    assert drops.get("bad-source-mac", 0) >= 24_000
    assert drops.get("oversize", 0) >= 100
    # state intact: both guests still learned where they are, table within its limit
    fdb = daemon.fdb()
    assert fdb[mac_of(lab, ns1, lab.name("q1"))] == lab.name("q1")
    assert fdb[mac_of(lab, ns2, "eth0")] == "q2"
    assert len(fdb) <= 4096


def test_mac_flood_keeps_table_bounded_and_other_ports_entries(lab, two_guests_and_injector):
    daemon, (ns1, ns2), inject = two_guests_and_injector
    pinger = ping_in_background(lab, ns1, G2, 30)
    time.sleep(0.5)  # both guests learned before the flood
    rss_before = daemon.rss_kib()
    rng = random.Random(11)
    frames = (b"\xff" * 6 + b"\x02" + rng.randbytes(5) + b"\x08\x06" + bytes(28)
              for _ in range(100_000))
    assert send_all(inject, frames, time.monotonic() + 120) == 100_000
    assert replies(pinger) >= 28
    info = daemon.show("switch")
    assert info["mac_entries"] <= 4096
    assert info["evicted"] >= 100_000 - 4096 - 10
    fdb = daemon.fdb()
    assert fdb[mac_of(lab, ns1, lab.name("q1"))] == lab.name("q1")
    assert fdb[mac_of(lab, ns2, "eth0")] == "q2"
    growth = daemon.rss_kib() - rss_before
    assert growth < 20_000, f"RSS grew {growth} KiB during a 100k MAC flood"
    log = daemon.log.read_text()
    assert "MAC table full" in log
    assert log.count("MAC table full") < 200, "summarised once a second, not per frame"
