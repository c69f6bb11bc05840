"""``dgram`` port: qemu ``-netdev dgram`` over unix datagram sockets, one frame per datagram.

vswitch binds ``path``; qemu binds its own ``local.path`` and sends to ours.  Replies go to the
configured ``peer`` path, or else to whoever sent the last datagram (so a restarted qemu on a new
path is followed).  No virtio-net header, no privileges.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from vswitch.vnet import NO_OFFLOAD

from .base import BATCH, READ_SIZE, RX_ERROR, TX_FULL, Deliver, Port


class DgramPort(Port):
    kind = "dgram"
    vnet = False

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None,
                 path: str, peer: str | None, mode: int) -> None:
        super().__init__(port_id, name, mtu, mac_limit)
        self.path = path
        self.peer = peer
        self.mode = mode
        self.sock: socket.socket | None = None

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if Path(self.path).is_socket():
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, self.mode)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._readable)
        self.set_up(self.peer is not None)

    def _readable(self) -> None:
        assert self.sock is not None and self.deliver is not None and self.loop is not None
        now = self.loop.time()
        for _ in range(BATCH):
            try:
                frame, sender = self.sock.recvfrom(READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                self.drops[RX_ERROR] += 1
                return
            if sender and sender != self.peer:
                self.peer = sender
            self.set_up(self.peer is not None)
            self.rx_frames += 1
            self.rx_bytes += len(frame)
            self.deliver(NO_OFFLOAD + frame, self.id, now)

    def _write_frame(self, data: bytes | memoryview) -> None:
        if self.sock is None or self.peer is None:
            self.drops["tx-no-peer"] += 1
            return
        try:
            self.sock.sendto(data, self.peer)
        except BlockingIOError:
            self.drops[TX_FULL] += 1
            return
        except OSError:  # the peer's socket is gone (qemu stopped): down until it speaks again
            self.drops["tx-no-peer"] += 1
            self.set_up(False)
            return
        self.tx_frames += 1
        self.tx_bytes += len(data)

    def close(self) -> None:
        if self.sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            Path(self.path).unlink(missing_ok=True)

    def detail(self) -> str:
        return f"{self.path} -> {self.peer or '(no peer yet)'}"
