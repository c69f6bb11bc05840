"""The datapath end to end through stream and dgram ports, no privileges needed.

Test peers speak qemu's framing directly over the unix sockets: what one sends, the right
others receive, byte for byte.  Also the control socket and the CLI's views of it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Daemon
from vswitch.lab import wait_for
from vswitch.ports.stream import StreamDecoder, encode_frame

MAC_A = bytes.fromhex("525400000a0a")
MAC_B = bytes.fromhex("525400000b0b")
MAC_C = bytes.fromhex("525400000c0c")
BCAST = b"\xff" * 6


def eth(dst: bytes, src: bytes, payload: bytes = b"hello") -> bytes:
    return dst + src + b"\x88\xb5" + payload.ljust(46, b".")


class StreamPeer:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(0.5)
        self.decoder = StreamDecoder()

    def send(self, frame: bytes) -> None:
        self.sock.sendall(encode_frame(frame))

    def recv(self, timeout: float = 2.0) -> list[bytes]:
        frames: list[bytes] = []
        end = time.monotonic() + timeout
        while not frames and time.monotonic() < end:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            frames += self.decoder.feed(data)
        return frames


class DgramPeer:
    """A dgram peer connected to vswitch's socket; ``like_qemu``: bound but unconnected,
    sending with sendto, as qemu's net/dgram.c does."""

    def __init__(self, path: str, like_qemu: bool = False, suffix: str = ".peer") -> None:
        self.path = path
        self.like_qemu = like_qemu
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path + suffix)
        if not like_qemu:
            self.sock.connect(path)
        self.sock.settimeout(0.5)

    def send(self, frame: bytes) -> None:
        if self.like_qemu:
            self.sock.sendto(frame, self.path)
        else:
            self.sock.send(frame)

    def recv(self, timeout: float = 2.0) -> list[bytes]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                return [self.sock.recv(65536)]
            except TimeoutError:
                continue
        return []


@pytest.fixture
def switch(lab, tmp_path):
    body = f"""
[switch]
name = "s{lab.tag}"
[[port]]
name = "sa"
type = "stream"
path = "{tmp_path}/sa.sock"
[[port]]
name = "sb"
type = "stream"
path = "{tmp_path}/sb.sock"
[[port]]
name = "dc"
type = "dgram"
path = "{tmp_path}/dc.sock"
"""
    daemon = Daemon(lab, tmp_path, body)
    a, b = StreamPeer(f"{tmp_path}/sa.sock"), StreamPeer(f"{tmp_path}/sb.sock")
    c = DgramPeer(f"{tmp_path}/dc.sock")
    c.send(eth(BCAST, MAC_C))  # a dgram port learns its peer from the first datagram
    assert a.recv() == [eth(BCAST, MAC_C)] and b.recv() == [eth(BCAST, MAC_C)]
    wait_for(lambda: daemon.up_count() == 3, 5, "three ports up")
    return daemon, a, b, c, tmp_path


def test_broadcast_reaches_all_others_unicast_only_its_port(switch):
    daemon, a, b, c, _ = switch
    a.send(eth(BCAST, MAC_A, b"who is there"))
    assert b.recv() == [eth(BCAST, MAC_A, b"who is there")]
    assert c.recv() == [eth(BCAST, MAC_A, b"who is there")]
    b.send(eth(MAC_A, MAC_B, b"only for A"))
    assert a.recv() == [eth(MAC_A, MAC_B, b"only for A")]
    assert c.recv(timeout=0.5) == [], "A was learned on port sa: no flood"
    assert daemon.fdb() == {"52:54:00:00:0a:0a": "sa", "52:54:00:00:0b:0b": "sb",
                            "52:54:00:00:0c:0c": "dc"}


def test_frame_sent_one_byte_at_a_time_is_reassembled(switch):
    _, a, b, _, _ = switch
    wire = encode_frame(eth(BCAST, MAC_A, b"slowly"))
    for i in range(len(wire)):
        a.sock.send(wire[i:i + 1])
    assert b.recv() == [eth(BCAST, MAC_A, b"slowly")]


def test_peer_vanishing_mid_frame_then_reconnecting(switch):
    daemon, a, b, _, tmp = switch
    a.sock.send(encode_frame(eth(BCAST, MAC_A))[:20])  # half a frame, then gone
    a.sock.close()
    wait_for(lambda: daemon.port("sa")["state"] == "down", 5, "sa down")
    again = StreamPeer(f"{tmp}/sa.sock")  # qemu restarted
    wait_for(lambda: daemon.port("sa")["state"] == "up", 5, "sa up again")
    again.send(eth(MAC_B, MAC_A, b"back"))
    assert b.recv() == [eth(MAC_B, MAC_A, b"back")]


