"""A hostile guest among two victims (issue 13): one guest blasts 200k malformed and hostile
frames into the switch while the other two ping each other and the gateway.

The attacker (g3) sits on an internal port (its TAP) with the default guards and sends, from a
python AF_PACKET socket, a pool of pre-built frames in a tight loop: TESTING.md's Ethernet list
(runts, frames above the MTU, stacked VLAN tags, multicast and all-zero source MACs, random
bytes), truncated and garbage IPv4/IPv6/ARP/ICMP/UDP/TCP headers, a forged broadcast ARP reply
for the gateway, ARP for the victims' addresses whose sender MAC is not the frame's, rogue DHCP
OFFER/ACK/NAK, router advertisements and DHCPv6 replies, a DISCOVER flood with random chaddr
and scapy ``fuzz()`` of Ether/IP/UDP/DHCP/DNS/ICMPv6 (a pool from a fixed seed, replayed).
The sender paces itself to RATE: unpaced it makes ~350k frames/s here and the TAP's queue drops
what vswitch cannot read yet (~110k/s).  The guest's kernel refuses to send runts (EINVAL) and
frames above the TAP's MTU (EMSGSIZE): they are attempted and counted as ``refused``, and
tests/lab/test_bad_input.py sends both through a dgram port, where they reach the switch.

Every IP destination is the gateway, a victim or a broadcast: nothing fuzzed leaves for the
host's sockets toward an outside address (the gateway stands for the host's loopback; only
UDP 53/67 and ICMP go to it, no fuzzed TCP).

Not in the mix: a gratuitous ARP that claims a victim's address *with the attacker's MAC*.
The default guards do not stop guest-to-guest ARP poisoning (a kernel bridge does not either;
``guard = "strict"`` does, guard Rule 5), so it would take the victims' pings to each other
by design; here the ARP for victims' addresses carries the victim's own sender MAC from the
attacker's frame source (TESTING.md's "sender MAC != frame source").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Daemon, mac_of
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
SUBNET, GW = "10.239.0.0/24", "10.239.0.1"
ATTACKER_IP = "10.239.0.50"
PREFIX6, GW6 = "fd42:0:0:39::", "fd42:0:0:39::1"
FRAMES = 200_000
#: frames/s the sender paces itself to (unpaced, ~350k/s, the TAP drops what vswitch cannot read)
RATE = 40_000
BLAST_SECONDS = 45  # the time bound on the blast (the sender stops there, whatever it sent)
MAC_LIMIT = 4096
RSS_GROWTH_KIB = 30 * 1024
PINGS, PING_INTERVAL = 300, 0.02
UDHCPC_SCRIPT = str(REPO / "tests/peers/udhcpc.script")

BLASTER = r"""
import json, random, socket, struct, sys, time
from scapy.all import (ARP, BOOTP, DHCP, DNS, DNSQR, ICMP, IP, UDP, Ether, ICMPv6EchoRequest,
                       ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, IPv6, TCP, conf, fuzz,
                       raw)
from scapy.layers.dhcp6 import DHCP6_Advertise, DHCP6_Reply, DHCP6OptServerId
conf.verb = 0
args = json.loads(sys.argv[1])
dev, me, gw_mac, gw, victims, count, seconds = (args[k] for k in (
    "dev", "mac", "gw_mac", "gw", "victims", "count", "seconds"))
rng = random.Random(13)
random.seed(13)  # scapy's fuzz() draws from the random module
bcast = "ff:ff:ff:ff:ff:ff"
vmacs = [v["mac"] for v in victims]
vips = [v["ip"] for v in victims]
net_bcast = gw.rsplit(".", 1)[0] + ".255"
pool = {}

def rmac():
    return "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))

def b(pkt):
    return raw(pkt)

# -- Ethernet: TESTING.md's list
eth = []
for i in range(400):
    eth.append(rng.randbytes(rng.randrange(0, 14)))  # runts
    dst = bytes.fromhex(rng.choice(vmacs).replace(":", ""))
    eth.append(dst + b"\x01" + rng.randbytes(5) + b"\x08\x00" + rng.randbytes(46))  # mcast src
    eth.append(b"\xff" * 6 + bytes(6) + b"\x08\x06" + rng.randbytes(28))  # zero source
    tags = b"".join(struct.pack("!HH", 0x8100, rng.randrange(4096)) for _ in range(4))
    eth.append(b"\xff" * 6 + bytes.fromhex(me.replace(":", "")) + tags + b"\x08\x00"
               + rng.randbytes(40))  # stacked VLAN tags
    eth.append(rng.randbytes(rng.randrange(14, 1515)))  # random bytes
