"""Each wire decoder against the parser it replaced, on the same packets, in one run.

    .venv/bin/python -m bench.decoders [--number 200000]

The architecture pass gave every header one decoder (``wire.packets.decode_ipv4``,
``wire.tcp.decode_tcp``); the NAT (``nat.translate``) and the TCP translator
(``nat.tcp_splice``) each had their own.  Their old bodies are kept below only to be timed
against the new ones: a decoder must cost no more than what it replaced.  Prints ns per call,
the best of 7 rounds (the least disturbed by this shared machine).
"""

from __future__ import annotations

import argparse
import struct
import sys
import timeit

from wire.errors import MalformedPacket
from wire.packets import IPV4, decode_ipv4, encode_ethernet, encode_ipv4
from wire.tcp import FIN, SYN, TCP, decode_tcp, encode_tcp

L3 = 10 + 14


def translate_ipv4_before(packet: bytes) -> tuple[int, int, int, bytes, bytes, int, int, int]:
    """nat.translate._ipv4 as it was."""
    if len(packet) < L3 + 20:
        raise MalformedPacket("IPv4 header truncated")
    vihl, _, total, ident, frag, ttl, proto, _, src, dst = IPV4.unpack_from(packet, L3)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20:
        raise MalformedPacket("not IPv4, or IHL < 5")
    if total < ihl or L3 + total > len(packet):
        raise MalformedPacket("IPv4 total length shorter than the header or beyond the frame")
    if int.from_bytes(packet[L3:L3 + ihl], "big") % 0xFFFF:
        raise MalformedPacket("IPv4 header checksum")
    return L3 + ihl, L3 + total, proto, src, dst, ttl, ident, frag


def splice_segment_before(packet: bytes) -> tuple[int, int, int, int, int, int, int]:
    """nat.tcp_splice.decode_segment as it was (it parsed the IPv4 header a second time)."""
    if len(packet) < L3 + 20:
        raise MalformedPacket("IPv4 header truncated")
    if struct.unpack_from("!H", packet, L3 - 2)[0] != 0x0800:
        raise MalformedPacket("not an IPv4 frame")
    vihl, _, total, _, frag, _, proto, _, _, _ = IPV4.unpack_from(packet, L3)
    ihl = (vihl & 0x0F) * 4
    end = L3 + total
    if vihl >> 4 != 4 or ihl < 20 or total < ihl or end > len(packet):
        raise MalformedPacket("IPv4 IHL < 5 or total length beyond the frame")
    if proto != 6 or frag & 0x3FFF:
        raise MalformedPacket("not TCP, or an IPv4 fragment")
    tcp_at = L3 + ihl
    if tcp_at + 20 > end:
        raise MalformedPacket("TCP header truncated")
    _, _, seq, ack, offset, flags, window, _, _ = TCP.unpack_from(packet, tcp_at)
    payload_at = tcp_at + (offset >> 4) * 4
    if offset >> 4 < 5 or payload_at > end:
        raise MalformedPacket("TCP data offset < 5 or beyond the IP payload")
    if flags & SYN and flags & FIN:
        raise MalformedPacket("TCP SYN+FIN")
    return seq, ack, flags, window, tcp_at, payload_at, end


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.decoders",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--number", type=int, default=200_000)
    args = ap.parse_args(argv)
    src, dst = bytes([10, 0, 0, 5]), bytes([192, 0, 2, 1])
    segment = encode_tcp(src, dst, 40000, 80, 1, 2, 0x10, b"x" * 1448)
    packet = bytes(10) + encode_ethernet(bytes(6), bytes(6), 0x0800,
                                         encode_ipv4(src, dst, 6, segment))

    ip = decode_ipv4(packet, L3)  # the host uplink decodes it before the splice sees it

    def unpack_ipv4() -> object:
        src, dst, proto, ttl, ident, frag, l4, end = decode_ipv4(packet, L3)
        return end

    def unpack_before() -> object:
        l4, end, proto, src, dst, ttl, ident, frag = translate_ipv4_before(packet)
        return end

    pairs = {
        "IPv4 header, NAT path (before: translate._ipv4)": (unpack_before, unpack_ipv4),
        "TCP segment in the splice (before: decode_segment)": (
            lambda: splice_segment_before(packet), lambda: decode_tcp(packet, ip)),
    }
    print(f"{'decoder':<52} {'before ns':>10} {'after ns':>10} {'ratio':>6}")
    for name, (before, after) in pairs.items():
        times = []
        for fn in (before, after):
            times.append(min(timeit.repeat(fn, number=args.number, repeat=7))
                         / args.number * 1e9)
        print(f"{name:<52} {times[0]:>10.0f} {times[1]:>10.0f} {times[1] / times[0]:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
