"""DHCPv6 from range6 against busybox's udhcpc6 (the third client, after `dhclient -6` and
`dhcpcd -6` in test_ipv6.py): a namespace guest leases, renews and releases an address.

Debian's busybox has no udhcpc6: `make test` builds one from Debian's busybox source
(tests/peers/build_udhcpc6.sh, into .venv/bin).  Its event script, tests/peers/udhcpc6.script,
only puts the address on the guest's interface and writes what it got to a file we read."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.lab import test_ipv6
from tests.lab.test_ipv6 import PREFIX, leases6
from tests.support import mac_of
from vswitch.lab import Lab, wait_for

pytestmark = pytest.mark.privileged

#: test_ipv6's network with stateful DHCPv6 (range6 ::100-::1ff) and a namespace guest
dhcp6_guest = test_ipv6.dhcp6_guest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests/peers/udhcpc6.script")
#: where `make peers` (tests/peers/build_udhcpc6.sh) puts it: the venv's bin
BUILT = [Path(sys.executable).parent / "udhcpc6", REPO / ".venv/bin/udhcpc6"]
FIRST, LAST = ipaddress.IPv6Address(f"{PREFIX}100"), ipaddress.IPv6Address(f"{PREFIX}1ff")
WAIT = 30  # seconds for any one DHCPv6 exchange


@pytest.fixture
def udhcpc6() -> str:
    """The udhcpc6 binary; missing is a skip, or a failure when CI=true."""
    found = next((str(p) for p in BUILT if os.access(p, os.X_OK)), shutil.which("udhcpc6"))
    require(found is not None, "udhcpc6 is not built (bash tests/peers/build_udhcpc6.sh)")
    assert found is not None
    return found


class Client:
    """``udhcpc6 -f`` in a namespace, and the events its script wrote."""

    def __init__(self, lab: Lab, binary: str, ns: str, dev: str, tmp: Path) -> None:
        self.events_file = tmp / "udhcpc6.events"
        self.log = tmp / "udhcpc6.log"
        # -R: release at exit too; -t/-T: 5 solicits 2 s apart, then "leasefail" and again
        self.proc = lab.spawn([binary, "-f", "-R", "-i", dev, "-s", SCRIPT, "-t", "5", "-T", "2"],
                              ns=ns, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                              env={**os.environ, "UDHCPC6_EVENTS": str(self.events_file)})

    def events(self) -> list[tuple[str, dict[str, str]]]:
        """(event, its variables), in order, from lines "EVENT bound ipv6=... lease=..."."""
        if not self.events_file.exists():
            return []
        out = []
        for line in self.events_file.read_text().splitlines():
            if line.startswith("EVENT ") and len(words := line.split()) > 1:
                out.append((words[1], dict(w.split("=", 1) for w in words[2:] if "=" in w)))
        return out

    def why(self) -> str:
        return f"events: {self.events()}\nudhcpc6: {self.log.read_text()[-3000:]}"

    def wait(self, name: str, seen: int = 0) -> dict[str, str]:
        """The variables of the first `name` event after the first `seen` of them."""
        def there() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"udhcpc6 exited ({self.proc.returncode})\n{self.why()}")
            return sum(n == name for n, _ in self.events()) > seen
        try:
            wait_for(there, WAIT, f"udhcpc6's event {name!r}", interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.why()}") from None
        return [v for n, v in self.events() if n == name][seen]

    def count(self, name: str) -> int:
        return sum(n == name for n, _ in self.events())

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


def configured(lab: Lab, ns: str, dev: str) -> set[ipaddress.IPv6Address]:
    """The interface's /128 addresses: the ones the script puts on."""
    out = lab.run(ns, ["ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global"]).stdout
    return {ipaddress.IPv6Address(w.split("/")[0]) for line in out.splitlines()
            for w in line.split() if w.endswith("/128")}


def held(daemon) -> dict[ipaddress.IPv6Address, dict]:
    return {ipaddress.IPv6Address(ip): row for ip, row in leases6(daemon).items()}


