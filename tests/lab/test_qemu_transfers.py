"""Real qemu guests moving megabytes, with the NIC models and ports users run.

An e1000 guest makes qemu turn its TAP's offloads off (TUNSETOFFLOAD 0): every TSO frame
vswitch sends it must be cut in software first, or it never arrives (wire.vnet Rule 3).
qemu's dgram netdev reads from a unix datagram socket that holds 10 datagrams, so a port that
drops on the first EAGAIN loses most of every burst (vswitch.ports.txqueue).

  qemu guests (tap, stream, dgram ports; virtio-net or e1000) -- vswitch in namespace H,
  the default host uplink -- H's eth0 -- veth -- the internet namespace I with two servers:
  5801 sends 8 MiB and closes, 5802 reads 8 MiB and prints their md5.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.guest.image import boot_kernel, build_initramfs
from tests.guest.qemu import QemuGuest, markers
from tests.lab.test_host_egress import internet
from tests.support import Daemon
from vswitch.cli import qemu_args
from vswitch.config import load_config

pytestmark = [pytest.mark.privileged, pytest.mark.qemu]

INET = "10.95.0.1"  # tests.test_host_egress.internet: H is 10.95.0.2
SIZE = 8 << 20
DATA = hashlib.sha256(b"vswitch").digest() * (SIZE // 32)
DATA_MD5 = hashlib.md5(DATA).hexdigest()

SERVERS = """
import hashlib, socket, sys, threading
data = hashlib.sha256(b"vswitch").digest() * (int(sys.argv[2]) // 32)

def give(conn):
    with conn:
        conn.sendall(data)

def take(conn):
    with conn:
        h, n = hashlib.md5(), 0
        while n < len(data) and (chunk := conn.recv(1 << 16)):
            h.update(chunk)
            n += len(chunk)
        print("up", n, h.hexdigest(), flush=True)

def serve(port, handler):
    srv = socket.create_server((sys.argv[1], port))
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()

threading.Thread(target=serve, args=(5801, give), daemon=True).start()
print("listening", flush=True)
serve(5802, take)
"""

# The guest's stdin is the console, which never ends: busybox nc quits at the end of stdin.
TRANSFERS = f"""
udhcpc -i eth0 -n -q -t 5 -T 3 -x hostname:$(hostname) || echo "MARK dhcp-failed"
t0=$(cut -d' ' -f1 /proc/uptime)
timeout 60 nc {INET} 5801 > /tmp/d
t1=$(cut -d' ' -f1 /proc/uptime)
echo "MARK down $(wc -c < /tmp/d) $(md5sum < /tmp/d | cut -d' ' -f1) $t0 $t1"
t0=$(cut -d' ' -f1 /proc/uptime)
timeout 60 nc {INET} 5802 < /tmp/d
t1=$(cut -d' ' -f1 /proc/uptime)
echo "MARK up $t0 $t1"
"""


@pytest.fixture
def transfer_lab(lab, tmp_path):
    host = lab.netns("th")
    inet = internet(lab, host)
    servers = lab.spawn([sys.executable, "-c", SERVERS, INET, str(SIZE)], ns=inet,
                        stdout=subprocess.PIPE, text=True)
    assert servers.stdout is not None and servers.stdout.readline().strip() == "listening"
    body = f"""
[switch]
name = "t{lab.tag}"
[network]
subnet = "10.86.0.0/24"
[dhcp]
lease_file = "{tmp_path}/leases"
[dns]
forwarders = []
[[port]]
name = "{lab.name('tq1')}"
type = "tap"
[[port]]
name = "{lab.name('tq2')}"
type = "tap"
[[port]]
name = "qs"
type = "stream"
path = "{tmp_path}/qs.sock"
[[port]]
name = "qd"
type = "dgram"
path = "{tmp_path}/qd.sock"
"""
    daemon = Daemon(lab, tmp_path, body, ns=host)
    return daemon, host, servers, load_config(daemon.config)


def boot(config, host: str, port: str, mac: str, model: str, script: str, tmp_path,
         hostname: str) -> list[str]:
    image = build_initramfs(f"hostname {hostname}\n{script}", tmp_path / f"img-{hostname}")
    netdev = qemu_args(config, port, mac).split()[1]
    with QemuGuest(image, netdev, mac, kernel=boot_kernel(), model=model,
                   prefix=["ip", "netns", "exec", host],
                   log_path=tmp_path / f"{hostname}.log") as guest:
        return markers(guest.wait(timeout=240))


def transferred(marks: list[str], servers) -> float:
    """Check the guest's download and upload were whole; the seconds they took."""
    down = next((m.split() for m in marks if m.startswith("down ")), None)
    up = next((m.split() for m in marks if m.startswith("up ")), None)
    assert down is not None and up is not None, marks
    assert down[1:3] == [str(SIZE), DATA_MD5], f"the download arrived whole: {down}"
    assert servers.stdout.readline().split() == ["up", str(SIZE), DATA_MD5], "the upload"
    return float(down[4]) - float(down[3]) + float(up[2]) - float(up[1])


def test_an_e1000_guest_downloads_and_uploads_after_a_virtio_guest_on_the_same_tap(
        lab, transfer_lab, tmp_path):
    """The same tap port, qemu restarted with another NIC model: vswitch follows the TAP's
    offloads (none for e1000) without a restart, and the e1000 guest gets every byte."""
    daemon, host, servers, config = transfer_lab
    tap = lab.name("tq1")
    virtio = boot(config, host, tap, "52:54:00:86:00:01", "virtio-net-pci", TRANSFERS,
                  tmp_path, "virtio1")
    transferred(virtio, servers)
    e1000 = boot(config, host, tap, "52:54:00:86:00:02", "e1000", TRANSFERS, tmp_path,
                 "e1000a")
    transferred(e1000, servers)
    port = daemon.port(tap)
    assert port["software"]["segmented"] > 0, "the e1000 guest's super-frames were cut here"
    assert port["drops"].get("tx-full", 0) == 0, port["drops"]
    leases = {r["hostname"]: r["mac"] for r in daemon.show("leases")}
    assert leases.get("e1000a") == "52:54:00:86:00:02", leases
    log = daemon.log.read_text()
    assert f"port {tap}: {tap} now takes offloads: none" in log, "the change was followed"


def test_stream_and_dgram_guests_move_8_mib_as_fast_as_a_tap_guest(lab, transfer_lab,
                                                                   tmp_path):
    """One guest at a time, so the timings compare: the dgram port's queue keeps TCP going
    (before it, most of every burst was dropped and 8 MiB did not arrive in 60 s)."""
    daemon, host, servers, config = transfer_lab
    seconds = {}
    for port, mac, model, name in ((lab.name("tq2"), "52:54:00:86:00:03", "virtio-net-pci",
                                    "tapv"),
                                   ("qs", "52:54:00:86:00:04", "virtio-net-pci", "streamv"),
                                   ("qd", "52:54:00:86:00:05", "virtio-net-pci", "dgramv"),
                                   ("qd", "52:54:00:86:00:06", "e1000", "dgrame")):
        seconds[name] = transferred(boot(config, host, port, mac, model, TRANSFERS, tmp_path,
                                         name), servers)
    print("seconds for 8 MiB down and up:", seconds)
    for name in ("streamv", "dgramv", "dgrame"):
        assert seconds[name] < 3 * seconds["tapv"] + 5, seconds
    drops = daemon.port("qd")["drops"]
    assert drops.get("tx-full", 0) <= 10, drops


EXCHANGE = """
ip addr add {me}/24 dev eth0
dd if=/dev/urandom of=/tmp/mine bs=64k count=64 2>/dev/null
echo "MARK mine $(md5sum < /tmp/mine | cut -d' ' -f1)"
mkfifo /tmp/hold
nc -l -p 6000 < /tmp/hold > /tmp/theirs &
exec 3<> /tmp/hold
i=0
until timeout 60 nc {peer} 6000 < /tmp/mine; do
  i=$((i+1)); [ $i -gt 90 ] && break; sleep 1
done
wait
echo "MARK theirs $(wc -c < /tmp/theirs) $(md5sum < /tmp/theirs | cut -d' ' -f1)"
"""


def test_a_virtio_guest_and_an_e1000_guest_exchange_4_mib_both_ways(lab, transfer_lab,
                                                                    tmp_path):
    daemon, host, _, config = transfer_lab
    a, b = "10.86.0.201", "10.86.0.202"
    with ThreadPoolExecutor(2) as pool:
        virtio = pool.submit(boot, config, host, lab.name("tq1"), "52:54:00:86:00:07",
                             "virtio-net-pci", EXCHANGE.format(me=a, peer=b), tmp_path, "xv")
        e1000 = pool.submit(boot, config, host, lab.name("tq2"), "52:54:00:86:00:08", "e1000",
                            EXCHANGE.format(me=b, peer=a), tmp_path, "xe")
        virtio_marks, e1000_marks = virtio.result(), e1000.result()

    def md5s(marks: list[str]) -> tuple[str, list[str]]:
        mine = next(m.split()[1] for m in marks if m.startswith("mine "))
        theirs = next(m.split()[1:] for m in marks if m.startswith("theirs "))
        return mine, theirs

    (v_mine, v_theirs), (e_mine, e_theirs) = md5s(virtio_marks), md5s(e1000_marks)
    assert v_theirs == [str(4 << 20), e_mine], (virtio_marks, e1000_marks)
    assert e_theirs == [str(4 << 20), v_mine], (virtio_marks, e1000_marks)
