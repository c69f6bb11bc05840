"""The guest fixture itself: the initramfs is well-formed, and a real qemu guest boots and pings.

The boot test's only traffic is between the guest and a TAP inside a namespace made here.
"""

from __future__ import annotations

import gzip
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.guest.image import (
    BUSYBOX,
    NIC_MODULES,
    UDHCPC6_SCRIPT_PATH,
    boot_kernel,
    build_initramfs,
    find_kernel,
    find_udhcpc6,
)
from tests.guest.qemu import QemuGuest, markers

PING_SCRIPT = """
ip addr add 10.77.0.2/24 dev eth0
if ping -c 3 -W 2 10.77.0.1; then echo "MARK ping-ok"; else echo "MARK ping-fail"; fi
"""


def _read_newc(blob: bytes) -> dict[str, tuple[int, bytes]]:
    """Parse a newc cpio: name -> (mode, data). Independent of the writer, to check it."""
    entries: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert blob[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(blob[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = blob[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, blob[pos:pos + size])
        pos = (pos + size + 3) & ~3


def test_initramfs_contents(tmp_path: Path) -> None:
    if not BUSYBOX.exists() or not list(Path("/boot").glob("vmlinuz-*")):
        require(False, "busybox-static or linux-image-amd64 not installed")
    img = build_initramfs("echo MARK hi", tmp_path)
    entries = _read_newc(gzip.decompress(img.read_bytes()))
    init = entries["init"][1].decode()
    assert init.startswith("#!/bin/sh") and "echo MARK hi" in init
    assert init.rstrip().endswith("poweroff -f")
    names = [m.rsplit("/", 1)[1] for m in NIC_MODULES]
    order = [init.index(f"insmod /lib/modules/{n}.ko") for n in names]
    assert order == sorted(order)
    assert entries["bin/sh"] == (0o120777, b"busybox")
    assert entries["bin/busybox"][1][:4] == b"\x7fELF"
    for d in ("dev", "proc", "sys"):
        assert entries[d][0] == 0o040755
    udhcpc6 = find_udhcpc6()  # the static one `make peers` builds, when it is there
    if udhcpc6 is not None:
        assert entries["bin/udhcpc6"] == (0o100755, udhcpc6.read_bytes())
        assert entries[UDHCPC6_SCRIPT_PATH.lstrip("/")][1].startswith(b"#!/bin/sh")
    if shutil.which("cpio"):  # cross-check with GNU cpio where available
        listing = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(img.read_bytes()),
                                 capture_output=True, check=True).stdout.decode().split()
        assert set(listing) == set(entries)


def test_markers() -> None:
    out = "\x1bc\x1b[2JBooting from ROM..MARK eth0-up\r\nfoo\r\nMARK ping-ok  \r\nxMARK no\r\n"
    assert markers(out) == ["eth0-up", "ping-ok"]


@pytest.fixture
def tap_netns() -> Iterator[str]:
    """A fresh namespace holding TAP `tapg` with 10.77.0.1/24; always deleted afterwards."""
    require(os.path.exists("/dev/net/tun"), "/dev/net/tun missing")
    ns = f"gtest-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "tuntap", "add", "dev", "tapg", "mode", "tap"],
                    ["ip", "addr", "add", "10.77.0.1/24", "dev", "tapg"],
                    ["ip", "link", "set", "tapg", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        yield ns
    finally:
        # The TAP is owned by the namespace and goes with it (qemu is dead by now).
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.privileged
@pytest.mark.qemu
def test_guest_boots_and_pings(tap_netns: str, tmp_path: Path) -> None:
    require(BUSYBOX.exists(), "busybox-static not installed")
    require(bool(list(Path("/boot").glob("vmlinuz-*"))), "linux-image-amd64 not installed")
    img = build_initramfs(PING_SCRIPT, tmp_path)
    kernel = boot_kernel(find_kernel())
    with QemuGuest(img, "tap,id=n0,ifname=tapg,script=no,downscript=no", "52:54:00:77:00:02",
                   kernel=kernel, prefix=["ip", "netns", "exec", tap_netns],
                   log_path=tmp_path / "console.log") as guest:
        out = guest.wait(timeout=120)  # TCG on a busy 2-core box: ~4-6 s, rarely far more
    assert "ping-ok" in markers(out), out
    assert markers(out)[-1] == "init-done", out