def heard(daemon) -> int:
    """Requests, renews and rebinds the DHCPv6 server has taken.  (udhcpc6 1.35 renews with
    a REQUEST message, not RENEW: counted either way.)"""
    stats = daemon.show("dhcp")
    return sum(stats.get(f"v6-{k}", 0) for k in ("request", "renew", "rebind"))


def lease_seconds(value: str) -> int:
    """$lease as udhcpc6 1.35 exports it: the valid lifetime's bytes read without ntohl."""
    return int.from_bytes(int(value).to_bytes(4, sys.byteorder), "big")


def test_udhcpc6_leases_renews_and_releases_an_address_from_range6(lab, udhcpc6, dhcp6_guest):
    daemon, ns, dev, tmp = dhcp6_guest
    mac = mac_of(lab, ns, dev)
    client = Client(lab, udhcpc6, ns, dev, tmp)

    # lease: an address from range6, on the interface, and in `show leases` as ipv6
    bound = client.wait("bound")
    address = ipaddress.IPv6Address(bound["ipv6"])
    assert FIRST <= address <= LAST, bound
    assert [ipaddress.IPv6Address(a) for a in bound["dns"].split(",")] == \
        [ipaddress.IPv6Address(f"{PREFIX}1")], bound  # RFC 3646, asked for by udhcpc6
    assert bound["search"] == "six.internal", bound
    assert address in configured(lab, ns, dev), client.why()
    rows = held(daemon)
    assert list(rows) == [address], rows
    first = rows[address]
    assert first["protocol"] == "ipv6" and first["state"] == "bound", first
    assert first["mac"] == mac, first
    assert abs(lease_seconds(bound["lease"]) - first["expires_in"]) <= 5, (bound, first)

    # renew (SIGUSR1): the same address, the lease's expiry moves on.  udhcpc6 1.35 unicasts
    # its renew to the server but waits for the answer on an IPv4 socket (udhcp_listen_socket),
    # so never hears it: -T seconds later it multicasts the renew (REBINDING), and that
    # reply it takes.  The server answers both.
    time.sleep(1.1)
    before = heard(daemon)
    client.signal(signal.SIGUSR1)
    renewed = client.wait("renew")
    assert ipaddress.IPv6Address(renewed["ipv6"]) == address, renewed
    wait_for(lambda: held(daemon).get(address, first)["expires"] > first["expires"], 10,
             "the renewed lease's expiry to move")
    assert heard(daemon) > before, daemon.show("dhcp")
    assert address in configured(lab, ns, dev), client.why()

    # release (SIGUSR2): the lease is gone, and the address is off the interface
    releases = daemon.show("dhcp").get("v6-release", 0)
    deconfigs = client.count("deconfig")  # (it also deconfigures once as it starts)
    client.signal(signal.SIGUSR2)
    client.wait("deconfig", seen=deconfigs)
    wait_for(lambda: address not in held(daemon), 10, "the released lease to go")
    assert daemon.show("dhcp").get("v6-release", 0) == releases + 1, daemon.show("dhcp")
    assert address not in configured(lab, ns, dev), client.why()

    # SIGUSR1 wakes it from released: it solicits again and takes an address from range6
    # (not always the same one: udhcpc6 picks a new random IAID for every Solicit)
    bounds, deconfigs = client.count("bound"), client.count("deconfig")
    client.signal(signal.SIGUSR1)
    again = client.wait("bound", seen=bounds)
    address = ipaddress.IPv6Address(again["ipv6"])
    assert FIRST <= address <= LAST, again
    wait_for(lambda: list(held(daemon)) == [address], 10, "the one lease taken again")
    assert address in configured(lab, ns, dev), client.why()

    # -R: SIGTERM releases at exit
    client.signal(signal.SIGTERM)
    try:
        client.proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"udhcpc6 did not exit on SIGTERM\n{client.why()}") from None
    assert client.count("deconfig") > deconfigs, client.why()
    wait_for(lambda: address not in held(daemon), 10, "the lease released at exit")
    assert address not in configured(lab, ns, dev), client.why()
