"""Build a tiny bootable guest image from files Debian packages installed on this host.

The guest is the distribution kernel (`linux-image-amd64`) plus a gzip'd newc cpio initramfs
holding a static busybox (`busybox-static`) and the virtio-net and e1000 modules, and, when
`make peers` has built it, a static udhcpc6 (/bin/udhcpc6: Debian's busybox has none). Nothing
is downloaded:
tests must be able to build the guest offline, from what the machine already has.

The cpio archive is written in pure Python (newc is a trivial format), so no `cpio` binary and no
root is needed to build it; only booting it needs qemu.
"""

from __future__ import annotations

import functools
import gzip
import io
import lzma
import os
import re
import stat
import struct
import sys
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

#: A static busybox with udhcpc6 (the DHCPv6 client Debian's busybox is built without), made by
#: tests/peers/build_udhcpc6.sh (`make peers`) next to the dynamic one the namespace tests run.
_REPO = Path(__file__).resolve().parents[2]
UDHCPC6 = (Path(sys.executable).parent / "udhcpc6-static", _REPO / ".venv/bin/udhcpc6-static")

# insmod has no dependency resolution, so the order matters (it follows modules.dep).  e1000 is
# qemu's default NIC for many guest images: a guest with it makes qemu turn the TAP's offloads
# off, which is the case a virtio-only matrix never sees.
NIC_MODULES: tuple[str, ...] = (
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
    "drivers/net/ethernet/intel/e1000/e1000",
)

# Applets the prelude and typical test scripts use; each becomes a /bin symlink to busybox.
APPLETS: tuple[str, ...] = (
    "sh", "ash", "ip", "ping", "udhcpc", "nslookup", "wget", "insmod", "poweroff", "sleep",
    "cat", "echo", "ifconfig", "route", "mount", "umount", "ls", "grep", "sed", "awk", "head",
    "tail", "wc", "seq", "printf", "test", "[", "true", "false", "timeout", "nc", "arping",
    "hostname", "dmesg", "uname", "mkdir", "rm", "cp", "date", "tr", "cut", "sysctl", "arp",
    "traceroute", "tftp", "netstat", "usleep", "kill", "ps", "dd", "hexdump", "md5sum", "ping6",
    "mkfifo",
)

# The busybox udhcpc does not apply a lease itself: it runs this script. Shipped at both
# default script paths (Debian's and upstream's) so `udhcpc -i eth0 -n -q` works without `-s`.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    fi
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    echo "MARK dhcp-$1 $ip/${mask:-24} router=$router dns=$dns"
    ;;
esac
exit 0
"""

# udhcpc6's script in the guest: run `udhcpc6 -s UDHCPC6_SCRIPT_PATH`, as its compiled-in default
# is udhcpc's (IPv4) script.  It puts the leased address ($ipv6, written in full) on the
# interface as a /128 and says so; "deconfig" (sent as udhcpc6 starts, too) leaves the interface
# alone: it holds the SLAAC address.
UDHCPC6_SCRIPT_PATH = "/usr/share/udhcpc/default6.script"
UDHCPC6_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    if [ -n "$ipv6" ] && ! ip -6 addr replace "$ipv6/128" dev "$interface"; then
      echo "MARK dhcp6-addr-failed $ipv6"
    fi
    echo "MARK dhcp6-$1 $ipv6 dns=$dns search=$search"
    ;;
esac
exit 0
"""

# Runs before the caller's script. The modules are loaded before /dev is replaced because
# insmod only needs the files; eth0 exists once its driver is loaded (probe is synchronous).
PRELUDE = """#!/bin/sh
export PATH=/bin
echo  # end the line SeaBIOS left open ("Booting from ROM..")
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{insmods}
ip link set lo up
if ip link set eth0 up; then echo "MARK eth0-up"; else echo "MARK eth0-missing"; fi
"""

EPILOGUE = """
echo "MARK init-done"
poweroff -f
"""


