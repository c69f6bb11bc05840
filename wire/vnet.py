"""The virtio-net header every frame carries inside vswitch.

Rule 1: inside the switch a *packet* is ``VNET_HDR_LEN`` bytes of ``struct virtio_net_hdr``
followed by the Ethernet frame.  Ports that speak it natively (TAPs opened with
``IFF_VNET_HDR``, AF_PACKET sockets with ``PACKET_VNET_HDR``) read packets as they are and write
them as they are when the device takes them (Rule 3); ports that do not (stream, dgram) get
``NO_OFFLOAD`` prepended on the way in and, on the way out, have GSO packets segmented and
partial checksums finished in software (``wire.gso``).

Rule 2: the header is little-endian (virtio 1.0; x86 hosts, and what TUN uses unless
``TUNSETVNETBE`` is set).  Layout (virtio spec 5.1.6, ``linux/virtio_net.h``)::

    u8  flags        NEEDS_CSUM=1: checksum from csum_start, stored at csum_start+csum_offset
                     DATA_VALID=2: the checksum was already verified
    u8  gso_type     NONE=0, TCPV4=1, UDP=3 (UFO), TCPV6=4, UDP_L4=5 (USO); | ECN=0x80
    u16 hdr_len      length of the headers (Ethernet+IP+L4) when GSO
    u16 gso_size     payload bytes per segment when GSO
    u16 csum_start
    u16 csum_offset

Rule 3: a device takes a packet as it is only if it offers the packet's GSO type and can finish
its partial checksum (``Offloads``, read from the device's transmit features).  Anything else is
segmented and checksummed in software first: by the kernel's GSO when a packet socket sends
through the qdisc layer (``PacketSocketPort.send_by``), else by ``wire.gso``.  A packet
socket with ``PACKET_QDISC_BYPASS`` must not be handed such a packet: ``__dev_direct_xmit``
drops every packet that ``validate_xmit_skb`` had to segment, so a TSO frame sent to a device
without TSO (a TAP whose qemu drives an e1000, a NIC with ``ethtool -K tso off``) vanishes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, NamedTuple

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


def is_gso(packet: bytes | bytearray) -> bool:
    """True if ``packet`` is a GSO super-frame: a gso_type other than NONE (the ECN bit alone
    is not one)."""
    return packet[1] & ~GSO_ECN != GSO_NONE


def needs_software(packet: bytes) -> bool:
    """True if a port without offloads cannot take ``packet`` as it is (GSO or partial csum)."""
    return packet[0] & FLAG_NEEDS_CSUM != 0 or is_gso(packet)


class VnetHeader(NamedTuple):
    """A decoded ``struct virtio_net_hdr`` (Rule 2)."""

    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    """From the start of the Ethernet frame."""
    csum_offset: int
    """From ``csum_start``."""


def decode_header(packet: bytes | bytearray) -> VnetHeader:
    """The virtio-net header at the start of ``packet`` (the caller checked its length)."""
    return VnetHeader._make(VNET_HDR.unpack_from(packet))


def encode_header(
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    return VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


class Offloads(NamedTuple):
    """What a device takes from us as it is (Rule 3): the transmit features of its netdev
    (``ethtool -k``), as far as the virtio-net header can ask for them.  UFO (``GSO_UDP``) is
    never taken: Linux dropped the feature and would cut it in software, which Rule 3 forbids.
    """

    csum: bool = False  #: tx-checksum-ip-generic: partial checksums of any protocol
    csum4: bool = False  #: tx-checksum-ipv4: partial TCP/UDP checksums over IPv4 only
    csum6: bool = False  #: tx-checksum-ipv6: over IPv6 only
    tso4: bool = False  #: tx-tcp-segmentation
    tso6: bool = False  #: tx-tcp6-segmentation
    tso_ecn: bool = False  #: tx-tcp-ecn-segmentation: TSO of segments with CWR set
    uso: bool = False  #: tx-udp-segmentation (GSO_UDP_L4)

    @property
    def segments_tcp(self) -> bool:
        """Takes what most packets ask for: partial checksums and TCP segmentation, both IP
        versions.  A packet socket bypasses the qdisc layer only to such a device."""
        return self.csum and self.tso4 and self.tso6

    def names(self) -> list[str]:
        """The features that are on, by their short names (``show ports``)."""
        return [name for name, on in zip(self._fields, self, strict=True) if on]

    def gso_taken(self) -> bytes:
        """A 256-byte table: entry ``gso_type`` (ECN bit included) is 1 if taken as it is."""
        table = bytearray(256)
        table[GSO_NONE] = 1
        for kind, on in ((GSO_TCPV4, self.tso4), (GSO_TCPV6, self.tso6),
                         (GSO_UDP_L4, self.uso)):
            if on:
                table[kind] = 1
                if kind != GSO_UDP_L4 and self.tso_ecn:
                    table[kind | GSO_ECN] = 1
        return bytes(table)


#: A device that takes everything we send (a TAP's own fd, ``tun_get_user``).
EVERY_OFFLOAD: Final = Offloads(csum=True, tso4=True, tso6=True, tso_ecn=True, uso=True)
#: A device that takes only plain frames with complete checksums.
NO_OFFLOADS: Final = Offloads()


def taken_as_is(offloads: Offloads) -> Callable[[bytes], bool] | None:
    """Rule 3 as a predicate on packets that ask for an offload (``needs_software``), or None
    when ``offloads`` takes every such packet, so the caller can skip the test altogether."""
    gso = offloads.gso_taken()
    if offloads.csum and gso == EVERY_OFFLOAD.gso_taken():
        return None
    csum, csum4, csum6 = offloads.csum, offloads.csum4, offloads.csum6

    def taken(packet: bytes) -> bool:
        if not gso[packet[1]]:
            return False
        if packet[0] & FLAG_NEEDS_CSUM and not csum:
            ethertype = packet[22:24]  # VLAN-tagged frames: finished in software
            return (csum4 and ethertype == b"\x08\x00") or (csum6 and ethertype == b"\x86\xdd")
        return True

    return taken