for i in range(8):  # above the MTU, up to 65535
    eth.append(b"\xff" * 6 + bytes.fromhex(me.replace(":", "")) + b"\x08\x00"
               + rng.randbytes(rng.randrange(1600, 65535 - 14)))
pool["ethernet"] = eth

# -- truncated and garbage headers, to the gateway or a victim (never an outside address)
def to(i):
    if i % 2:
        return Ether(src=me, dst=gw_mac), gw
    v = victims[i % len(victims)]
    return Ether(src=me, dst=v["mac"]), v["ip"]
bad = []
for i in range(600):
    e, dst = to(i)
    whole = [b(e / IP(src=args["ip"], dst=dst) / ICMP(id=i) / (b"x" * 8)),
             b(e / IP(src=args["ip"], dst=dst) / UDP(sport=rng.randrange(1024, 65535),
                                                      dport=53) / DNS(qd=DNSQR(qname="a.b"))),
             b(Ether(src=me, dst=rng.choice(vmacs)) / IP(src=args["ip"], dst=rng.choice(vips))
               / TCP(sport=rng.randrange(1024, 65535), dport=rng.randrange(1, 65535),
                     flags=rng.choice(["SF", "", "FPU", "R"]),
                     dataofs=rng.choice([0, 3, 15]))),
             b(Ether(src=me, dst=gw_mac) / IPv6(src="fe80::1", dst=args["gw6"])
               / ICMPv6EchoRequest(id=i)),
             b(Ether(src=me, dst=bcast) / ARP(op=1, hwsrc=me, psrc=args["ip"], pdst=gw))]
    frame = bytearray(rng.choice(whole))
    how = i % 6
    if how == 0:  # truncated anywhere past Ethernet
        frame = frame[:rng.randrange(14, len(frame))]
    elif how == 1 and frame[12:14] == b"\x08\x00":  # IHL < 5 or past the data
        frame[14] = 0x40 | rng.choice([0, 1, 4, 15])
    elif how == 2 and frame[12:14] == b"\x08\x00":  # total length too short / too long
        frame[16:18] = struct.pack("!H", rng.choice([0, 19, 65535]))
    elif how == 3 and frame[12:14] == b"\x08\x00":  # bad checksum, TTL 0/1, fragments
        frame[22] = rng.choice([0, 1])
        frame[20:22] = struct.pack("!H", rng.choice([0x2000, 0x1FFF, 0x3FFF, 0x0001]))
        frame[24:26] = b"\xde\xad"
    elif how == 4 and frame[12:14] == b"\x08\x06":  # ARP with wrong hlen/plen
        frame[18], frame[19] = rng.choice([(0, 4), (6, 0), (255, 255), (6, 16)])
    else:  # garbage over the upper header
        at = rng.randrange(14, len(frame))
        frame[at:] = rng.randbytes(len(frame) - at)
    bad.append(bytes(frame))
pool["headers"] = bad

# -- hostile: forged ARP for the gateway, ARP for the victims (sender MAC != frame source),
#    rogue DHCP server, RAs and DHCPv6 server messages, DISCOVER flood with random chaddr
hostile = []
hostile.append(b(Ether(src=me, dst=bcast) / ARP(op=2, hwsrc=me, psrc=gw, hwdst=bcast,
                                                 pdst=vips[0])))
hostile.append(b(Ether(src=me, dst=bcast) / ARP(op=1, hwsrc=me, psrc=gw, pdst=gw)))
for v in victims:
    hostile.append(b(Ether(src=me, dst=bcast) / ARP(op=1, hwsrc=v["mac"], psrc=v["ip"],
                                                     pdst=v["ip"])))
    hostile.append(b(Ether(src=me, dst=bcast) / ARP(op=2, hwsrc=v["mac"], psrc=v["ip"],
                                                     hwdst=bcast, pdst=v["ip"])))
