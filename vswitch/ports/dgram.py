"""``dgram`` port: qemu ``-netdev dgram`` over unix datagram sockets, one frame per datagram.

vswitch binds ``path``; qemu binds its own ``local.path`` and sends to ours.  Replies go to the
configured ``peer`` path, or else to whoever sent the last datagram (so a restarted qemu on a new
path is followed).  No virtio-net header, no privileges.

Frames leave through a second socket, connected to the peer: only a connected unix datagram
socket reports when the peer's receive queue (``net.unix.max_dgram_qlen``, 10 by default) has
room again, so that frames the peer cannot take yet wait in a bounded queue (``TxQueue``)
instead of being dropped.  The bound socket stays unconnected, so any qemu may reach it.  qemu
binds its own socket and sends with ``sendto`` without connecting, so it takes datagrams from
any sender; a peer that connected its socket to ours takes them only from the bound socket
(``EPERM`` otherwise), so it is sent to from there, without the queue.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from wire.vnet import NO_OFFLOAD

from .base import BATCH, READ_SIZE, RX_ERROR, TX_FULL, Deliver, Port
from .txqueue import TxQueue

TX_NO_PEER = "tx-no-peer"


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
        self.tx: socket.socket | None = None  # connected to ``peer`` while it is there
        self.queue = TxQueue()
        self.peer_connected = False  # the peer takes datagrams from ``path`` only

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if Path(self.path).is_socket():
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, self.mode)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._readable)
        self.poll()

    def poll(self) -> None:
        """A configured peer that was not there yet (or went away) is tried again."""
        if self.tx is None and not self.peer_connected and self.peer is not None:
            self._connect(self.peer)

    def _connect(self, peer: str) -> None:
        """Send to ``peer`` from now on; what waited for the previous peer is dropped."""
        self._disconnect()
        tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        tx.setblocking(False)
        self.peer_connected = False
        try:
            tx.connect(peer)
        except PermissionError:  # the peer connected to our path: send from there
            tx.close()
            self.peer_connected = True
            self.set_up(True)
            return
        except OSError:  # nobody bound there (yet): down until the peer speaks
            tx.close()
            self.set_up(False)
            return
        self.tx = tx
        self.set_up(True)

    def _disconnect(self) -> None:
        if self.tx is not None:
            if self.queue and self.loop is not None:
                self.loop.remove_writer(self.tx.fileno())
            lost = self.queue.clear()
            if lost:
                self.drops[TX_NO_PEER] += lost
            self.tx.close()
            self.tx = None

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
            if sender and (sender != self.peer or (self.tx is None and not self.peer_connected)):
                self.peer = sender
                self._connect(sender)
            self.rx_frames += 1
            self.rx_bytes += len(frame)
            self.deliver(NO_OFFLOAD + frame, self.id, now)

    def _write_frame(self, data: bytes | memoryview) -> None:
        if self.peer_connected:
            self._send_from_path(data)
            return
        tx = self.tx
        if tx is None:
            self.drops[TX_NO_PEER] += 1
            return
        if not self.queue:
            try:
                tx.send(data)
            except PermissionError:  # the peer connected to our path: send from there
                self._disconnect()
                self.peer_connected = True
                self._send_from_path(data)
                return
            except BlockingIOError:  # the peer's queue is full: wait for it (txqueue Rule 1)
                assert self.loop is not None
                self.loop.add_writer(tx.fileno(), self._flush)
            except OSError:  # the peer's socket is gone (qemu stopped): down until it speaks
                self.drops[TX_NO_PEER] += 1
                self._disconnect()
                self.set_up(False)
                return
            else:
                self.tx_frames += 1
                self.tx_bytes += len(data)
                return
        if not self.queue.put(bytes(data)):
            self.drops[TX_FULL] += 1
            return
        self.tx_frames += 1
        self.tx_bytes += len(data)

    def _send_from_path(self, data: bytes | memoryview) -> None:
        assert self.sock is not None and self.peer is not None
        try:
            self.sock.sendto(data, self.peer)
        except BlockingIOError:
            self.drops[TX_FULL] += 1
            return
        except OSError:
            self.drops[TX_NO_PEER] += 1
            self.peer_connected = False
            self.set_up(False)
            return
        self.tx_frames += 1
        self.tx_bytes += len(data)

    def _flush(self) -> None:
        assert self.tx is not None and self.loop is not None
        try:
            empty = self.queue.flush(self.tx.send)
        except OSError:
            self._disconnect()
            self.set_up(False)
            return
        if empty:
            self.loop.remove_writer(self.tx.fileno())

    def close(self) -> None:
        self._disconnect()
        if self.sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            try:
                Path(self.path).unlink(missing_ok=True)
            except PermissionError:  # vswitch dropped root (vswitch.privileges Rule 4)
                pass

    def detail(self) -> str:
        waiting = f", {len(self.queue)} waiting" if self.queue else ""
        return f"{self.path} -> {self.peer or '(no peer yet)'}{waiting}"
