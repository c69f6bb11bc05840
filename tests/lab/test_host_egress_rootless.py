"""The host uplink with no privileges: vswitch runs as ``nobody`` in its "host" namespace, with
a stream port for a qemu guest (qemu also as ``nobody``) and one for a namespace guest (relayed
by ``tests.peers.socket_peer``, which is root's business, as qemu is the guest's).  Then a tap
port: root creates the TAP once with an owner; vswitch, as ``nobody`` with only CAP_NET_RAW
(its packet socket on the TAP's host side), and qemu, as ``nobody``, use it.

Root only builds the lab: the namespaces, the veth to the internet, and
``net.ipv4.ping_group_range`` in the host namespace so ``nobody`` may open ping sockets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.guest.image import boot_kernel, build_initramfs
from tests.guest.qemu import QemuGuest, markers
from tests.lab.test_host_egress import HOST, INET, UDP_ASK, UDP_ECHO, internet, serve
from tests.support import Daemon, ping
from vswitch.cli import qemu_args
from vswitch.config import load_config
from vswitch.lab import wait_for

pytestmark = pytest.mark.privileged

REPO = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
GUEST = "10.97.0.11"


def public_copy(root: Path) -> tuple[list[str], dict[str, str]]:
    """vswitch and its runtime libraries where ``nobody`` can read them (the checkout may sit
    in root's home); the interpreter and the environment that run it from there."""
    import netaddr
    import pyroute2
    import pytun
    import uvloop

    for package in ("wire", "vswitch", "nat", "dhcp"):
        shutil.copytree(REPO / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for module in (uvloop, netaddr, pyroute2):
        shutil.copytree(Path(module.__file__).parent, root / module.__name__,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(pytun.__file__, root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    # the system's interpreter of the same version, which any user may run (this one may
    # live in root's home); the copied extensions are built for its ABI
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = shutil.which(version, path="/usr/bin:/usr/local/bin") or os.path.realpath(
        sys.executable)
    return [python], {"PYTHONPATH": str(root), "PATH": os.environ["PATH"]}


def iperf3_files() -> dict[str, bytes]:
    """iperf3 and the libraries it links, for the guest's initramfs (same kernel ABI)."""
    out = subprocess.run(["ldd", "/usr/bin/iperf3"], capture_output=True, text=True,
                         check=True).stdout
    files = {"/bin/iperf3": Path("/usr/bin/iperf3").read_bytes()}
    for line in out.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            files[path] = Path(path).read_bytes()
    return files


GUEST_SCRIPT = f"""
udhcpc -i eth0 -n -q -t 5 -T 3
if wget -q -O /tmp/page http://{INET}:8000/page.txt && grep -q vswitch-page /tmp/page; then
  echo "MARK http-ok"; fi
if ping -c 3 -W 3 {INET}; then echo "MARK ping-ok"; fi
# busybox's nc here has no -u: a DNS question to a server in the internet is the UDP
# request and answer
if nslookup www.example.test {INET} | grep -q 203.0.113.7; then echo "MARK udp-ok"; fi
for dir in up down; do
  flag=""; [ $dir = down ] && flag=-R
  bytes=$(iperf3 -c {INET} -t 2 $flag 2>&1 | sed -n 's/.* \\([0-9.]*\\) [MG]Bytes .*receiver/\\1/p')
  [ -n "$bytes" ] && echo "MARK iperf-$dir $bytes"
done
"""


@pytest.fixture
def nobody_dir():
    """A directory ``nobody`` can read, with a state directory it can write, and a copy of
    vswitch it can run: (directory, interpreter command, environment)."""
    public = Path(tempfile.mkdtemp(prefix="vswitch-rootless-"))
    try:
        public.chmod(0o755)
        state = public / "state"
        state.mkdir()
        shutil.chown(state, "nobody", "nogroup")
        python, env = public_copy(public / "lib")
        yield public, python, env
    finally:
        shutil.rmtree(public, ignore_errors=True)


@pytest.fixture
def public(lab, nobody_dir):
    """The lab: the host namespace (ping sockets allowed) and the internet behind it, with
    its servers, and the guest kernel where qemu as nobody can read it."""
    public, python, env = nobody_dir
    host = lab.netns("rh")
    inet = internet(lab, host)
    lab.run(host, ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"])
    page = public / "www"
    page.mkdir()
    (page / "page.txt").write_text("vswitch-page\n")
    lab.spawn([sys.executable, "-m", "http.server", "-b", INET, "-d", str(page), "8000"],
              ns=inet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve(lab, inet, UDP_ECHO, INET, "7")
    lab.spawn(["iperf3", "-s", "-B", INET], ns=inet, stdout=subprocess.DEVNULL)
    lab.spawn([sys.executable, "-m", "tests.peers.dns_upstream", INET], ns=inet,
              stdout=subprocess.DEVNULL, cwd=REPO)
    kernel = public / "vmlinux"
    shutil.copyfile(boot_kernel(), kernel)
    kernel.chmod(0o644)
    return public, host, inet, python, env


def boot_as_nobody(public: Path, config_path: Path, port: str, mac: str, host: str | None = None,
                   script: str = "") -> list[str]:
    image = build_initramfs(script or GUEST_SCRIPT, public / f"img-{port}",
                            extra_files=iperf3_files())
    for path in (image.parent, image):
        path.chmod(0o755 if path.is_dir() else 0o644)
    netdev = qemu_args(load_config(config_path), port, mac).split()[1]
    prefix = (["ip", "netns", "exec", host] if host else []) + NOBODY
    with QemuGuest(image, netdev, mac, kernel=public / "vmlinux", prefix=prefix,
                   log_path=public / f"qemu-{port}.log") as vm:
        return markers(vm.wait(timeout=240))


@pytest.fixture
def rootless_lab(lab, public):
    public, host, inet, python, env = public
    state = public / "state"
    guest = lab.netns("rg")
    body = f"""
[switch]
name = "n{lab.tag}"
[network]
subnet = "10.97.0.0/24"
[dhcp]
lease_file = "{state}/leases"
[dns]
forwarders = []
[[forward]]
proto = "tcp"
port = 2222
to = "{GUEST}:22"
[[port]]
name = "ns"
type = "stream"
path = "{state}/ns.sock"
[[port]]
name = "qs"
type = "stream"
path = "{state}/qs.sock"
"""
    daemon = Daemon(lab, state, body, ns=host, python=NOBODY + python, env=env)
    return daemon, host, inet, guest, public


def test_unprivileged_vswitch_carries_a_namespace_and_a_qemu_guest(lab, rootless_lab):
    daemon, host, inet, guest, public = rootless_lab
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    # the daemon is `ip netns exec` -> setpriv -> python, each exec'ing the next: one PID
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid) == 65534, "vswitch runs as nobody"
    assert "CapEff:\t0000000000000000" in status, "with no capability at all"

    # the namespace guest: a TAP relayed to the stream port
    tap = lab.name("rtap")
    lab.spawn([sys.executable, "-m", "tests.peers.socket_peer", "stream",
               f"{public}/state/ns.sock", tap, guest], stdout=subprocess.DEVNULL, cwd=REPO)
    wait_for(lambda: lab.run(guest, ["ip", "link", "show", tap], check=False).returncode == 0,
             10, "the relayed TAP")
    lab.addr(guest, tap, f"{GUEST}/24")
    lab.run(guest, ["ip", "route", "add", "default", "via", "10.97.0.1"])
    fetched = lab.run(guest, ["curl", "-sf", "-m", "10", f"http://{INET}:8000/page.txt"],
                      check=False)
    assert fetched.stdout == "vswitch-page\n", daemon.log.read_text()
    assert ping(lab, guest, INET, count=2) == 2, "ping through nobody's ping sockets"
    echoed = lab.run(guest, [sys.executable, "-c", UDP_ASK, INET, "7", "hi"]).stdout.strip()
    assert echoed == f"hi from {HOST}"
    assert daemon.show("router")["ping"] == "ping-socket"
    lost = lab.run(guest, ["ping", "-n", "-c", "1", "-W", "6", "10.95.0.99"], check=False)
    assert "Destination Host Unreachable" in lost.stdout, "the ping socket's error passed on"
    # a forward listening as nobody (port >= 1024) reaches the guest's "ssh"
    serve(lab, guest, "import socket,sys\nsrv=socket.create_server((sys.argv[1],22))\n"
          "print('listening',flush=True)\nc,p=srv.accept()\nc.sendall(b'SSH-2.0-test\\n')\n",
          GUEST)
    banner = lab.run(inet, ["socat", "-T", "5", "-", f"TCP:{HOST}:2222"]).stdout
    assert banner == "SSH-2.0-test\n"

    # the qemu guest, qemu as nobody too
    marks = boot_as_nobody(public, daemon.config, "qs", "52:54:00:97:00:02")
    for mark in ("http-ok", "ping-ok", "udp-ok"):
        assert mark in marks, (mark, marks)
    for direction in ("up", "down"):
        moved = [m for m in marks if m.startswith(f"iperf-{direction} ")]
        assert moved and float(moved[0].split()[1]) > 0, (direction, marks)


def test_a_tap_port_root_created_once_with_only_cap_net_raw(lab, public):
    """The tap port's setup without root: the TAP exists, owned by nobody, and is up; vswitch
    gets CAP_NET_RAW alone (an ambient capability) for the packet socket on its host side."""
    public, host, inet, python, env = public
    tap = lab.name("rtap")
    lab.run(host, ["ip", "tuntap", "add", tap, "mode", "tap", "user", "nobody", "group",
                   "nogroup", "vnet_hdr"])
    lab.run(host, ["sysctl", "-qw", f"net.ipv6.conf.{tap}.disable_ipv6=1"])
    lab.run(host, ["ip", "link", "set", tap, "up"])
    body = f"""
[switch]
name = "t{lab.tag}"
[network]
subnet = "10.97.0.0/24"
[dhcp]
lease_file = "{public}/state/leases"
[dns]
forwarders = []
[[port]]
name = "{tap}"
type = "tap"
"""
    raw_only = NOBODY + ["--inh-caps=+net_raw", "--ambient-caps=+net_raw"]
    daemon = Daemon(lab, public / "state", body, ns=host, python=raw_only + python, env=env)
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    assert "Uid:\t65534" in status and "CapEff:\t0000000000002000" in status  # CAP_NET_RAW
    marks = boot_as_nobody(public, daemon.config, tap, "52:54:00:97:00:03", host=host,
                           script=GUEST_SCRIPT.split("for dir in")[0])
    for mark in ("http-ok", "ping-ok", "udp-ok"):
        assert mark in marks, (mark, marks, daemon.log.read_text()[-2000:])


def test_without_ping_sockets_or_cap_net_raw_one_warning_says_how(lab, nobody_dir):
    public, python, env = nobody_dir
    host = lab.netns("rp")  # a fresh namespace: ping_group_range is "1 0", nobody's out
    body = f"""
[switch]
name = "p{lab.tag}"
[network]
subnet = "10.98.0.0/24"
[dhcp]
lease_file = "{public}/state/leases"
"""
    daemon = Daemon(lab, public / "state", body, ns=host, python=NOBODY + python, env=env)
    assert daemon.show("router")["ping"] == "off"
    log = daemon.log.read_text()
    assert log.count("ping to the outside is off") == 1
    assert "net.ipv4.ping_group_range" in log


def test_a_forward_nobody_may_not_listen_on_stops_startup_saying_why(lab, nobody_dir):
    public, python, env = nobody_dir
    host = lab.netns("rf")
    body = f"""
[network]
subnet = "10.98.0.0/24"
[dhcp]
lease_file = "{public}/state/leases"
[[forward]]
proto = "tcp"
port = 22
to = "10.98.0.10:22"
"""
    config = public / "state" / "f.toml"
    config.write_text(body)
    done = subprocess.run(["ip", "netns", "exec", host, *NOBODY, *python, "-m", "vswitch.cli",
                           "run", str(config)], capture_output=True, text=True, env=env,
                          timeout=30)
    assert done.returncode != 0
    assert "forward tcp 0.0.0.0 port 22" in done.stderr
    assert "CAP_NET_BIND_SERVICE" in done.stderr, done.stderr
