"""``vswitch top`` against a real daemon, no privileges needed: two stream ports with frames
flowing between them and a guest's UDP flow out through the host uplink (to a socket on the
host's loopback).  ``top`` runs in a pseudo-terminal of 100x30 and is read like a screen: the
ports and the flow show non-zero rates; when the daemon goes away it says so and keeps trying;
SIGINT ends it with status 0.  ``--once`` prints one frame with rates and exits.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.support import Daemon

REPO = Path(__file__).resolve().parents[2]
GATEWAY_MAC = "52:54:00:e7:00:01"
GUEST = "10.231.0.10"
GATEWAY = "10.231.0.1"

#: A stand-in for two qemu guests on stream ports sa and sb: frames both ways between them and
#: a UDP datagram from guest A to the host's loopback (the gateway address stands for it), every
#: 10 ms, for at most argv[4] seconds; what comes back is read and thrown away.
TRAFFIC = """
import select, socket, sys, time
from vswitch.ports.stream import encode_frame
from wire.packets import ETH_P_IP, PROTO_UDP, encode_ethernet, encode_ipv4, encode_udp
sa, sb, gw_mac, seconds, guest, gw = sys.argv[1:7]
A, B = bytes.fromhex("525400000a0a"), bytes.fromhex("525400000b0b")
host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
host.bind(("127.0.0.1", 0))
src, dst = socket.inet_aton(guest), socket.inet_aton(gw)
ip = encode_ipv4(src, dst, PROTO_UDP, encode_udp(src, dst, 40000, host.getsockname()[1],
                                                 b"x" * 1000))
a, b = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
for sock, path in ((a, sa), (b, sb)):
    sock.settimeout(5)
    sock.connect(path)
frames = [(b, A + B + b"\\x88\\xb5" + b"b" * 1000), (a, B + A + b"\\x88\\xb5" + b"a" * 1000),
          (a, encode_ethernet(bytes.fromhex(gw_mac.replace(":", "")), A, ETH_P_IP, ip))]
print("sending", flush=True)
end = time.monotonic() + float(seconds)
while time.monotonic() < end:
    for sock, frame in frames:
        sock.sendall(encode_frame(frame))
    for _ in range(100):  # drain what came back; EOF ends it (the switch went away)
        ready = select.select([a, b, host], [], [], 0)[0]
        if not ready or not all(sock.recv(1 << 16) for sock in ready):
            break
    time.sleep(0.01)
"""

#: CSI and OSC escape sequences (cursor moves, colours, the alternate screen), and the
#: character-set selections: what is left is the text on the screen.
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-B]")


def free_port() -> int:
    """A TCP port free on the host's loopback now (for a forward to listen on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(tmp: Path, name: str) -> str:
    return f"""
[switch]
name = "{name}"
[network]
subnet = "10.231.0.0/24"
gateway_mac = "{GATEWAY_MAC}"
[dhcp]
lease_file = "{tmp}/leases"
[dns]
enabled = false
[[forward]]
proto = "tcp"
listen = "127.0.0.1"
port = {free_port()}
to = "{GUEST}:22"
[[port]]
name = "sa"
type = "stream"
path = "{tmp}/sa.sock"
[[port]]
name = "sb"
type = "stream"
path = "{tmp}/sb.sock"
"""


def start(lab, tmp: Path) -> tuple[Daemon, subprocess.Popen]:
    """A daemon with two stream ports, and traffic through it for at most 60 s."""
    daemon = Daemon(lab, tmp, config(tmp, f"top{lab.tag}"))
    traffic = lab.spawn([sys.executable, "-c", TRAFFIC, f"{tmp}/sa.sock", f"{tmp}/sb.sock",
                         GATEWAY_MAC, "60", GUEST, GATEWAY], cwd=REPO, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True)
    assert traffic.stdout is not None and traffic.stdout.readline().strip() == "sending"
    return daemon, traffic


