"""IPv6 on the guest network with real kernels: a namespace guest takes a SLAAC address from
the gateway's router advertisements and a default route via its link-local address, rdisc6
reads the advertisement's flags, RDNSS and DNSSL, and ping6 reaches the gateway."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest

from tests.support import Daemon
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

PREFIX = "fd42:0:0:7::"


@pytest.fixture
def v6_guest(lab, tmp_path):
    ns = lab.netns("g6")
    dev = lab.name("v6")
    body = f"""
[switch]
name = "s{lab.tag}"
[network]
subnet = "10.77.0.0/24"
subnet6 = "{PREFIX}/64"
[dhcp]
lease_file = "{tmp_path}/leases"
[dns]
domain = "six.internal"
forwarders = []
[[port]]
name = "{dev}"
type = "internal"
netns = "{ns}"
"""
    daemon = Daemon(lab, tmp_path, body, ports_up=2)
    lab.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_ra=2",
                 f"net.ipv6.conf.{dev}.disable_ipv6=0"])
    lab.run(ns, ["ip", "link", "set", dev, "up"])
    yield daemon, ns, dev
    daemon.stop()


def test_a_guest_takes_slaac_and_a_default_route_from_the_advertisement(lab, v6_guest):
    daemon, ns, dev = v6_guest

    def addresses() -> list[str]:
        out = lab.run(ns, ["ip", "-j", "-6", "addr", "show", "dev", dev]).stdout
        return [a["local"] for i in json.loads(out) for a in i["addr_info"]
                if a.get("scope") == "global" and "tentative" not in a]

    prefix = ipaddress.IPv6Network(f"{PREFIX}/64")
    wait_for(lambda: any(ipaddress.IPv6Address(a) in prefix for a in addresses()), 30,
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
    assert daemon.show("router") is not None and daemon.alive()
