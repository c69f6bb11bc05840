"""Running a real vswitch daemon from a test: write its config, start it, wait, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from vswitch.control import ControlError, request
from vswitch.lab import Lab, wait_for


class Daemon:
    """``vswitch run CONFIG`` as a child process; stopped with SIGTERM by ``stop()``."""

    def __init__(self, lab: Lab, tmp: Path, body: str, ports_up: int | None = None,
                 ns: str | None = None, python: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``ns``: the namespace it runs in (its "host"); ``python``: the interpreter command,
        e.g. behind setpriv to run it as another user."""
        self.socket = str(tmp / "ctl.sock")
        self.config = tmp / "vswitch.toml"
        self.config.write_text(f'[control]\nsocket = "{self.socket}"\n{body}')
        self.log = tmp / "vswitch.log"
        self.proc = lab.spawn([*(python or [sys.executable]), "-m", "vswitch.cli", "run", "-v",
                               str(self.config)], ns=ns, stdout=self.log.open("w"),
                              stderr=subprocess.STDOUT, env=env)
        wait_for(self._ready, 10, f"vswitch to answer on {self.socket}")
        if ports_up is not None:
            wait_for(lambda: self.up_count() >= ports_up, 10, f"{ports_up} ports up")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"vswitch exited early:\n{self.log.read_text()}")
        try:
            request(self.socket, "ping", timeout=1)
            return True
        except (ControlError, OSError, json.JSONDecodeError):
            return False

    def show(self, what: str) -> Any:
        return request(self.socket, "show", what=what)

    def port(self, name: str) -> dict[str, Any]:
        return next(p for p in self.show("ports") if p["name"] == name)

    def up_count(self) -> int:
        return sum(p["state"] == "up" for p in self.show("ports"))

    def fdb(self) -> dict[str, str]:
        return {row["mac"]: row["port"] for row in self.show("fdb")}

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)


def mac_of(lab: Lab, ns: str, dev: str) -> str:
    out = lab.run(ns, ["cat", f"/sys/class/net/{dev}/address"]).stdout
    return out.strip()


def ping(lab: Lab, ns: str, addr: str, count: int = 3, interval: float = 0.2,
         timeout: float = 30) -> int:
    """Echo replies received."""
    done = lab.run(ns, ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", addr],
                   check=False, timeout=timeout)
    for line in done.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0



RECEIVER = """
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
srv.settimeout(60)
conn, _ = srv.accept()
conn.settimeout(60)
h, n = hashlib.sha256(), 0
while data := conn.recv(1 << 16):
    h.update(data)
    n += len(data)
print(n, h.hexdigest(), flush=True)
"""

SENDER = """
import hashlib, socket, sys
data = hashlib.sha256(b"vswitch").digest() * (int(sys.argv[3]) // 32)
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
conn.sendall(data)
conn.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""


def tcp_transfer(lab: Lab, src_ns: str, dst_ns: str, addr: str, nbytes: int,
                 port: int = 5555, dial: str | None = None) -> tuple[str, str]:
    """Send ``nbytes`` over TCP from ``src_ns`` to ``addr`` in ``dst_ns`` (the sender dials
    ``dial`` if given: a forward's external address); (sent, received) as "length sha256"
    strings, so a test can assert the bytes arrived intact."""
    receiver = lab.spawn([sys.executable, "-c", RECEIVER, addr, str(port)], ns=dst_ns,
                         stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "listening"
    sent = lab.run(src_ns, [sys.executable, "-c", SENDER, dial or addr, str(port), str(nbytes)],
                   timeout=120).stdout.strip()
    received = receiver.stdout.readline().strip()
    receiver.wait(timeout=30)
    return sent, received
