"""`vswitch demo`: two namespace guests on a switch take DHCP leases, find each other by name,
reach an "internet" namespace through the host uplink (the host's own sockets, the default)
and are reached through a port forward; then what the switch learned, leased and translated.

vswitch runs in a "host" namespace of its own, so the demo never touches this machine's real
network: that namespace's route to the internet namespace is the "host's route".

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
BETA, BETA_MAC = "10.123.0.20", "52:54:00:12:30:20"
INTERNET, EXTERNAL = "10.200.0.1", "10.200.0.2"
DOMAIN = "demo.internal"
LEASE_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "$router"
    echo "$interface: lease $ip/${mask:-24} from $serverid, router $router, dns $dns" ;;
esac
"""


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(socket: str, what: str) -> None:
    subprocess.run([sys.executable, "-m", "vswitch.cli", "show", what, "--socket", socket],
                   check=False)


def capture(lab: Lab, ns: str, dev: str) -> subprocess.Popen[str]:
    """tcpdump printing the first TCP SYN seen on ``dev``: addresses before/after NAT."""
    proc = lab.spawn(["tcpdump", "-l", "-n", "-c", "1", "-i", dev, "tcp[tcpflags] == tcp-syn"],
                     ns=ns, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for _ in range(5):
        if "listening" in proc.stderr.readline():
            break
    return proc


def syn_line(proc: subprocess.Popen[str]) -> str:
    try:
        out = proc.communicate(timeout=5)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    return out.strip().split(" IP ", 1)[-1].split(": Flags")[0] or "(nothing captured)"


def demo(keep: bool = False) -> int:
    if os.geteuid() != 0:
        print("vswitch demo builds network namespaces: run it as root (sudo make demo)",
              file=sys.stderr)
        return 2
    missing = [t for t in ("udhcpc", "curl", "tcpdump") if shutil.which(t) is None]
    if missing:
        print(f"vswitch demo needs {', '.join(missing)} (apt-get install {' '.join(missing)})",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vswitch-demo-") as tmp, Lab("demo") as lab:
        say("1. two guests and an \"internet\": network namespaces")
        ns = {g: lab.netns(g) for g in GUESTS}
        dev = {g: lab.name(g[:4]) for g in GUESTS}
        for g in GUESTS:  # each guest's own resolv.conf, as a VM would have
            etc = Path(f"/etc/netns/{ns[g]}")
            etc.mkdir(parents=True, exist_ok=True)
            lab.files.append(etc / "resolv.conf")
            lab.dirs.append(etc)
            (etc / "resolv.conf").write_text(f"nameserver {GATEWAY}\nsearch {DOMAIN}\n")
        inet, host = lab.netns("inet"), lab.netns("host")
        uplink = lab.veth(lab.name("up"), inet, "eth0")
        subprocess.run(["ip", "link", "set", uplink, "netns", host, "name", "eth0"], check=True)
        lab.links.remove(uplink)  # it goes with the host namespace
        lab.addr(host, "eth0", f"{EXTERNAL}/24")
        lab.addr(inet, "eth0", f"{INTERNET}/24")
        print(f"   guests alpha, beta; internet {inet} at {INTERNET}; vswitch's host {host} "
              f"at {EXTERNAL}")
        sock = str(Path(tmp) / "ctl.sock")
        config = Path(tmp) / "demo.toml"
        ports = "".join(
            f'\n[[port]]\nname = "{dev[g]}"\ntype = "internal"\nnetns = "{ns[g]}"\n'
            for g in GUESTS)
        config.write_text(
            f'[switch]\nname = "demo"\n[control]\nsocket = "{sock}"\n'
            f'[network]\nmode = "nat"\nsubnet = "10.123.0.0/24"\ngateway = "{GATEWAY}"\n'
            f'[dhcp]\nrange = ["10.123.0.100", "10.123.0.199"]\n'
            f'lease_file = "{tmp}/demo.leases"\n'
            f'[[dhcp.host]]\nmac = "{BETA_MAC}"\nip = "{BETA}"\nname = "beta"\n'
            f'[dns]\ndomain = "{DOMAIN}"\nforwarders = []\n'
            f'[[forward]]\nproto = "tcp"\nport = 8080\nto = "{BETA}:8000"\n{ports}')
        print(config.read_text())
        say(f"2. vswitch run {config}   (no [uplink]: the host's own sockets)")
        log = open(Path(tmp) / "vswitch.log", "w")  # the child holds it; closed at exit
        lab.spawn([sys.executable, "-m", "vswitch.cli", "run", str(config)], ns=host,
                  stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                rows = request(sock, "show", what="ports", timeout=1)
                return sum(r["type"] != "uplink" for r in rows) == len(GUESTS) + 1
            except (ControlError, OSError, ValueError):
                return False

        wait_for(ready, 15, "vswitch to start")
        say("3. the guests ask for addresses (udhcpc, as a VM's DHCP client would)")
        script = Path(tmp) / "lease.script"
        script.write_text(LEASE_SCRIPT)
        script.chmod(0o755)
        lab.run(ns["beta"], ["ip", "link", "set", dev["beta"], "address", BETA_MAC])
        for g in GUESTS:
            lab.run(ns[g], ["ip", "link", "set", "lo", "up"])
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
        ok = done.returncode == 0
        say("6. alpha fetches a page from the internet: vswitch connects from the host's socket")
        web = [sys.executable, "-m", "http.server", "--bind"]
        lab.spawn(web + [INTERNET, "80"], ns=inet, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
        lab.spawn(web + [BETA, "8000"], ns=ns["beta"], stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        inside, outside = capture(lab, ns["alpha"], dev["alpha"]), capture(lab, inet, "eth0")
        got = lab.run(ns["alpha"], ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w",
                                    "%{http_code}", f"http://{INTERNET}/"], check=False).stdout
        print(f"   curl http://{INTERNET}/ from alpha: HTTP {got}")
        print(f"   tcpdump in alpha:        {syn_line(inside)}")
        print(f"   tcpdump in the internet: {syn_line(outside)}")
        ok = ok and got == "200"
        say(f"7. the internet reaches beta's web server through the forward {EXTERNAL}:8080")
        inside, outside = capture(lab, ns["beta"], dev["beta"]), capture(lab, inet, "eth0")
        got = lab.run(inet, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://{EXTERNAL}:8080/"], check=False).stdout
        print(f"   curl http://{EXTERNAL}:8080/ from the internet: HTTP {got}")
        print(f"   tcpdump in the internet: {syn_line(outside)}")
        print(f"   tcpdump in beta:         {syn_line(inside)}")
        ok = ok and got == "200"
        say("8. vswitch show conntrack: both flows, the guest's side and the host socket's")
        show(sock, "conntrack")
        say("9. vswitch show fdb: each guest's MAC on its own port, the gateway on port 0")
        show(sock, "fdb")
        say("10. vswitch show ports")
        show(sock, "ports")
        if keep:
            print(f"\n(--keep) lab up; control socket {sock}; Enter to clean up")
            sys.stdin.readline()
        say("11. cleaning up: vswitch stops and removes its TAPs; namespaces deleted")
        time.sleep(0.2)
    print("demo " + ("done: the guests leased addresses, found each other by name, reached "
                     "the internet through the host's sockets and were reached through a "
                     "forward"
                     if ok else "FAILED"))
    return 0 if ok else 1
