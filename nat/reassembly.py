"""IPv4 and IPv6 reassembly where vswitch is the end of a datagram's road: the gateway's own stack
(``vswitch.ports.router``), and the host uplink, whose sockets send whole datagrams only (as
libslirp's ``ip_reass`` does).  The raw uplink's NAT never reassembles (it forwards:
``nat.fragments.Fragments``).

Sans-I/O: ``Reassembly.add`` takes one fragment (a frame whose IPv4 header starts at ``at``) and
returns the whole datagram once every piece is in; ``expire`` drops what did not complete.

Rule R1: fragments belong together by (source, destination, protocol, identification)
         (RFC 791 3.2).
Rule R2: offsets and lengths must make sense: a fragment that is not the last carries a multiple
         of 8 bytes, and nothing reaches past 65535 bytes (the "ping of death"); otherwise the
         whole datagram is dropped.
Rule R3: an exact duplicate is ignored; any other overlap drops the whole datagram, as Linux
         does since 4.19 and RFC 5722 asks for IPv6 (overlaps are how RFC 1858 3.2's attacks and
         Teardrop work: no guess at which copy is right).
Rule R4: a datagram not complete ``timeout`` seconds after its first fragment arrived is
         dropped (30 s, Linux's ``ipfrag_time``; RFC 1122 3.3.2 asks for 60-120 s, but every
         stack in use times out sooner).  If its offset-0 fragment came, the sender is owed an
         ICMP time exceeded, code 1 (RFC 792, RFC 1122 3.3.2): ``expire`` returns those.
Rule R5: bounded: at most ``max_bytes`` held in all (4 MiB, Linux's ``ipfrag_high_thresh``),
         each fragment counted with FRAGMENT_COST more for its bookkeeping, so a flood of tiny
         fragments is bounded too.  To make room, the oldest datagrams are dropped first: a
         flood of incomplete datagrams delays nothing for longer than it takes to push them out.
Rule R6: the whole datagram carries the first fragment's header (options included: RFC 791
         3.2 copies the options that must be copied into every fragment, the first has them
         all), with the fragment field cleared but DF kept, its total length and checksum set.
Rule R7: IPv6 (RFC 8200 4.5) the same way, with these differences: fragments belong together
         by (source, destination, identification); the whole packet is the first fragment's
         unfragmentable part, the fragment header taken out (the header before it names what
         the fragment header named) and the payload length set; overlaps drop the whole
         datagram as RFC 5722 requires (Rule R3).
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Final

from wire.checksum import internet_checksum
from wire.ipv6 import Ipv6
from wire.packets import IPV4_DF, IPV4_MF, IPV4_OFFSET, ipv4_ihl

MF, DF, OFFSET = IPV4_MF, IPV4_DF, IPV4_OFFSET
MAX_DATAGRAM: Final = 65535
FRAGMENT_COST: Final = 128  # bytes of bookkeeping a held fragment is charged for (Rule R5)
_U16: Final = struct.Struct("!H")

#: (source, destination, protocol, identification): Rule R1
DatagramKey = tuple[bytes, bytes, int, int]


class _Datagram:
    __slots__ = ("deadline", "pieces", "first", "at", "total", "cost", "six")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.pieces: list[tuple[int, int, memoryview]] = []  # (start, end, payload)
        self.first: bytes | None = None  # the offset-0 fragment, whole
        self.at = 0  # where its IP header starts
        self.total: int | None = None  # payload length, known from the last fragment
        self.cost = 0
        self.six: tuple[int] | None = None  # IPv6: where the next-header byte to fix is


class Reassembly:
    def __init__(self, timeout: float = 30.0, max_bytes: int = 4 << 20) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.held = 0  # bytes charged in all (Rule R5)
        self.stats: Counter[str] = Counter()
        self._datagrams: dict[DatagramKey, _Datagram] = {}  # oldest first: fixed deadlines

    def __len__(self) -> int:
        return len(self._datagrams)

    def add(self, packet: bytes, now: float, at: int = 0) -> bytes | None:
        """One fragment: ``packet`` holds a checked IPv4 header at ``at`` (after whatever link
        headers come first) and ends where its total length says.  Returns, when this completes
        the datagram, the first fragment's link headers and the whole datagram (Rule R6)."""
        ihl = ipv4_ihl(packet, at)
        field = _U16.unpack_from(packet, at + 6)[0]
        key = (packet[at + 12:at + 16], packet[at + 16:at + 20], packet[at + 9],
               _U16.unpack_from(packet, at + 4)[0])
        # pieces are views of the fragments they came in
        return self._add(key, (field & OFFSET) * 8, memoryview(packet)[at + ihl:],
                         bool(field & MF), packet, at, ihl, now)

    def add6(self, packet: bytes, now: float, ip: Ipv6) -> bytes | None:
        """One IPv6 fragment (Rule R7): ``ip`` is its decoded header, with a fragment header.
        Returns, when this completes the datagram, the whole packet (Rule R6)."""
        assert ip.fragment is not None
        ident, offset, more = ip.fragment
        key = (ip.src, ip.dst, -1, ident)  # RFC 8200 4.5: source, destination, identification
        unfragmentable = ip.fragment_at - 14
        return self._add(key, offset, memoryview(packet)[ip.fragment_at + 8:ip.end], more,
                         packet, ip.fragment_at, unfragmentable, now, six=(ip.next_at,))

    def _add(self, key: DatagramKey, start: int, payload: memoryview, more: bool,
             packet: bytes, at: int, header: int, now: float,
             six: tuple[int] | None = None) -> bytes | None:
        end = start + len(payload)
        datagram = self._datagrams.get(key)
        if datagram is None:
            datagram = self._datagrams[key] = _Datagram(now + self.timeout)
            datagram.six = six
            self.stats["datagrams"] += 1
        # Rule R2
        if (more and len(payload) % 8) or header + end > MAX_DATAGRAM or (more and not payload):
            self._drop(key, "bad-fragment")
            return None
        if datagram.total is not None and (end > datagram.total or
                                           (not more and end != datagram.total)):
            self._drop(key, "bad-fragment")
            return None
        if not more:
            if any(piece_end > end for _, piece_end, _ in datagram.pieces):
                self._drop(key, "bad-fragment")
                return None
            datagram.total = end
        # Rule R3
        for piece_start, piece_end, data in datagram.pieces:
            if piece_start < end and start < piece_end:
                if (piece_start, piece_end) == (start, end) and data == payload:
                    self.stats["duplicate"] += 1
                    return None
                self._drop(key, "overlap")
                return None
        datagram.pieces.append((start, end, payload))
        if start == 0:
            datagram.first, datagram.at = packet, at
            if six is not None:
                datagram.six = six
        cost = len(packet) + FRAGMENT_COST
        datagram.cost += cost
        self.held += cost
        if datagram.total is not None and datagram.first is not None:
            if sum(e - s for s, e, _ in datagram.pieces) == datagram.total:
                return self._whole(key, datagram)
        # Rule R5
        while self.held > self.max_bytes and self._datagrams:
            oldest = next(iter(self._datagrams))
            self._drop(oldest, "evicted")
            if oldest == key:
                break
        return None

    def _whole(self, key: DatagramKey, datagram: _Datagram) -> bytes:
        """Rule R6."""
        self._forget(key)
        self.stats["reassembled"] += 1
        assert datagram.first is not None and datagram.total is not None
        first, at = datagram.first, datagram.at
        datagram.pieces.sort(key=lambda piece: piece[0])
        body = b"".join(data for _, _, data in datagram.pieces)
        if datagram.six is not None:  # Rule R7: the fragment header goes, its next header stays
            whole = bytearray(first[:at])
            whole[datagram.six[0]] = first[at]
            _U16.pack_into(whole, 18, at - 54 + datagram.total)  # the IPv6 payload length
            return bytes(whole) + body
        ihl = ipv4_ihl(first, at)
        header = bytearray(first[at:at + ihl])
        _U16.pack_into(header, 2, ihl + datagram.total)
        _U16.pack_into(header, 6, _U16.unpack_from(header, 6)[0] & DF)
        _U16.pack_into(header, 10, 0)
        _U16.pack_into(header, 10, internet_checksum(header))
        return first[:at] + header + body

    def _drop(self, key: DatagramKey, reason: str) -> None:
        self._forget(key)
        self.stats[reason] += 1

    def _forget(self, key: DatagramKey) -> _Datagram:
        datagram = self._datagrams.pop(key)
        self.held -= datagram.cost
        return datagram

    def expire(self, now: float) -> list[bytes]:
        """Rule R4: drop the datagrams past their deadline; returns the first fragments (link
        headers and all, as given to ``add``) of those whose first fragment came: the sender is
        owed ICMP 11/1."""
        owed = []
        while self._datagrams:
            key, datagram = next(iter(self._datagrams.items()))
            if datagram.deadline > now:
                break
            self._forget(key)
            self.stats["timeout"] += 1
            if datagram.first is not None:
                owed.append(datagram.first)
        return owed

    def next_deadline(self) -> float | None:
        for datagram in self._datagrams.values():
            return datagram.deadline
        return None