def find_kernel() -> Path:
    """Newest /boot/vmlinuz-* (the running kernel may be a different, module-less one)."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name[8:]))
    if not kernels:
        raise FileNotFoundError("no /boot/vmlinuz-*: install linux-image-amd64")
    return kernels[-1]


def find_modules_dir(kernel: Path | None = None) -> Path:
    """/lib/modules/<ver> matching the kernel image (NOT `uname -r`)."""
    kernel = kernel or find_kernel()
    path = Path("/lib/modules") / kernel.name.removeprefix("vmlinuz-")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} missing for {kernel}")
    return path


def boot_kernel(kernel: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The kernel to hand qemu: an uncompressed vmlinux extracted from the bzImage, if PVH-capable.

    Why: without KVM, the bzImage's own xz decompressor runs under TCG and takes ~5 s per boot.
    qemu boots an ELF vmlinux with a PVH entry note directly (no decompression, no real mode),
    which halves boot-to-poweroff. Extracted once (host-side, ~1 s) and cached on disk; falls
    back to the bzImage if the payload or the note is not what we expect.
    """
    kernel = kernel or find_kernel()
    st = kernel.stat()
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / f"vswitch-guest-{os.getuid()}"
    version = kernel.name.removeprefix("vmlinuz-")
    out = cache_dir / f"vmlinux-{version}-{st.st_size}-{st.st_mtime_ns}"  # new kernel, new entry
    if out.exists():
        return out
    elf = _extract_vmlinux(kernel.read_bytes())
    if elf is None or not _has_pvh_note(elf):
        return kernel
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write-then-rename: parallel test processes may race to build the same cache entry.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".vmlinux-")
    with os.fdopen(fd, "wb") as f:
        f.write(elf)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


def _extract_vmlinux(bz: bytes) -> bytes | None:
    """The ELF inside a bzImage (boot protocol >= 2.08 records where its payload is)."""
    if bz[0x202:0x206] != b"HdrS":
        return None
    setup_sects = bz[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bz, 0x248)
    payload = bz[(setup_sects + 1) * 512 + offset:][:length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            # A decompressor object, because the payload ends with a 4-byte size after the
            # xz stream that lzma.decompress() would try to parse as a second stream.
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(wbits=31).decompress(payload)
        else:
            return None  # zstd/lz4/...: no stdlib decompressor, keep the bzImage
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if elf.startswith(b"\x7fELF\x02\x01") else None


def _has_pvh_note(elf: bytes) -> bool:
    """Does the 64-bit ELF carry XEN_ELFNOTE_PHYS32_ENTRY (18), which qemu needs for PVH boot?"""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf,
                                                                 phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _version_key(ver: str) -> list[int | str]:
    # "6.1.0-56-amd64" must sort after "6.1.0-9-amd64": compare numbers numerically.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", ver)]


@functools.cache
def _module_blobs(modules_dir: Path) -> tuple[tuple[str, bytes], ...]:
    """(name, uncompressed .ko bytes) in insmod order; read once per process.

    Modules are decompressed here because busybox insmod does not reliably handle compressed
    modules (and Debian 12's own are uncompressed anyway).
    """
    blobs = []
    for rel in NIC_MODULES:
        base = modules_dir / "kernel" / rel
        for suffix, unpack in ((".ko", None), (".ko.xz", lzma.decompress),
                               (".ko.gz", gzip.decompress)):
            path = base.with_name(base.name + suffix)
            if path.exists():
                data = path.read_bytes()
                blobs.append((base.name + ".ko", unpack(data) if unpack else data))
                break
        else:
            raise FileNotFoundError(f"module {base}.ko[.xz|.gz] not found")
    return tuple(blobs)


@functools.cache
def _busybox() -> bytes:
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} missing: install busybox-static")
    return BUSYBOX.read_bytes()


def find_udhcpc6() -> Path | None:
    """The static udhcpc6 build_udhcpc6.sh made, or None: not built, or not static (the guest
    has no dynamic loader and no libc)."""
    for path in UDHCPC6:
        if os.access(path, os.X_OK) and _is_static_elf(_udhcpc6_bytes(path)):
            return path
    return None


