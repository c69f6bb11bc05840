"""TCP segments (RFC 9293 3.1): the header, its flags, and the RST for a segment nobody takes.

Rule 1: a decoder checks lengths only (data offset >= 5 and inside the datagram, no SYN+FIN)
        and raises ``MalformedPacket`` otherwise; checksums are the receiver's business.
"""

from __future__ import annotations

import struct
from typing import Final

from wire.checksum import internet_checksum, pseudo_header_sum
from wire.errors import MalformedPacket
from wire.packets import PROTO_TCP, Ipv4

TCP: Final = struct.Struct("!HHIIBBHHH")
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80
WINDOW: Final = 65535


def encode_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
               payload: bytes = b"", options: bytes = b"", window: int = WINDOW) -> bytes:
    offset = (20 + len(options)) // 4
    header = TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset << 4, flags,
                      window, 0, 0) + options
    segment = header + payload
    csum = internet_checksum(pseudo_header_sum(src, dst, PROTO_TCP, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def decode_tcp(frame: bytes, ip: Ipv4) -> tuple[int, int, int, int, int, bytes]:
    """(sport, dport, seq, ack, flags, payload) of the segment in ``ip``'s payload."""
    if ip.end - ip.start < 20:
        raise MalformedPacket("TCP header truncated")
    sport, dport, seq, ack, off, flags, _, _, _ = TCP.unpack_from(frame, ip.start)
    hlen = (off >> 4) * 4
    if hlen < 20 or ip.start + hlen > ip.end:
        raise MalformedPacket("TCP data offset < 5 or beyond the segment")
    if flags & SYN and flags & FIN:
        raise MalformedPacket("TCP SYN+FIN")
    return sport, dport, seq, ack, flags, frame[ip.start + hlen:ip.end]


def reset_for(local_ip: bytes, frame: bytes, ip: Ipv4) -> bytes | None:
    """The RST answering a segment nobody listens for (RFC 793 3.4), or None for a RST."""
    try:
        sport, dport, seq, ack, flags, payload = decode_tcp(frame, ip)
    except MalformedPacket:
        return None
    if flags & RST:
        return None
    if flags & ACK:
        return encode_tcp(local_ip, ip.src, dport, sport, ack, 0, RST)
    length = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return encode_tcp(local_ip, ip.src, dport, sport, 0, seq + length, RST | ACK)
