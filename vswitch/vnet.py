"""The virtio-net header every frame carries inside vswitch.

Rule 1: inside the switch a *packet* is ``VNET_HDR_LEN`` bytes of ``struct virtio_net_hdr``
followed by the Ethernet frame.  Ports that speak it natively (TAPs opened with
``IFF_VNET_HDR``, AF_PACKET sockets with ``PACKET_VNET_HDR``) read and write packets as they are;
ports that do not (stream, dgram) get ``NO_OFFLOAD`` prepended on the way in and, on the way out,
have GSO packets segmented and partial checksums finished in software (``vswitch.gso``).

Rule 2: the header is little-endian (virtio 1.0; x86 hosts, and what TUN uses unless
``TUNSETVNETBE`` is set).  Layout (virtio spec 5.1.6, ``linux/virtio_net.h``)::

    u8  flags        NEEDS_CSUM=1: checksum from csum_start, stored at csum_start+csum_offset
                     DATA_VALID=2: the checksum was already verified
    u8  gso_type     NONE=0, TCPV4=1, UDP=3 (UFO), TCPV6=4, UDP_L4=5 (USO); | ECN=0x80
    u16 hdr_len      length of the headers (Ethernet+IP+L4) when GSO
    u16 gso_size     payload bytes per segment when GSO
    u16 csum_start
    u16 csum_offset
"""

from __future__ import annotations

import struct
from typing import Final

VNET_HDR_LEN: Final = 10
VNET_HDR: Final = struct.Struct("<BBHHHH")

FLAG_NEEDS_CSUM: Final = 1
FLAG_DATA_VALID: Final = 2

GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80

#: The header of a packet that needs nothing done: no GSO, checksums complete.
NO_OFFLOAD: Final = bytes(VNET_HDR_LEN)

#: Offsets of the Ethernet header fields, counted from the start of a packet (Rule 1).
DST_MAC: Final = slice(VNET_HDR_LEN, VNET_HDR_LEN + 6)
SRC_MAC: Final = slice(VNET_HDR_LEN + 6, VNET_HDR_LEN + 12)
ETH_HLEN: Final = 14
MIN_PACKET: Final = VNET_HDR_LEN + ETH_HLEN


def wrap(frame: bytes) -> bytes:
    """A plain Ethernet frame as a packet with nothing to offload."""
    return NO_OFFLOAD + frame


def needs_software(packet: bytes) -> bool:
    """True if a port without offloads cannot take ``packet`` as it is (GSO or partial csum)."""
    return packet[0] & FLAG_NEEDS_CSUM != 0 or packet[1] & 0x7F != GSO_NONE


def encode_header(
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    return VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
