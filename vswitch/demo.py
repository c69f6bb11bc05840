"""`vswitch demo`: two namespace guests on a switch take DHCP leases, find each other by name
and talk; then what the switch learned and leased.

Needs root (it builds network namespaces) and udhcpc.  Everything it creates is removed at the
end (namespaces, their /etc/netns files, the switch and its TAPs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vswitch.control import ControlError, request
from vswitch.lab import Lab, wait_for

GUESTS = ("alpha", "beta")
GATEWAY = "10.123.0.1"
DOMAIN = "demo.internal"
LEASE_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    echo "$interface: lease $ip/${mask:-24} from $serverid, router $router, dns $dns" ;;
esac
"""


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(socket: str, what: str) -> None:
    subprocess.run([sys.executable, "-m", "vswitch.cli", "show", what, "--socket", socket],
                   check=False)


def demo(keep: bool = False) -> int:
    if os.geteuid() != 0:
        print("vswitch demo builds network namespaces: run it as root (sudo make demo)",
              file=sys.stderr)
        return 2
    if shutil.which("udhcpc") is None:
        print("vswitch demo needs udhcpc (apt-get install udhcpc)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vswitch-demo-") as tmp, Lab("demo") as lab:
        say("1. two guests: network namespaces, each plugged into a switch port")
        ns = {g: lab.netns(g) for g in GUESTS}
        dev = {g: lab.name(g[:4]) for g in GUESTS}
        for g in GUESTS:  # each guest's own resolv.conf, as a VM would have
            etc = Path(f"/etc/netns/{ns[g]}")
            etc.mkdir(parents=True, exist_ok=True)
            lab.files.append(etc / "resolv.conf")
            (etc / "resolv.conf").write_text(f"nameserver {GATEWAY}\nsearch {DOMAIN}\n")
        sock = str(Path(tmp) / "ctl.sock")
        config = Path(tmp) / "demo.toml"
        ports = "".join(
            f'\n[[port]]\nname = "{dev[g]}"\ntype = "internal"\nnetns = "{ns[g]}"\n'
            for g in GUESTS)
        config.write_text(
            f'[switch]\nname = "demo"\n[control]\nsocket = "{sock}"\n'
            f'[network]\nsubnet = "10.123.0.0/24"\ngateway = "{GATEWAY}"\n'
            f'[dhcp]\nrange = ["10.123.0.100", "10.123.0.199"]\n'
            f'lease_file = "{tmp}/demo.leases"\n'
            f'[dns]\ndomain = "{DOMAIN}"\nforwarders = []\n{ports}')
        print(config.read_text())
        say(f"2. vswitch run {config}")
        log = open(Path(tmp) / "vswitch.log", "w")  # the child holds it; closed at exit
        lab.spawn([sys.executable, "-m", "vswitch.cli", "run", str(config)], stdout=log,
                  stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                return len(request(sock, "show", what="ports", timeout=1)) == len(GUESTS) + 1
            except (ControlError, OSError, ValueError):
                return False

        wait_for(ready, 15, "vswitch to start")
        say("3. the guests ask for addresses (udhcpc, as a VM's DHCP client would)")
        script = Path(tmp) / "lease.script"
        script.write_text(LEASE_SCRIPT)
        script.chmod(0o755)
        for g in GUESTS:
            lab.run(ns[g], ["ip", "link", "set", dev[g], "up"])
            done = lab.run(ns[g], ["udhcpc", "-q", "-n", "-i", dev[g], "-x", f"hostname:{g}",
                                   "-s", str(script), "-t", "5", "-T", "2"], check=False)
            lines = (done.stdout + done.stderr).strip().splitlines()
            print(f"   {g}: " + next((x for x in lines if "lease " in x), "no lease"))
        say("4. vswitch show leases")
        show(sock, "leases")
        say("5. alpha pings beta by name: DNS on the gateway, then ARP floods, replies learned")
        done = lab.run(ns["alpha"], ["ping", "-c", "3", "-i", "0.2", "beta"], check=False)
        print(done.stdout.strip() or done.stderr.strip())
        say("6. vswitch show fdb: each guest's MAC on its own port, the gateway on port 0")
        show(sock, "fdb")
        say("7. vswitch show ports")
        show(sock, "ports")
        if keep:
            print(f"\n(--keep) lab up; control socket {sock}; Enter to clean up")
            sys.stdin.readline()
        say("8. cleaning up: vswitch stops and removes its TAPs; namespaces deleted")
        ok = done.returncode == 0
        time.sleep(0.2)
    for g in GUESTS:
        shutil.rmtree(f"/etc/netns/{ns[g]}", ignore_errors=True)
    print("demo " + ("done: the guests leased addresses, found each other by name and talked "
                     "through vswitch" if ok else "FAILED"))
    return 0 if ok else 1