def _udhcpc6_bytes(path: Path) -> bytes:
    st = path.stat()
    return _file_bytes(path, st.st_size, st.st_mtime_ns)


def _is_static_elf(elf: bytes) -> bool:
    """A 64-bit little-endian ELF without PT_INTERP."""
    if not elf.startswith(b"\x7fELF\x02\x01"):
        return False
    try:
        phoff, = struct.unpack_from("<Q", elf, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
        return all(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] != 3  # PT_INTERP
                   for i in range(phnum))
    except struct.error:  # truncated
        return False


@functools.cache
def _file_bytes(path: Path, size: int, mtime_ns: int) -> bytes:
    """path's bytes, read once per process for each (size, mtime): a rebuilt file is read
    again."""
    return path.read_bytes()


class _Cpio:
    """Minimal writer for the 'newc' cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = (self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name.encode() + b"\0")
        self._pad()  # header (110 bytes) + name is padded to a multiple of 4
        self.buf.write(data)
        self._pad()  # so is the file data

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(
    init_script: str,
    out_dir: Path,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    modules_dir: Path | None = None,
    name: str = "initramfs.cpio.gz",
) -> Path:
    """Write out_dir/name: busybox + NIC modules + /init (prelude, init_script, poweroff), and
    /bin/udhcpc6 with its script at UDHCPC6_SCRIPT_PATH when find_udhcpc6() finds one.

    init_script is plain sh run as PID 1 after eth0 is up; print `MARK <word>` lines for tests.
    extra_files maps absolute guest paths (e.g. "/etc/hosts") to contents (mode 0755).
    """
    modules = _module_blobs(modules_dir or find_modules_dir())
    insmods = "\n".join(f"insmod /lib/modules/{n} || echo \"MARK insmod-failed {n}\""
                        for n, _ in modules)
    init = PRELUDE.format(insmods=insmods) + "\n" + init_script + "\n" + EPILOGUE

    cpio = _Cpio()
    dirs = ["bin", "dev", "proc", "sys", "etc", "tmp", "root", "lib", "lib/modules",
            "etc/udhcpc", "usr", "usr/share", "usr/share/udhcpc"]
    # Debian's busybox looks for /etc/udhcpc/default.script, upstream's default is the other.
    files: dict[str, bytes] = {"usr/share/udhcpc/default.script": UDHCPC_SCRIPT.encode(),
                               "etc/udhcpc/default.script": UDHCPC_SCRIPT.encode()}
    udhcpc6 = find_udhcpc6()
    if udhcpc6 is not None:  # a busybox of its own, run by this name (argv[0] picks the applet)
        files["bin/udhcpc6"] = _udhcpc6_bytes(udhcpc6)
        files[UDHCPC6_SCRIPT_PATH.lstrip("/")] = UDHCPC6_SCRIPT.encode()
    for path, data in (extra_files or {}).items():
        path = path.lstrip("/")
        parts = path.split("/")[:-1]
        dirs += ["/".join(parts[: i + 1]) for i in range(len(parts))]
        files[path] = data
    for d in dict.fromkeys(dirs):  # dedupe, keep parents before children
        cpio.add(d, stat.S_IFDIR | 0o755)
    # The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    cpio.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    cpio.add("bin/busybox", stat.S_IFREG | 0o755, _busybox())
    for applet in APPLETS:
        cpio.add(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox")
    for n, blob in modules:
        cpio.add(f"lib/modules/{n}", stat.S_IFREG | 0o644, blob)
    for path, data in files.items():
        cpio.add(path, stat.S_IFREG | 0o755, data)
    cpio.add("init", stat.S_IFREG | 0o755, init.encode())

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / name
    # mtime=0 and level 1: reproducible bytes, and compression speed matters more than size.
    out.write_bytes(gzip.compress(cpio.finish(), compresslevel=1, mtime=0))
    return out
