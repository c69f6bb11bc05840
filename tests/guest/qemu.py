"""Run a qemu guest built by image.py and collect its serial console.

KVM does not work in this nested VM, so the guest always runs under TCG; booting the extracted
vmlinux via PVH (image.boot_kernel) takes ~3-4 s to power-off, the bzImage ~8-12 s.
The console goes to a file (not a pipe) so a chatty guest can never block on a full pipe and
the output so far is still readable when the guest hangs.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .image import boot_kernel

# Not anchored at line start: SeaBIOS leaves "Booting from ROM.." (and escape codes to clear
# the screen) unterminated, so the guest's first line is glued to it.
_MARK = re.compile(r"(?<!\w)MARK (\S.*?)\s*$", re.M)
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|.)")


def markers(output: str) -> list[str]:
    """The `MARK <text>` lines of a console log, without the prefix, in order."""
    return _MARK.findall(_ANSI.sub("", output.replace("\r", "")))


class GuestTimeout(TimeoutError):
    """The guest did not power off in time; .output holds the console so far."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(f"{message}\n--- guest console ---\n{output}")
        self.output = output


class QemuGuest:
    """One qemu-system-x86_64 process with a single NIC (``model``: virtio-net-pci, e1000).

    netdev is the full -netdev value and must use id=n0, e.g.
    "tap,id=n0,ifname=tapg,script=no,downscript=no" or
    "stream,id=n0,server=off,addr.type=unix,addr.path=/run/x.sock".
    prefix is prepended to the command line, e.g. ["ip", "netns", "exec", "ns1"] (ip execs qemu,
    so the PID we hold is qemu's own).
    """

    def __init__(
        self,
        initrd: Path,
        netdev: str,
        mac: str,
        *,
        kernel: Path | None = None,
        prefix: Sequence[str] = (),
        log_path: Path | None = None,
        memory_mb: int = 256,
        extra_args: Sequence[str] = (),
        append: str = "console=ttyS0 panic=-1 quiet",
        pass_fds: Sequence[int] = (),
        model: str = "virtio-net-pci",
    ) -> None:
        self.cmd: list[str] = [
            *prefix,
            "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb),
            "-nographic", "-no-reboot",  # panic=-1 + -no-reboot: a dead init exits qemu too
            "-kernel", str(kernel or boot_kernel()), "-initrd", str(initrd),
            "-append", append,
            "-netdev", netdev,
            # romfile=: no iPXE option ROM; we never netboot and it only slows the BIOS.
            "-device", f"{model},netdev=n0,mac={mac},romfile=",
            *extra_args,
        ]
        # Pass log_path to keep the console for a failure report; otherwise a temp file that
        # is removed on __exit__ (wait() and GuestTimeout already carry the text).
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="qemu-console-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        # e.g. one end of a socketpair for "stream,id=n0,addr.type=fd,addr.str=<fd>"
        self.pass_fds = tuple(pass_fds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.elapsed = 0.0  # seconds from start to exit, set by wait()

    def start(self) -> QemuGuest:
        with open(self.log_path, "wb") as log:
            # stdin=DEVNULL: qemu's -nographic monitor mux reads stdin; EOF is harmless,
            # while inheriting a terminal would let it steal keystrokes / set raw mode.
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, pass_fds=self.pass_fds)
        self.started_at = time.monotonic()
        return self

    def output(self) -> str:
        """Console output so far (CRs removed)."""
        return self.log_path.read_bytes().decode(errors="replace").replace("\r", "")

    def wait(self, timeout: float = 60.0) -> str:
        """Wait for the guest to power off; return its console. Kill and raise on timeout."""
        assert self.proc is not None, "start() first"
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise GuestTimeout(f"guest still running after {timeout:.0f}s; killed",
                               self.output()) from None
        self.elapsed = time.monotonic() - self.started_at
        out = self.output()
        if rc != 0:
            raise RuntimeError(f"qemu exited with {rc}: {' '.join(self.cmd)}\n{out}")
        return out

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> QemuGuest:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
