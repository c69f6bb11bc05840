"""`vswitch demo`: two namespace guests on a switch, talking, and what the switch learned.

Needs root (it builds network namespaces).  Everything it creates is removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vswitch.control import ControlError, request
from vswitch.lab import Lab, wait_for

GUESTS = {"alpha": "10.123.0.11", "beta": "10.123.0.12"}


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
    with tempfile.TemporaryDirectory(prefix="vswitch-demo-") as tmp, Lab("demo") as lab:
        say("1. two guests: network namespaces, each plugged into a switch port")
        ns = {g: lab.netns(g) for g in GUESTS}
        sock = str(Path(tmp) / "ctl.sock")
        config = Path(tmp) / "demo.toml"
        ports = "".join(
            f'\n[[port]]\nname = "{lab.name(g[:4])}"\ntype = "internal"\nnetns = "{ns[g]}"\n'
            for g in GUESTS)
        config.write_text(f'[switch]\nname = "demo"\n[control]\nsocket = "{sock}"\n{ports}')
        print(config.read_text())
        say(f"2. vswitch run {config}")
        log = open(Path(tmp) / "vswitch.log", "w")  # the child holds it; closed at exit
        lab.spawn([sys.executable, "-m", "vswitch.cli", "run", str(config)], stdout=log,
                  stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                return len(request(sock, "show", what="ports", timeout=1)) == len(GUESTS)
            except (ControlError, OSError, ValueError):
                return False

        wait_for(ready, 15, "vswitch to start")
        for g, addr in GUESTS.items():
            dev = lab.name(g[:4])
            lab.addr(ns[g], dev, f"{addr}/24")
            print(f"   {g:<6} {ns[g]:<12} {dev:<10} {addr}/24")
        say("3. the MAC table before anyone spoke")
        show(sock, "fdb")
        say("4. alpha pings beta: the first ARP request floods, the replies are learned")
        done = lab.run(ns["alpha"], ["ping", "-c", "3", "-i", "0.2", GUESTS["beta"]],
                       check=False)
        print(done.stdout.strip())
        say("5. the MAC table now: each guest's MAC, learned on its own port")
        show(sock, "fdb")
        say("6. the ports, with their counters")
        show(sock, "ports")
        if keep:
            print(f"\n(--keep) lab up; control socket {sock}; Enter to clean up")
            sys.stdin.readline()
        say("7. cleaning up: vswitch stops and removes its TAPs; namespaces deleted")
        ok = done.returncode == 0
        time.sleep(0.2)
    print("demo " + ("done: the guests talked through vswitch" if ok else "FAILED"))
    return 0 if ok else 1
