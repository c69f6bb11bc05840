"""Frames toward guests from the host uplink, and which destinations it may reach at all.

Frames leave with no offloads and their MACs left for the router to fill in
(``Router.to_guests``), or, for a TCP flow that knows its guest, already addressed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from wire.gso import fragment_ipv4
from wire.packets import ETH_P_IP, encode_ipv4
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN

#: Offset of the IPv4 header in a packet: virtio-net header, then an untagged Ethernet header.
IP: Final = VNET_HDR_LEN + 14
ZERO_MACS: Final = bytes(12)  # the router fills in the guest's MAC (Router.to_guests)
#: A TCP flow whose guest's MAC is not known yet (an inbound one, until the guest answers):
#: a multicast destination never used, so the check is one byte; the router replaces it.
UNKNOWN_MACS: Final = b"\xff" * 12
U16: Final = struct.Struct("!H")

#: Hands packets to guests: through the router's ARP cache, or as they are addressed.
Emit = Callable[[list[bytes]], None]


def ip_packet(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0) -> bytes:
    """A packet to a guest: no offloads, MACs left for the router, DF set."""
    return (NO_OFFLOAD + ZERO_MACS + U16.pack(ETH_P_IP)
            + encode_ipv4(src, dst, proto, payload, ident=ident))


def fragments(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int,
              mtu: int) -> list[bytes]:
    """``payload`` to a guest in one packet, or as IPv4 fragments that fit ``mtu``."""
    if 20 + len(payload) <= mtu:
        return [ip_packet(src, dst, proto, payload, ident)]
    frame = ZERO_MACS + U16.pack(ETH_P_IP) + encode_ipv4(src, dst, proto, payload, ident=ident,
                                                         dont_fragment=False)
    return [NO_OFFLOAD + f for f in fragment_ipv4(frame, 14, 34, mtu - 20)]


def forwardable(address: bytes) -> bool:
    """RFC 1812 5.3.7: never forward to 0/8, 127/8, multicast or class E."""
    return address[0] not in (0, 127) and address[0] < 224