for kind in ("offer", "ack", "nak"):
    for v in victims:
        hostile.append(b(Ether(src=me, dst=bcast) / IP(src=args["ip"], dst="255.255.255.255")
                         / UDP(sport=67, dport=68)
                         / BOOTP(op=2, yiaddr="10.239.0.222", siaddr=args["ip"],
                                 chaddr=bytes.fromhex(v["mac"].replace(":", "")),
                                 xid=rng.randrange(1 << 32))
                         / DHCP(options=[("message-type", kind), ("server_id", args["ip"]),
                                         ("router", args["ip"]), ("lease_time", 60), "end"])))
hostile.append(b(Ether(src=me, dst="33:33:00:00:00:01") / IPv6(src="fe80::66", dst="ff02::1")
                 / ICMPv6ND_RA(routerlifetime=1800)
                 / ICMPv6NDOptPrefixInfo(prefix="2001:db8:66::", prefixlen=64)))
for reply in (DHCP6_Advertise, DHCP6_Reply):
    hostile.append(b(Ether(src=me, dst="33:33:00:01:00:02") / IPv6(src="fe80::66",
                                                                   dst="ff02::1:2")
                     / UDP(sport=547, dport=546) / reply(trid=7) / DHCP6OptServerId()))
pool["hostile"] = hostile * 20
discover = []
for i in range(2000):
    mac = rmac()
    discover.append(b(Ether(src=mac, dst=bcast) / IP(src="0.0.0.0", dst="255.255.255.255")
                      / UDP(sport=68, dport=67)
                      / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")),
                              xid=rng.randrange(1 << 32))
                      / DHCP(options=[("message-type", "discover"), "end"])))
pool["discover"] = discover

# -- scapy fuzz(), fixed seed; destinations pinned to the lab
fz = []
for i in range(3000):
    k = i % 6
    e = Ether(src=me, dst=rng.choice([gw_mac, bcast]))
    if k == 0:
        p = fuzz(Ether(dst=rng.choice([gw_mac, bcast] + vmacs), type=0x0800)) / IP(
            src=args["ip"], dst=rng.choice(vips + [gw]), proto=1) / ICMP()
    elif k == 1:
        p = Ether(src=me, dst=rng.choice(vmacs)) / fuzz(IP(dst=rng.choice(vips + [net_bcast])))
    elif k == 2:
        p = Ether(src=me, dst=rng.choice(vmacs + [bcast])) / IP(
            src=args["ip"], dst=rng.choice(vips + [net_bcast])) / fuzz(UDP())
    elif k == 3:
        p = e / IP(src=args["ip"], dst=rng.choice([gw, "255.255.255.255"])) / UDP(
            sport=68, dport=67) / fuzz(BOOTP(op=1)) / fuzz(DHCP())
    elif k == 4:
        p = Ether(src=me, dst=gw_mac) / IP(src=args["ip"], dst=gw) / UDP(
            sport=rng.randrange(1024, 65535), dport=53) / fuzz(DNS())
    else:
        p = Ether(src=me, dst=rng.choice([gw_mac, "33:33:00:00:00:01"])) / IPv6(
            src="fe80::66", dst=rng.choice([args["gw6"], "ff02::1", "fe80::1"])) / fuzz(
            rng.choice([ICMPv6EchoRequest(), ICMPv6ND_NS(), ICMPv6ND_RA()]))
    try:
        fz.append(b(p))
    except Exception:
        pass
pool["fuzz"] = fz

frames = []
for name, weight in (("ethernet", 1), ("headers", 3), ("hostile", 1), ("discover", 1),
                     ("fuzz", 1)):
    frames += pool[name] * weight
rng.shuffle(frames)

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.bind((dev, 0))
send = s.send
print(json.dumps({"pool": len(frames), "sizes": {k: len(v) for k, v in pool.items()}}),
      flush=True)
sys.stdin.readline()  # go
n, sent, retried, refused, i = len(frames), 0, 0, 0, 0
rate = args["rate"]
start = time.monotonic()
deadline = start + seconds
while sent < count:
    if (sent & 511) == 0:  # paced: what the switch can read, or the TAP's queue drops it
        now = time.monotonic()
        if now > deadline:
            break
        ahead = start + sent / rate - now
        if ahead > 0:
            time.sleep(ahead)
    frame = frames[i]
    i = i + 1 if i + 1 < n else 0
    try:
        send(frame)
        sent += 1
    except BlockingIOError:
        retried += 1
    except OSError:  # runts (EINVAL) and frames above the MTU (EMSGSIZE): the kernel refuses
        refused += 1
        sent += 1
