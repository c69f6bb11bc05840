"""A real qemu guest (TCG, the Debian kernel, the busybox initramfs) on IPv6: it takes a SLAAC
address from the gateway's router advertisements, pings the gateway over IPv6 and resolves a
namespace guest's AAAA by name over IPv6, and, as the network has a range6 too (the RA carries
M and A), leases an address by DHCPv6 with udhcpc6 and pings the gateway from it; with a virtio
NIC on a stream port and an e1000 NIC (no offloads) on a tap port.

The guest's udhcpc6 is the static one tests/peers/build_udhcpc6.sh builds (`make peers`):
tests/guest/image.py puts it into the initramfs when it is there."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import IN_CI, require
from tests.guest.image import UDHCPC6_SCRIPT_PATH, find_udhcpc6
from tests.lab.test_qemu import boot
from tests.support import Daemon
from vswitch.config import load_config

pytestmark = [pytest.mark.privileged, pytest.mark.qemu]

PREFIX = "fd42:0:0:9::"
PEER = f"{PREFIX}77"
FIRST, LAST = ipaddress.IPv6Address(f"{PREFIX}100"), ipaddress.IPv6Address(f"{PREFIX}1ff")
MACS = {"virtio": "52:54:00:42:00:02", "e1000": "52:54:00:42:00:03"}
NO_UDHCPC6 = "no static udhcpc6 for the guest (bash tests/peers/build_udhcpc6.sh)"

SCRIPT = f"""
for i in $(seq 60); do
  ip -6 addr show dev eth0 | grep -q 'inet6 fd42:.* scope global' && break
  sleep 0.5
done
pattern='s/.*inet6 \\(fd42:[0-9a-f:]*\\)\\/64 scope global.*/MARK slaac \\1/p'
ip -6 addr show dev eth0 | sed -n "$pattern"
if ping -6 -c 3 -W 3 {PREFIX}1; then echo "MARK ping6-ok"; else echo "MARK ping6-fail"; fi
nslookup -type=AAAA peer.six.internal {PREFIX}1 \\
  | sed -n 's/^Address: *\\(fd42:0:0:9::77\\)$/MARK aaaa \\1/p'
if [ -x /bin/udhcpc6 ]; then
  # its script adds the lease as a /128 and prints "MARK dhcp6-bound <address, in full> ..."
  udhcpc6 -i eth0 -n -q -t 5 -T 3 -s {UDHCPC6_SCRIPT_PATH} || echo "MARK dhcp6-fail"
  for i in $(seq 20); do  # DAD: a tentative source address cannot ping yet
    ip -6 addr show dev eth0 | grep '/128 scope global' | grep -q tentative || break
    sleep 0.5
  done
  ip -6 addr show dev eth0 \\
    | sed -n 's/.*inet6 \\(fd42:[0-9a-f:]*\\/[0-9]*\\) scope global.*/MARK inet6 \\1/p'
  leased=$(ip -6 addr show dev eth0 \\
    | sed -n 's/.*inet6 \\(fd42:[0-9a-f:]*\\)\\/128 scope global.*/\\1/p' | head -n 1)
  if [ -n "$leased" ] && ping -6 -c 3 -W 3 -I "$leased" {PREFIX}1; then
    echo "MARK ping6-leased-ok $leased"
  else
    echo "MARK ping6-leased-fail $leased"
  fi
else
  echo "MARK udhcpc6-missing"
fi
"""


@pytest.fixture
def six_lab(lab, tmp_path):
    peer = lab.netns("qp")
    body = f"""
[switch]
name = "q6{lab.tag}"
[network]
subnet = "10.242.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
range6 = ["{FIRST}", "{LAST}"]
[[dhcp.host]]
mac = "52:54:00:42:00:77"
ip = "10.242.0.77"
name = "peer"
ip6 = "{PEER}"
[dns]
domain = "six.internal"
forwarders = []
[[port]]
name = "{lab.name('qp')}"
type = "internal"
netns = "{peer}"
[[port]]
name = "{lab.name('q6tap')}"
type = "tap"
[[port]]
name = "q6s"
type = "stream"
path = "{tmp_path}/q6s.sock"
"""
    daemon = Daemon(lab, tmp_path, body)
    yield daemon, load_config(daemon.config), tmp_path
    daemon.stop()


def test_qemu_guests_take_slaac_and_dhcpv6_ping_the_gateway_and_resolve_aaaa(lab, six_lab):
    daemon, config, tmp = six_lab
    dhcp6 = find_udhcpc6() is not None  # (build_initramfs puts it in the image then)
    if IN_CI:  # fail before the boots, not after
        require(dhcp6, NO_UDHCPC6)
    with ThreadPoolExecutor(2) as pool:
        virtio = pool.submit(boot, config, "q6s", MACS["virtio"], "slaac", tmp, SCRIPT)
        e1000 = pool.submit(boot, config, lab.name("q6tap"), MACS["e1000"], "slaac", tmp,
                            SCRIPT, model="e1000")
        results = {"virtio": virtio.result(), "e1000": e1000.result()}
    leases = {ipaddress.IPv6Address(r["ip"]): r for r in daemon.show("leases")
              if r.get("protocol") == "ipv6"}
    for nic, marks in results.items():
        slaac = [ipaddress.IPv6Address(m.split()[1]) for m in marks if m.startswith("slaac ")]
        last = "2" if nic == "virtio" else "3"  # EUI-64 from the MAC, RFC 4862 5.5.3
        eui64 = ipaddress.IPv6Address(f"fd42:0:0:9:5054:ff:fe42:{last}")
        assert slaac == [eui64], (nic, marks)
        assert "ping6-ok" in marks, (nic, marks)
        assert f"aaaa {PEER}" in marks, (nic, marks)
        assert ("udhcpc6-missing" not in marks) == dhcp6, (nic, marks)
        if not dhcp6:
            continue
        # DHCPv6 (M): an address from range6 on eth0 next to the SLAAC one (A), a lease the
        # switch shows for the guest's MAC, and the gateway answers a ping from it
        bound = [m.split() for m in marks if m.startswith("dhcp6-bound ")]
        assert len(bound) == 1, (nic, marks)
        leased = ipaddress.IPv6Address(bound[0][1])
        assert FIRST <= leased <= LAST, (nic, marks)
        on_eth0 = {ipaddress.IPv6Interface(m.split()[1]) for m in marks if m.startswith("inet6 ")}
        assert ipaddress.IPv6Interface(f"{leased}/128") in on_eth0, (nic, marks)
        assert ipaddress.IPv6Interface(f"{eui64}/64") in on_eth0, (nic, marks)
        pinged = [ipaddress.IPv6Address(m.split()[1]) for m in marks
                  if m.startswith("ping6-leased-ok ")]
        assert pinged == [leased], (nic, marks)
        row = leases.get(leased)
        assert row is not None, (nic, leased, leases)
        assert row["protocol"] == "ipv6" and row["state"] == "bound", row
        assert row["mac"] == MACS[nic], (nic, row)
    require(dhcp6, NO_UDHCPC6)  # (outside CI: the DHCPv6 half is a skip)
