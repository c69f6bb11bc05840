"""``stream`` port: qemu ``-netdev stream`` on a unix socket vswitch listens on.

Framing (qemu net/stream.c): each frame is preceded by its length as a 4-byte big-endian integer;
no virtio-net header.  No privileges are needed.  Two ways round:

- ``connect = false`` (default): vswitch listens on ``path``; qemu connects
  (``server=off``).  One peer at a time: a new connection replaces the old one, so a restarted
  qemu just connects again.  qemu 7.2 as a client never reconnects by itself, so if vswitch
  restarts, that qemu must restart too.
- ``connect = true``: qemu listens (``server=on``) and vswitch connects, retrying every second
  while there is no connection: either side can restart without the other.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path

from wire.errors import MalformedPacket
from wire.vnet import ETH_HLEN, NO_OFFLOAD

from .base import BATCH, RX_FRAMING, TX_FULL, Deliver, Port
from .txqueue import TxQueue

LENGTH = struct.Struct(">I")
MAX_FRAME = 65535 + ETH_HLEN + 4


class StreamDecoder:
    """Sans-I/O reassembly of length-prefixed frames from arbitrary stream chunks.

    1. Append the chunk to the buffer.
    2. While the buffer holds a length word and that many bytes, cut out one frame.
    3. A length below an Ethernet header or above ``MAX_FRAME`` is a protocol error: the stream
       cannot be resynchronised, so the caller drops the connection.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buffer
        buf += chunk  # Step 1
        frames = []
        start = 0
        end = len(buf)
        while end - start >= 4:  # Step 2
            (size,) = LENGTH.unpack_from(buf, start)
            if size < ETH_HLEN or size > MAX_FRAME:  # Step 3
                raise MalformedPacket(f"stream frame length {size}")
            if end - start - 4 < size:
                break
            frames.append(bytes(buf[start + 4:start + 4 + size]))
            start += 4 + size
        del buf[:start]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)


def encode_frame(frame: bytes | memoryview) -> bytes:
    return LENGTH.pack(len(frame)) + frame


class StreamPort(Port):
    kind = "stream"
    vnet = False

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None,
                 path: str, mode: int, connect: bool = False) -> None:
        super().__init__(port_id, name, mtu, mac_limit)
        self.path = path
        self.mode = mode
        self.connect = connect
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.decoder = StreamDecoder()
        #: frames the socket could not take yet (its buffer full: a slow peer), the first
        #: perhaps in part (txqueue Rule 3)
        self.queue = TxQueue()
        self.connections = 0

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        if self.connect:
            self.poll()
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if Path(self.path).is_socket():
            os.unlink(self.path)  # a stale socket from a previous run
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        os.chmod(self.path, self.mode)
        self.listener.listen(4)
        self.listener.setblocking(False)
        loop.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        assert self.listener is not None and self.loop is not None
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        self._adopt(conn)

    def poll(self) -> None:
        """In connect mode, (re)connect to qemu's listening socket while disconnected."""
        if not self.connect or self.conn is not None:
            return
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
        except OSError:  # qemu not (yet) listening: try again next tick
            conn.close()
            return
        self._adopt(conn)

    def _adopt(self, conn: socket.socket) -> None:
        assert self.loop is not None
        self._drop_peer()  # a new connection replaces the old one (qemu restarted)
        conn.setblocking(False)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.conn = conn
        self.connections += 1
        self.loop.add_reader(conn.fileno(), self._readable)
        self.set_up(True)

    def _drop_peer(self) -> None:
        if self.conn is not None and self.loop is not None:
            self.loop.remove_reader(self.conn.fileno())
            self.loop.remove_writer(self.conn.fileno())
            self.conn.close()
        self.conn = None
        self.decoder = StreamDecoder()
        lost = self.queue.clear()
        if lost:
            self.drops["tx-no-peer"] += lost
        self.set_up(False)

    def _readable(self) -> None:
        assert self.conn is not None and self.deliver is not None and self.loop is not None
        now = self.loop.time()
        for _ in range(BATCH):
            try:
                chunk = self.conn.recv(262144)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:  # the peer went away, possibly mid-frame: forget the partial frame
                self._drop_peer()
                return
            try:
                frames = self.decoder.feed(chunk)
            except MalformedPacket:
                self.drops[RX_FRAMING] += 1
                self._drop_peer()
                return
            for frame in frames:
                self.rx_frames += 1
                self.rx_bytes += len(frame)
                self.deliver(NO_OFFLOAD + frame, self.id, now)

    def _write_frame(self, data: bytes | memoryview) -> None:
        conn = self.conn
        if conn is None:
            self.drops["tx-no-peer"] += 1
            return
        wire = encode_frame(data)
        if self.queue:  # behind what waits (txqueue Rule 1)
            if not self.queue.put(wire):
                self.drops[TX_FULL] += 1
                return
        else:
            try:
                sent = conn.send(wire)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop_peer()
                return
            if sent < len(wire):  # a frame is never cut: its tail waits, and what follows
                self.queue.put(wire[sent:])
                assert self.loop is not None
                self.loop.add_writer(conn.fileno(), self._flush)
        self.tx_frames += 1
        self.tx_bytes += len(data)

    def _flush(self) -> None:
        assert self.conn is not None and self.loop is not None
        try:
            empty = self.queue.flush(self.conn.send)
        except OSError:
            self._drop_peer()
            return
        if empty:
            self.loop.remove_writer(self.conn.fileno())

    def close(self) -> None:
        self._drop_peer()
        if self.listener is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
            try:
                Path(self.path).unlink(missing_ok=True)
            except PermissionError:  # vswitch dropped root (vswitch.privileges Rule 4)
                pass

    def detail(self) -> str:
        waiting = "connecting" if self.connect else "listening"
        return f"{self.path} ({'connected' if self.conn else waiting})"