def test_impossible_length_drops_the_connection_and_is_counted(switch):
    daemon, a, b, _, _ = switch
    a.sock.send((5).to_bytes(4, "big") + b"xxxxx")
    wait_for(lambda: daemon.port("sa")["drops"].get("rx-framing") == 1, 5, "framing drop")
    assert daemon.port("sa")["state"] == "down"
    assert daemon.alive()


def test_a_burst_waits_for_a_slow_dgram_peer_instead_of_being_dropped(switch):
    """A unix datagram socket holds 10 datagrams (net.unix.max_dgram_qlen): a burst of 300
    frames toward a qemu-like peer that is busy waits in the port's queue, flushed as the
    peer reads, and arrives whole and in order; nothing is dropped."""
    daemon, a, _, _, tmp = switch
    qemu = DgramPeer(f"{tmp}/dc.sock", like_qemu=True, suffix=".qemu")
    qemu.send(eth(BCAST, MAC_C, b"hello from qemu"))  # the port follows the new sender
    a.recv()
    burst = [eth(MAC_C, MAC_A, f"frame {i}".encode()) for i in range(300)]
    for frame in burst:
        a.send(frame)
    wait_for(lambda: daemon.port("dc")["tx_frames"] >= 300, 5, "the burst to be taken")
    got = []
    while len(got) < len(burst) and (frames := qemu.recv(timeout=2)):
        got += frames
    assert got == burst
    assert daemon.port("dc")["drops"] == {}


def test_a_stream_peer_that_stops_reading_costs_a_bounded_queue(switch):
    """While B reads nothing, A's frames fill B's socket buffers, then B's bounded queue
    (1 MiB); the rest are dropped and counted, the switch carries on, and what B reads later
    is whole frames in order."""
    daemon, a, b, c, _ = switch
    b.send(eth(BCAST, MAC_B))  # B learned on sb
    c.recv()
    a.recv()
    big = [eth(MAC_B, MAC_A, i.to_bytes(4, "big") * 350) for i in range(6000)]  # 8.4 MB
    for frame in big:
        a.send(frame)
    wait_for(lambda: daemon.port("sa")["rx_frames"] >= 6000, 10, "A's frames to be read")
    port = daemon.port("sb")
    dropped = port["drops"].get("tx-full", 0)
    assert 0 < dropped < 6000 and port["tx_frames"] + dropped == 6000 + 1, port
    c.send(eth(MAC_A, MAC_C, b"still switching"))
    assert a.recv() == [eth(MAC_A, MAC_C, b"still switching")]
    got: list[bytes] = []
    while frames := b.recv(timeout=2):
        got += frames
    assert len(got) == port["tx_frames"] - 1 and all(f in big for f in got)
    assert [big.index(f) for f in got] == sorted(big.index(f) for f in got), "in order"


def test_cli_show_views(switch):
    daemon, a, b, _, _ = switch
    a.send(eth(BCAST, MAC_A))
    b.recv()
    env = {**os.environ, "VSWITCH_SOCKET": daemon.socket}
    cli = [sys.executable, "-m", "vswitch.cli"]
    ports = subprocess.run([*cli, "show", "ports"], env=env, capture_output=True, text=True,
                           check=True).stdout
    assert ports.splitlines()[0].split()[:3] == ["PORT", "TYPE", "STATE"]
    assert any(line.split()[:3] == ["sa", "stream", "up"] for line in ports.splitlines())
    fdb = subprocess.run([*cli, "show", "fdb", "--json"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert any(r["mac"] == "52:54:00:00:0a:0a" and r["port"] == "sa" for r in json.loads(fdb))
    mode = Path(daemon.socket).stat().st_mode & 0o777
    assert mode == 0o600, "only the owner may steer the switch"


def test_show_without_daemon_says_how_to_start_one(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vswitch.cli", "show", "ports", "--socket",
                           str(tmp_path / "none.sock")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no vswitch is listening" in done.stderr and "vswitch run" in done.stderr


def test_sigterm_shuts_down_cleanly_and_removes_sockets(switch):
    daemon, _, _, _, tmp = switch
    assert daemon.stop() == 0
    assert not any(p.is_socket() for p in Path(tmp).iterdir() if p.name != "dc.sock.peer")
    assert "shutting down" in daemon.log.read_text()
