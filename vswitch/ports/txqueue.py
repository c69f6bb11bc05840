"""A small bounded transmit queue for ports whose transport pushes back (dgram, stream).

Rule 1: a frame the transport cannot take now waits here, in order, behind any frame already
        waiting; nothing is sent around the queue while it holds anything.
Rule 2: at most ``max_bytes`` wait.  A frame that would go over is dropped (the port counts it
        as ``tx-full``): a switch drops, it does not buffer without bound.
Rule 3: the port flushes the queue when the transport says it is writable again; a partial
        send (a stream) keeps the unsent tail at the head, so a frame is never cut.

Why a queue at all: a unix datagram socket's peer holds ``net.unix.max_dgram_qlen`` datagrams
(10 by default), and one 64 KiB TCP super-frame is 45 of them, so dropping at the first
EAGAIN lost most of every burst and TCP kept backing off.  A queue of about one flow's burst
absorbs that; the peer (qemu) drains it in microseconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

#: Bytes a port may hold waiting: about one TCP window's burst at the default 1 MiB buffer.
QUEUE_BYTES = 1 << 20


class TxQueue:
    def __init__(self, max_bytes: int = QUEUE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.chunks: deque[bytes] = deque()
        self.size = 0

    def __len__(self) -> int:
        return len(self.chunks)

    def put(self, chunk: bytes) -> bool:
        """Rule 2: queue ``chunk`` (a copy the caller made); False if it would not fit."""
        if self.size + len(chunk) > self.max_bytes:
            return False
        self.chunks.append(chunk)
        self.size += len(chunk)
        return True

    def flush(self, send: Callable[[bytes], int]) -> bool:
        """Rule 3: send the chunks in order until the transport pushes back; True if none are
        left.  ``send`` returns what it took or raises ``BlockingIOError``; other errors go to
        the caller (the peer is gone)."""
        chunks = self.chunks
        while chunks:
            chunk = chunks[0]
            try:
                sent = send(chunk)
            except BlockingIOError:
                return False
            self.size -= sent
            if sent < len(chunk):
                chunks[0] = chunk[sent:]
                return False
            chunks.popleft()
        return True

    def clear(self) -> int:
        """Forget everything waiting (the peer went away); how many chunks that was."""
        count = len(self.chunks)
        self.chunks.clear()
        self.size = 0
        return count
