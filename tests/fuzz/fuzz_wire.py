"""atheris harness: the wire decoders raise MalformedPacket and nothing else."""

from __future__ import annotations

import atheris
from harness import run

with atheris.instrument_imports():
    from nat.tcp_splice import decode_segment, decode_syn_options
    from vswitch.ports.stream import StreamDecoder
    from wire.errors import MalformedPacket
    from wire.gso import to_plain_frames
    from wire.ipv6 import decode_ipv6, decode_udp6, nd_options, routers_only
    from wire.packets import (
        decode_arp,
        decode_ethernet,
        decode_icmp,
        decode_ipv4,
        decode_udp,
        encode_arp,
    )
    from wire.tcp import decode_tcp, reset_for


def one_input(data: bytes) -> None:
    if not data:
        return
    selector, data = data[0], data[1:]
    try:
        if selector % 6 == 0:
            eth = decode_ethernet(data)
            assert eth.start <= len(data)
            if eth.ethertype == 0x0806:
                arp = decode_arp(data, eth.start)
                assert encode_arp(arp) == data[eth.start:eth.start + 28]
        elif selector % 6 == 1:
            ip = decode_ipv4(data, 0)
            for decoder in (decode_udp, decode_icmp, decode_tcp):
                try:
                    decoder(data, ip)
                except MalformedPacket:
                    pass
            reset_for(bytes(4), data, ip)
        elif selector % 6 == 2:
            ip6 = decode_ipv6(data, 0)
            routers_only(bytes(12) + b"\x86\xdd" + data)
            for decoder in (decode_udp6, decode_tcp):
                try:
                    decoder(data, ip6)
                except MalformedPacket:
                    pass
            nd_options(data[ip6.start:ip6.end])
        elif selector % 6 == 3:
            to_plain_frames(data)
        elif selector % 6 == 4:
            decode_syn_options(data)
            decode_segment(data)
        else:
            decoder = StreamDecoder()
            cut = len(data) // 2
            decoder.feed(data[:cut])
            decoder.feed(data[cut:])
    except MalformedPacket:
        pass


if __name__ == "__main__":
    run(one_input)
