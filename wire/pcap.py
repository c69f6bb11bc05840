"""Capture files: classic libpcap (``PcapWriter``) and pcapng (``PcapngWriter``) writers.

Both take a binary stream and write Ethernet frames (LINKTYPE_ETHERNET) as they are given:
plain frames, no virtio-net header. Each header or block goes out in ONE ``stream.write``, so
a reader streaming from a pipe (``tcpdump -r -``) never sees half of one; neither writer
flushes, the caller decides when. Everything is little-endian; the magic numbers tell readers
so. Timestamps are seconds since the epoch (``time.time()``), written in microseconds.

pcapng (draft-ietf-opsawg-pcapng) holds several capture points in one file: one Section Header
Block, then an Interface Description Block per point, then Enhanced Packet Blocks naming their
interface by index and carrying a comment (``"vm1 rx"``). An IDB may come after packets, as
long as it precedes its own first packet, so points can be added while a capture runs. Blocks
and option values are padded to 32 bits and every block repeats its length at its end.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

LINKTYPE_ETHERNET: Final = 1
#: libpcap's and tcpdump's default snapshot length: larger than any 64 KiB GSO frame.
SNAPLEN: Final = 262144

_PCAP_HEADER: Final = struct.Struct("<IHHiIII")  # magic, version 2.4, zone, sigfigs, snap, link
_PCAP_RECORD: Final = struct.Struct("<IIII")  # seconds, microseconds, captured, original length

_SHB: Final = 0x0A0D0D0A
_IDB: Final = 0x00000001
_EPB: Final = 0x00000006
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
_OPT_ENDOFOPT: Final = 0
_OPT_COMMENT: Final = 1
_SHB_USERAPPL: Final = 4
_IF_NAME: Final = 2
_IF_DESCRIPTION: Final = 3
_BLOCK_HEAD: Final = struct.Struct("<II")  # block type, block total length
_U32: Final = struct.Struct("<I")
_OPTION: Final = struct.Struct("<HH")  # option code, value length (before padding)


class Stream(Protocol):
    """Where a writer writes: a file opened ``"wb"``, a pipe, ``io.BytesIO``."""

    def write(self, data: bytes, /) -> object: ...


def _microseconds(timestamp: float) -> int:
    # Rounded, not truncated: 0.000001 * n is often a hair below n microseconds as a float.
    return round(timestamp * 1_000_000)


class PcapWriter:
    """Classic libpcap format (version 2.4, microsecond timestamps, LINKTYPE_ETHERNET)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        stream.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))

    def write(self, timestamp: float, frame: bytes) -> None:
        """One packet record; a frame beyond ``SNAPLEN`` is cut, its original length kept."""
        seconds, micros = divmod(_microseconds(timestamp), 1_000_000)
        data = frame[:SNAPLEN]
        self.stream.write(_PCAP_RECORD.pack(seconds, micros, len(data), len(frame)) + data)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _options(*options: tuple[int, str]) -> bytes:
    """An option list (code, UTF-8 value; empty values left out) ended by opt_endofopt, or
    nothing when there is no option (the spec then allows leaving out the end marker too)."""
    encoded = [(code, value.encode()) for code, value in options if value]
    if not encoded:
        return b""
    return b"".join(_OPTION.pack(code, len(value)) + _pad(value) for code, value in encoded) \
        + _OPTION.pack(_OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    """A whole block: type, total length, the body padded to 32 bits, total length again."""
    body = _pad(body)
    length = _BLOCK_HEAD.size + len(body) + _U32.size
    return _BLOCK_HEAD.pack(block_type, length) + body + _U32.pack(length)


class PcapngWriter:
    """pcapng: one section, interfaces added as capture points appear, commented packets."""

    def __init__(self, stream: Stream, application: str = "vswitch") -> None:
        self.stream = stream
        self.interfaces = 0
        # Section length -1: not known in advance (the file is written as a stream).
        stream.write(_block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
                            + _options((_SHB_USERAPPL, application))))

    def add_interface(self, name: str, description: str = "") -> int:
        """Write an Interface Description Block; returns the index ``write`` takes. No
        if_tsresol option: its default, microseconds, is the resolution ``write`` uses."""
        self.stream.write(_block(_IDB, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN)
                                 + _options((_IF_NAME, name), (_IF_DESCRIPTION, description))))
        self.interfaces += 1
        return self.interfaces - 1

    def write(self, interface: int, timestamp: float, frame: bytes,
              comment: str | None = None) -> None:
        """One Enhanced Packet Block; a frame beyond ``SNAPLEN`` is cut, its length kept."""
        if not 0 <= interface < self.interfaces:
            # A reader stops at a packet naming an interface no IDB described.
            raise ValueError(f"pcapng: interface {interface} was not added")
        micros = _microseconds(timestamp)
        data = frame[:SNAPLEN]
        head = struct.pack("<IIIII", interface, micros >> 32, micros & 0xFFFFFFFF, len(data),
                           len(frame))
        options = _options((_OPT_COMMENT, comment or ""))
        self.stream.write(_block(_EPB, head + _pad(data) + options))
