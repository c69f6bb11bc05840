"""TCP sequence space (RFC 9293 3.4: numbers modulo 2**32) and the bytes a sender keeps until
they are acknowledged, for ``nat.tcp_splice``."""

from __future__ import annotations

from collections import deque
from typing import Final

SEQ_MASK: Final = 0xFFFFFFFF


def seq_add(a: int, n: int) -> int:
    return (a + n) & SEQ_MASK


def seq_sub(a: int, b: int) -> int:
    """How far ``a`` lies after ``b`` in sequence space (RFC 9293 3.4: arithmetic mod 2**32)."""
    return (a - b) & SEQ_MASK


def seq_lt(a: int, b: int) -> bool:
    return 0 < (b - a) & SEQ_MASK < 1 << 31


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_lt(a, b)


class Unacked:
    """Bytes sent and not yet acknowledged, kept as the chunks the host gave (no copying: a
    bytearray would move a megabyte on every append after an ACK)."""

    __slots__ = ("chunks", "head", "size")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.head = 0  # bytes of chunks[0] already acknowledged
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)

    def drop(self, n: int) -> None:
        """Forget the first ``n`` bytes (all of them if ``n`` is larger)."""
        n = min(n, self.size)
        self.size -= n
        while n:
            left = len(self.chunks[0]) - self.head
            if n < left:
                self.head += n
                return
            self.chunks.popleft()
            self.head = 0
            n -= left

    def first(self, n: int) -> bytes:
        """The first ``n`` bytes (for a retransmission)."""
        pieces, need, head = [], min(n, self.size), self.head
        for chunk in self.chunks:
            if need <= 0:
                break
            piece = memoryview(chunk)[head:head + need]
            pieces.append(piece)
            need -= len(piece)
            head = 0
        return b"".join(pieces)
