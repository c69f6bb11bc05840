"""Which packets a device takes as it is (wire.vnet Rule 3), and what a port whose device
lacks an offload sends instead (vswitch.ports.base Rule 2): plain frames behind a zero
virtio-net header, every checksum right, counted.

The port writes to one end of a unix datagram socketpair, so each write is one datagram the
test reads back whole, as a TAP or packet socket would take it.
"""

import socket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.unit.test_gso import MACS, V4, V6, check_tcp_segments, offload, payload, rebuilt
from vswitch.ports.base import Port
from wire.vnet import (
    EVERY_OFFLOAD,
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    NO_OFFLOAD,
    NO_OFFLOADS,
    Offloads,
    taken_as_is,
    wrap,
)

TSO4 = Ether(**MACS) / IP(**V4) / TCP(sport=40000, dport=80, flags="PA") / Raw(payload(20000))
TSO6 = Ether(**MACS) / IPv6(**V6) / TCP(sport=40000, dport=80, flags="PA") / Raw(payload(9000))
SMALL4 = Ether(**MACS) / IP(**V4) / UDP(sport=5000, dport=53) / Raw(b"question")
SMALL6 = Ether(**MACS) / IPv6(**V6) / UDP(sport=5000, dport=53) / Raw(b"question")
USO = Ether(**MACS) / IP(**V4) / UDP(sport=5000, dport=4433) / Raw(payload(6000))

CSUM_TSO = Offloads(csum=True, tso4=True, tso6=True)  # a NIC without ECN TSO or USO
CSUM4_ONLY = Offloads(csum4=True)  # checksums over IPv4 only, no segmentation


@pytest.mark.parametrize("offloads, packet, taken", [
    # a device with every offload takes everything: no test is made at all
    (EVERY_OFFLOAD, None, None),
    (CSUM_TSO, offload(TSO4, GSO_TCPV4, 1448), True),
    (CSUM_TSO, offload(TSO6, GSO_TCPV6, 1428), True),
    (CSUM_TSO, offload(TSO4, GSO_TCPV4 | GSO_ECN, 1448), False),  # no tx-tcp-ecn-segmentation
    (CSUM_TSO, offload(USO, GSO_UDP_L4, 1400), False),  # no tx-udp-segmentation
    (EVERY_OFFLOAD._replace(tso4=False), offload(TSO4, GSO_TCPV4, 1448), False),
    (Offloads(csum=True, uso=True), offload(USO, GSO_UDP_L4, 1400), True),
    (Offloads(csum=True, uso=True, tso4=True), offload(USO, GSO_UDP, 1400), False),  # UFO: never
    (CSUM4_ONLY, offload(SMALL4), True),
    (CSUM4_ONLY, offload(SMALL6), False),  # the IPv6 partial checksum is finished here
    (NO_OFFLOADS, offload(SMALL4), False),
])
def test_what_a_device_takes_as_it_is(offloads, packet, taken):
    test = taken_as_is(offloads)
    if packet is None:
        assert test is None
    else:
        assert test is not None and test(packet) is taken


def test_only_a_device_without_tcp_segmentation_leaves_the_qdisc_bypass():
    """A NIC without USO or ECN TSO keeps the fast path (those rare packets are cut here); a
    device without checksums or TSO sends through the qdisc, where the kernel cuts."""
    assert EVERY_OFFLOAD.segments_tcp and CSUM_TSO.segments_tcp
    assert not NO_OFFLOADS.segments_tcp and not CSUM4_ONLY.segments_tcp
    assert not EVERY_OFFLOAD._replace(tso6=False).segments_tcp


class Recorder:
    """A port writing to a socketpair: each packet it sends is one datagram read back here."""

    def __init__(self, offloads: Offloads) -> None:
        self.port = Port(1, "p1", 1500, None)
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.theirs.setblocking(False)
        self.port.use_fd(self.ours.fileno(), offloads)

    def sent(self) -> list[bytes]:
        packets = []
        while True:
            try:
                packets.append(self.theirs.recv(70000))
            except BlockingIOError:
                return packets

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def recorder():
    made: list[Recorder] = []

    def make(offloads: Offloads) -> Recorder:
        made.append(Recorder(offloads))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_device_without_tso_gets_the_segments_with_their_checksums(recorder):
    r = recorder(NO_OFFLOADS)
    r.port.send(offload(TSO4, GSO_TCPV4, 1448))
    packets = r.sent()
    assert all(p[:10] == NO_OFFLOAD for p in packets), "plain frames, nothing left to offload"
    check_tcp_segments(TSO4, [p[10:] for p in packets], 1448)
    assert r.port.soft_segmented == 1 and r.port.soft_checksummed == 0
    assert r.port.tx_frames == len(packets) == 14


def test_the_same_device_after_it_gains_tso_gets_the_super_frame(recorder):
    r = recorder(NO_OFFLOADS)
    r.port.use_fd(r.ours.fileno(), CSUM_TSO)  # e.g. qemu restarted with virtio-net
    packet = offload(TSO6, GSO_TCPV6, 1428)
    r.port.send(packet)
    assert r.sent() == [packet]
    assert r.port.soft_segmented == 0


def test_a_partial_checksum_the_device_cannot_finish_is_finished_here(recorder):
    r = recorder(CSUM4_ONLY)
    r.port.send(offload(SMALL4))
    r.port.send(offload(SMALL6))
    v4, v6 = r.sent()
    assert v4 == offload(SMALL4), "IPv4: the device finishes it"
    assert v6[:10] == NO_OFFLOAD and v6[10:] == rebuilt(v6[10:]) == bytes(SMALL6)
    assert r.port.soft_checksummed == 1


def test_plain_frames_and_malformed_offloads(recorder):
    r = recorder(NO_OFFLOADS)
    plain = wrap(bytes(SMALL4))
    r.port.send(plain)
    bad = bytearray(offload(TSO4, GSO_TCPV4, 1448))
    bad[8:10] = (60000).to_bytes(2, "little")  # csum_offset far outside the frame
    r.port.send(bytes(bad))
    assert r.sent() == [plain]
    assert r.port.drops == {"tx-malformed-gso": 1}
