"""Real qemu guests (TCG, the Debian kernel, a busybox initramfs) on vswitch's qemu-facing ports.

A namespace guest sits on an internal port; qemu guests on a tap port, a stream port (qemu as
client, and vswitch connecting to qemu as server) and a dgram port ping it.  qemu stopping and
starting again on the same tap port needs no vswitch restart.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.guest.image import boot_kernel, build_initramfs
from tests.guest.qemu import QemuGuest, markers
from tests.support import Daemon
from vswitch.cli import qemu_args
from vswitch.config import load_config
from vswitch.lab import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.qemu]

HOST = "10.241.0.9"
GATEWAY = "10.241.0.1"


def ping_script(addr: str) -> str:
    return f"""
ip addr add {addr}/24 dev eth0
if ping -c 3 -W 3 {HOST}; then echo "MARK ping-ok"; else echo "MARK ping-fail"; fi
"""


@pytest.fixture
def qemu_lab(lab, tmp_path):
    host = lab.netns("qh")
    body = f"""
[switch]
name = "q{lab.tag}"
[network]
subnet = "10.241.0.0/24"
[dhcp]
range = ["10.241.0.100", "10.241.0.150"]
lease_file = "{tmp_path}/leases"
[dns]
domain = "lab.internal"
forwarders = []
[[port]]
name = "{lab.name('qh')}"
type = "internal"
netns = "{host}"
[[port]]
name = "{lab.name('qtap')}"
type = "tap"
[[port]]
name = "{lab.name('qown')}"
type = "tap"
owner = "nobody"
group = "nogroup"
[[port]]
name = "qs"
type = "stream"
path = "{tmp_path}/qs.sock"
[[port]]
name = "qc"
type = "stream"
path = "{tmp_path}/qc.sock"
connect = true
[[port]]
name = "qd"
type = "dgram"
path = "{tmp_path}/qd.sock"
"""
    daemon = Daemon(lab, tmp_path, body)
    lab.addr(host, lab.name("qh"), f"{HOST}/24")
    config = load_config(daemon.config)
    return daemon, config, tmp_path


DHCP_SCRIPT = f"""
udhcpc -i eth0 -n -q -t 5 -T 3 -x hostname:qguest
if ping -c 3 -W 3 {HOST}; then echo "MARK ping-ok"; else echo "MARK ping-fail"; fi
nslookup qguest.lab.internal {GATEWAY} \\
  | sed -n 's/^Address: *\\(10\\.241\\.0\\.1[0-9][0-9]\\)$/MARK dns \\1/p'
"""


def boot(config, port: str, mac: str, addr: str, tmp_path, script: str | None = None,
         model: str = "virtio-net-pci") -> list[str]:
    """Boot a guest with NIC ``model`` on ``port`` with the flags `vswitch qemu-args` prints;
    its markers."""
    image = build_initramfs(script or ping_script(addr), tmp_path / port / addr)
    flags = qemu_args(config, port, mac).split()
    netdev = flags[flags.index("-netdev") + 1]
    with QemuGuest(image, netdev, mac, kernel=boot_kernel(), model=model,
                   log_path=tmp_path / f"{port}-{addr}.log") as guest:
        return markers(guest.wait(timeout=240))


def test_guests_on_tap_and_stream_ports_ping_a_namespace_guest(lab, qemu_lab):
    daemon, config, tmp = qemu_lab
    with ThreadPoolExecutor(2) as pool:
        tap = pool.submit(boot, config, lab.name("qtap"), "52:54:00:41:00:02", "10.241.0.2", tmp)
        stream = pool.submit(boot, config, "qs", "52:54:00:41:00:03", "10.241.0.3", tmp)
        tap_marks, stream_marks = tap.result(), stream.result()
    assert "ping-ok" in tap_marks and tap_marks[-1] == "init-done", tap_marks
    assert "ping-ok" in stream_marks and stream_marks[-1] == "init-done", stream_marks
    ports = {p["name"]: p for p in daemon.show("ports")}
    assert ports[lab.name("qtap")]["rx_frames"] >= 4 and ports["qs"]["rx_frames"] >= 4


def test_qemu_restart_on_a_tap_port_needs_no_vswitch_restart(lab, qemu_lab):
    daemon, config, tmp = qemu_lab
    tap = lab.name("qtap")
    first = boot(config, tap, "52:54:00:41:00:04", "10.241.0.4", tmp)
    # qemu gone: the TAP loses carrier and the port goes down (polled once a second)
    wait_for(lambda: daemon.port(tap)["state"] == "down", 5, "the tap port to go down")
    second = boot(config, tap, "52:54:00:41:00:05", "10.241.0.5", tmp)
    assert "ping-ok" in first and "ping-ok" in second, (first, second)
    log = daemon.log.read_text()
    assert log.count(f"port {tap} (tap) up") == 2, "the port came up with each qemu"


def test_guests_on_dgram_and_connecting_stream_ports(lab, qemu_lab):
    """qemu as the stream server (server=on): vswitch connects and retries until it listens."""
    daemon, config, tmp = qemu_lab
    with ThreadPoolExecutor(2) as pool:
        dgram = pool.submit(boot, config, "qd", "52:54:00:41:00:06", "10.241.0.6", tmp)
        server = pool.submit(boot, config, "qc", "52:54:00:41:00:07", "10.241.0.7", tmp)
        dgram_marks, server_marks = dgram.result(), server.result()
    assert "ping-ok" in dgram_marks, dgram_marks
    assert "ping-ok" in server_marks, server_marks


def test_guest_takes_its_address_by_dhcp_and_resolves_its_name(lab, qemu_lab):
    daemon, config, tmp = qemu_lab
    marks = boot(config, lab.name("qtap"), "52:54:00:41:00:08", "dhcp", tmp, DHCP_SCRIPT)
    bound = [m for m in marks if m.startswith("dhcp-bound")]
    assert bound, marks
    leased = bound[0].split()[1].split("/")[0]
    assert f"router={GATEWAY}" in bound[0] and f"dns={GATEWAY}" in bound[0]
    assert "ping-ok" in marks, marks
    assert f"dns {leased}" in marks, f"nslookup qguest.lab.internal gave the lease: {marks}"
    lease = next(r for r in daemon.show("leases") if r["mac"] == "52:54:00:41:00:08")
    assert lease["ip"] == leased and lease["hostname"] == "qguest"


def test_unprivileged_qemu_opens_a_tap_port_created_for_its_user(lab, qemu_lab):
    """owner/group on a tap port: qemu running as nobody opens it, no root, no helper."""
    daemon, config, tmp = qemu_lab
    public = Path(tempfile.mkdtemp(prefix="vswitch-qemu-"))
    try:
        public.chmod(0o755)
        kernel = public / "vmlinux"
        shutil.copyfile(boot_kernel(), kernel)
        kernel.chmod(0o644)
        image = build_initramfs(ping_script("10.241.0.11"), public)
        image.chmod(0o644)
        port = lab.name("qown")
        netdev = qemu_args(config, port, "52:54:00:41:00:11").split()[1]
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        with QemuGuest(image, netdev, "52:54:00:41:00:11", kernel=kernel, prefix=nobody,
                       log_path=tmp / "nobody.log") as guest:
            marks = markers(guest.wait(timeout=180))
    finally:
        shutil.rmtree(public, ignore_errors=True)
    assert "ping-ok" in marks, marks