elapsed = time.monotonic() - start
print(json.dumps({"attempted": sent, "refused": refused, "retried": retried,
                  "seconds": elapsed, "rate": sent / elapsed}), flush=True)
"""


def up(lab, ns: str, dev: str) -> None:
    wait_for(lambda: lab.run(ns, ["ip", "link", "show", dev], check=False).returncode == 0,
             10, f"{dev} in {ns}")
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
    lab.run(ns, ["ip", "link", "set", dev, "up"])


def udhcpc(lab, ns: str, dev: str) -> str:
    done = lab.run(ns, ["udhcpc", "-f", "-q", "-n", "-i", dev, "-s", UDHCPC_SCRIPT, "-t", "5",
                        "-T", "2"], timeout=30)
    bound = [line for line in done.stdout.splitlines() if line.startswith("EVENT bound")]
    assert bound, done.stdout + done.stderr
    return bound[0].split()[-1]


def gateway_neighbour(lab, ns: str, dev: str) -> str:
    out = lab.run(ns, ["ip", "neigh", "show", GW, "dev", dev]).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def malformed(daemon) -> dict[str, int]:
    """What the gateway (IPv4 and IPv6), DHCP and DNS counted as undecodable, by part."""
    router = daemon.show("router")
    gateway = {k: v for k, v in router.items() if "malformed" in k and isinstance(v, int)}
    dns = daemon.show("dns")
    return {"gateway": sum(v for k, v in gateway.items() if k.startswith("gateway-")),
            "gateway6": sum(v for k, v in gateway.items() if k.startswith("gateway6-")),
            "dhcp": daemon.show("dhcp").get("malformed", 0),
            "dns": sum(v for k, v in dns.items() if "malformed" in k and isinstance(v, int))}


def loss(proc) -> tuple[int, int]:
    out, _ = proc.communicate(timeout=60)
    line = next(x for x in out.splitlines() if "received" in x)
    parts = line.split(",")
    return int(parts[0].split()[0]), int(parts[1].split()[0])


@pytest.fixture
def hostile_lab(lab, tmp_path):
    ns = {g: lab.netns(g) for g in ("g1", "g2", "g3")}
    dev = {g: lab.name(g) for g in ns}
    ports = "".join(f'[[port]]\nname = "{dev[g]}"\ntype = "internal"\nnetns = "{ns[g]}"\n'
                    for g in ns)
    body = f"""