class Terminal:
    """A command on a pseudo-terminal of ``columns`` x ``rows``; its screen output as text."""

    def __init__(self, lab, cmd: list[str], columns: int = 100, rows: int = 30) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        try:
            self.proc = lab.spawn(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
                                  env=env)
        finally:
            os.close(slave)  # the child holds it now: its exit gives EOF here
        self.raw = b""

    @property
    def text(self) -> str:
        return ESCAPES.sub("", self.raw.decode(errors="replace"))

    def read_until(self, predicate, timeout: float) -> bool:
        """Read what the command writes until ``predicate(text)`` holds, EOF or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.text):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 1 << 16)
                except OSError:  # EIO: the command exited and closed the terminal
                    chunk = b""
                if not chunk:
                    break
                self.raw += chunk
        return predicate(self.text)

    def close(self) -> None:
        os.close(self.master)


def rows(text: str, first: str) -> list[list[str]]:
    """The screen lines that start with the word ``first``, split into words."""
    return [line.split() for line in re.split(r"[\r\n]+", text) if line.split()[:1] == [first]]


def moving(text: str, port: str) -> bool:
    """A ports row for ``port`` with a non-zero rx frame rate (the 5th column)."""
    return any(len(r) >= 9 and r[2] == "up" and r[4] not in ("0", "-") for r in rows(text, port))


def flow_moving(text: str) -> bool:
    """The guest's UDP flow with a non-zero packet rate in the original direction."""
    return any(len(r) >= 7 and r[2].startswith(f"{GUEST}:40000") and
               r[-2].split("/")[0] not in ("0", "-") for r in rows(text, "udp"))


def test_top_in_a_terminal_shows_rates_then_disconnection_and_exits_0_on_sigint(lab, tmp_path):
    daemon, _ = start(lab, tmp_path)
    term = Terminal(lab, [sys.executable, "-m", "vswitch.cli", "top", "--socket",
                          daemon.socket, "--interval", "0.5"])
    try:
        seen = term.read_until(lambda t: moving(t, "sa") and moving(t, "sb")
                               and flow_moving(t), 20)
        assert seen, term.text[-3000:]
        assert rows(term.text, "gateway"), "the router port is listed too"
        assert f"top{lab.tag}" in term.text, "the switch's name heads the screen"
        assert "Forwards (1)" in term.text and "MAC table (2)" in term.text, term.text[-3000:]
        assert rows(term.text, "52:54:00:00:0b:0b")[-1][1] == "sb", "B learned on its port"
        assert term.proc.poll() is None

        daemon.stop()
        assert term.read_until(lambda t: "disconnected, retrying" in t, 10), term.text[-2000:]
        assert term.proc.poll() is None, "a daemon going away is not fatal"

        os.kill(term.proc.pid, signal.SIGINT)
        term.read_until(lambda t: False, 5)  # until EOF
        assert term.proc.wait(timeout=10) == 0
        assert "Traceback" not in term.text, term.text[-3000:]
    finally:
        term.close()


def test_once_prints_one_frame_with_rates(lab, tmp_path):
    daemon, _ = start(lab, tmp_path)
    env = {**os.environ, "COLUMNS": "100", "LINES": "30"}
    done = subprocess.run([sys.executable, "-m", "vswitch.cli", "top", "--once", "--interval",
                           "0.5", "--socket", daemon.socket], capture_output=True, text=True,
                          timeout=30, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert moving(done.stdout, "sa") and moving(done.stdout, "sb"), done.stdout
    assert flow_moving(done.stdout), done.stdout
    assert len(done.stdout.splitlines()) <= 30 and "\x1b" not in done.stdout


def test_once_without_a_daemon_fails_with_the_cli_message(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vswitch.cli", "top", "--once", "--socket",
                           str(tmp_path / "none.sock")], capture_output=True, text=True,
                          timeout=30, cwd=REPO)
    assert done.returncode == 2 and "no vswitch is listening" in done.stderr
