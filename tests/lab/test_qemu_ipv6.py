"""A real qemu guest (TCG, the Debian kernel, the busybox initramfs) on IPv6: it takes a SLAAC
address from the gateway's router advertisements, pings the gateway over IPv6 and resolves a
namespace guest's AAAA by name over IPv6, with a virtio NIC on a stream port and an e1000 NIC
(no offloads) on a tap port."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.lab.test_qemu import boot
from tests.support import Daemon
from vswitch.config import load_config

pytestmark = [pytest.mark.privileged, pytest.mark.qemu]

PREFIX = "fd42:0:0:9::"
PEER = f"{PREFIX}77"

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


def test_qemu_guests_take_slaac_ping_the_gateway_and_resolve_aaaa(lab, six_lab):
    daemon, config, tmp = six_lab
    with ThreadPoolExecutor(2) as pool:
        virtio = pool.submit(boot, config, "q6s", "52:54:00:42:00:02", "slaac", tmp, SCRIPT)
        e1000 = pool.submit(boot, config, lab.name("q6tap"), "52:54:00:42:00:03", "slaac", tmp,
                            SCRIPT, model="e1000")
        results = {"virtio": virtio.result(), "e1000": e1000.result()}
    for nic, marks in results.items():
        slaac = [ipaddress.IPv6Address(m.split()[1]) for m in marks if m.startswith("slaac ")]
        last = "2" if nic == "virtio" else "3"  # EUI-64 from the MAC, RFC 4862 5.5.3
        eui64 = ipaddress.IPv6Address(f"fd42:0:0:9:5054:ff:fe42:{last}")
        assert slaac == [eui64], (nic, marks)
        assert "ping6-ok" in marks, (nic, marks)
        assert f"aaaa {PEER}" in marks, (nic, marks)