[switch]
name = "hg{lab.tag}"
mac_limit = {MAC_LIMIT}
[network]
mode = "nat"
subnet = "{SUBNET}"
subnet6 = "{PREFIX6}/64"
[dhcp]
range = ["10.239.0.100", "10.239.0.199"]
lease_file = "{tmp_path}/leases"
max_leases = 64
[dns]
domain = "hostile.internal"
forwarders = ["127.0.0.1"]
{ports}"""
    daemon = Daemon(lab, tmp_path, body)
    for g in ns:
        up(lab, ns[g], dev[g])
    wait_for(lambda: daemon.up_count() == 4, 10, "gateway and three guest ports up")
    lab.run(ns["g3"], ["ip", "addr", "add", f"{ATTACKER_IP}/24", "dev", dev["g3"]])
    return daemon, ns, dev


def test_200k_hostile_frames_from_one_guest_while_two_ping(lab, hostile_lab, tmp_path):
    daemon, ns, dev = hostile_lab
    t0 = time.monotonic()
    ip = {g: udhcpc(lab, ns[g], dev[g]) for g in ("g1", "g2")}
    mac = {g: mac_of(lab, ns[g], dev[g]) for g in ns}
    for a, b in (("g1", "g2"), ("g2", "g1")):  # neighbours resolved before the blast
        for target in (ip[b], GW):
            assert lab.run(ns[a], ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", target],
                           check=False).returncode == 0
    gw_mac = gateway_neighbour(lab, ns["g1"], dev["g1"])
    assert gw_mac and gw_mac == gateway_neighbour(lab, ns["g2"], dev["g2"])
    leases = {row["mac"]: row for row in daemon.show("leases") if row["mac"] in mac.values()}
    assert {leases[mac[g]]["ip"] for g in ("g1", "g2")} == set(ip.values()), leases
    before = daemon.port(dev["g3"])
    drops_before = dict(before["drops"])
    malformed_before = malformed(daemon)

    blaster = lab.spawn([sys.executable, "-u", "-c", BLASTER, json.dumps({
        "dev": dev["g3"], "mac": mac["g3"], "ip": ATTACKER_IP, "gw_mac": gw_mac, "gw": GW,
        "gw6": GW6, "victims": [{"mac": mac[g], "ip": ip[g]} for g in ("g1", "g2")],
        "count": FRAMES, "seconds": BLAST_SECONDS, "rate": RATE})], ns=ns["g3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=(tmp_path / "blaster.err").open("w"), text=True, cwd=REPO)
    assert blaster.stdin is not None and blaster.stdout is not None
    ready = blaster.stdout.readline()
    assert ready, (tmp_path / "blaster.err").read_text()
    pool = json.loads(ready)
    rss_before = daemon.rss_kib()

    pingers = {f"{a}->{target}": lab.spawn(
        ["ping", "-n", "-q", "-c", str(PINGS), "-i", str(PING_INTERVAL), "-W", "2", addr],
        ns=ns[a], stdout=subprocess.PIPE, text=True)
        for a, b in (("g1", "g2"), ("g2", "g1")) for target, addr in ((b, ip[b]), ("gw", GW))}
    blaster.stdin.write("go\n")
    blaster.stdin.flush()
    out, _ = blaster.communicate(timeout=BLAST_SECONDS + 30)
    assert out.strip(), (tmp_path / "blaster.err").read_text()
    blast = json.loads(out.strip().splitlines()[-1])
    results = {key: loss(p) for key, p in pingers.items()}
    time.sleep(0.5)  # the switch drains what is queued
    tap = lab.run(ns["g3"], ["cat", f"/sys/class/net/{dev['g3']}/statistics/tx_dropped"])
    rss_after = daemon.rss_kib()
    after = daemon.port(dev["g3"])
    drops = {k: v - drops_before.get(k, 0) for k, v in after["drops"].items()}
    undecodable = {k: v - malformed_before[k] for k, v in malformed(daemon).items()}
    report = {"pool": pool, "blast": blast, "pings (sent, received)": results,
              "rss_kib": (rss_before, rss_after), "attacker drops": drops,
              "malformed (gateway, dhcp, dns)": undecodable,
              "attacker rx": {k: v for k, v in after.items() if "rx" in k},
              "attacker TAP tx_dropped": int(tap.stdout),
              "test seconds": round(time.monotonic() - t0, 1)}
    print(json.dumps(report, indent=1, default=str))

    assert blast["attempted"] == FRAMES, \
        f"sent only {blast['attempted']} in {BLAST_SECONDS}s: {report}"
    reached = after["rx_frames"] - before["rx_frames"]
    assert reached >= 0.95 * (FRAMES - blast["refused"]), f"{reached} reached vswitch: {report}"
    for path, (sent, received) in results.items():
        assert sent == PINGS and received >= sent * 0.99, \
            f"{path} lost {sent - received}/{sent}: {report}"
    assert daemon.alive(), daemon.log.read_text()[-3000:]
    assert daemon.show("ports")
    assert rss_after - rss_before < RSS_GROWTH_KIB, report
    assert daemon.show("switch")["mac_entries"] <= MAC_LIMIT
    fdb = daemon.fdb()
    assert len(fdb) <= MAC_LIMIT
    assert fdb[mac["g1"]] == dev["g1"] and fdb[mac["g2"]] == dev["g2"]
    for g in ("g1", "g2"):
        assert gateway_neighbour(lab, ns[g], dev[g]) == gw_mac, f"{g}'s gateway poisoned"
    leases_after = {row["mac"]: row for row in daemon.show("leases")}
    for g in ("g1", "g2"):
        assert leases_after[mac[g]]["ip"] == ip[g], leases_after[mac[g]]
    for reason in ("guard-gateway-arp", "guard-dhcp-server", "ra-guard", "bad-source-mac"):
        assert drops.get(reason, 0) > 0, f"no {reason} drops on the attacker's port: {report}"
    assert undecodable["gateway"] > 0 and undecodable["dhcp"] > 0, report
