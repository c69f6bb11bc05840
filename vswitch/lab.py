"""A throwaway lab of network namespaces, for the demo, the tests and the benchmarks.

Rule: everything a Lab creates (namespaces, links, processes) carries a random suffix and is
removed by ``close()``, even when the code using it failed.  Traffic only ever goes to
addresses inside namespaces the Lab made.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from vswitch.ports.tun import disable_ipv6


class Lab:
    def __init__(self, prefix: str = "vsw") -> None:
        self.tag = secrets.token_hex(2)
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.files: list[Path] = []
        self.dirs: list[Path] = []

    def name(self, base: str) -> str:
        """A unique, interface-safe (<= 15 chars) name for this lab."""
        return f"{base}-{self.tag}"[:15]

    def netns(self, base: str) -> str:
        ns = self.name(base)
        sh(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def veth(self, outer: str, inner_ns: str, inner: str = "eth0",
             outer_ns: str | None = None) -> str:
        """A veth pair: ``inner`` goes into ``inner_ns``; ``outer`` stays in the root namespace,
        or goes into ``outer_ns`` (it then lives and dies with that namespace)."""
        where = ["netns", outer_ns] if outer_ns else []
        sh(["ip", "link", "add", outer, *where, "type", "veth", "peer", "name", inner, "netns",
            inner_ns])
        if outer_ns:
            sh(["ip", "netns", "exec", outer_ns, "sysctl", "-qw",
                f"net.ipv6.conf.{outer}.disable_ipv6=1"])
            sh(["ip", "-n", outer_ns, "link", "set", outer, "up"])
            return outer
        self.links.append(outer)
        disable_ipv6(outer)
        sh(["ip", "link", "set", outer, "up"])
        return outer

    def addr(self, ns: str, dev: str, cidr: str, mac: str | None = None) -> None:
        if mac:
            sh(["ip", "-n", ns, "link", "set", dev, "address", mac])
        sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
        sh(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])
        sh(["ip", "-n", ns, "link", "set", dev, "up"])

    def spawn(self, cmd: list[str], ns: str | None = None, **kw: Any) -> subprocess.Popen[Any]:
        full = (["ip", "netns", "exec", ns] if ns else []) + cmd
        proc = subprocess.Popen(full, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def run(self, ns: str, cmd: str | list[str], check: bool = True,
            timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(cmd) if isinstance(cmd, str) else cmd
        try:
            return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                                  text=True, check=check, timeout=timeout, input=input)
        except subprocess.CalledProcessError as exc:  # say why, not only that it failed
            exc.add_note(f"stdout: {exc.stdout[-2000:]}\nstderr: {exc.stderr[-2000:]}")
            raise

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for f in self.files:
            f.unlink(missing_ok=True)
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sh(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; bounded in time (raises TimeoutError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
