"""AF_PACKET sockets on a host interface, with the virtio-net header (``PACKET_VNET_HDR``).

Used by ``attach`` ports (a veth end, a NIC) and ``tap`` ports (the host side of a TAP that
qemu holds).  Values from ``linux/if_packet.h``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

from vswitch.ports.base import RX_OVERFLOW, Port
from vswitch.ports.features import device_offloads
from vswitch.ports.tun import has_carrier
from wire.vnet import NO_OFFLOADS, Offloads

log = logging.getLogger("vswitch.port")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
BUFFER = 4 << 20


def open_packet_socket(interface: str) -> socket.socket:
    """A non-blocking raw socket hearing every frame on ``interface`` and sending onto it.

    - ``PACKET_VNET_HDR``: GSO frames come and go whole, with their offload metadata.
    - ``PACKET_IGNORE_OUTGOING``: our own transmissions are not read back (else the switch
      would loop them).
    - ``PACKET_MR_PROMISC``: a NIC hears unicast for the guests' MACs, not just its own.
    - ``PACKET_QDISC_BYPASS``: transmit straight to the driver; the switch drops, not the
      qdisc (while the device takes every offload: ``PacketSocketPort.send_by``).
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError as exc:
        raise PermissionError(
            f"cannot open a packet socket on {interface!r}: needs CAP_NET_RAW (run as root, or "
            "give the interpreter cap_net_raw,cap_net_admin)") from exc
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        buffers = ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF))
        for opt, fallback in buffers:
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, fallback, BUFFER)
        sock.bind((interface, ETH_P_ALL))
        index = socket.if_nametoindex(interface)
        mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class PacketSocketPort(Port):
    """A port that is a packet socket on host interface ``interface`` (attach and tap ports,
    the raw uplink): up while the interface has carrier; carrier and the interface's offloads
    are polled once a second, so a qemu restarted with another NIC model is followed."""

    vnet = True

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None,
                 interface: str) -> None:
        super().__init__(port_id, name, mtu, mac_limit)
        self.interface = interface
        self.sock: socket.socket | None = None

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the packet socket, send through it and read from it."""
        self.sock = open_packet_socket(self.interface)
        fd = self.sock.fileno()
        offloads = device_offloads(self.interface) or NO_OFFLOADS
        self.send_by(offloads)
        log.info("port %s: %s takes offloads: %s", self.name, self.interface,
                 " ".join(offloads.names()) or "none")
        loop.add_reader(fd, self.read_fd_batch, fd)
        self.poll()

    def send_by(self, offloads: Offloads) -> None:
        """Send as the device's ``offloads`` allow (vswitch.vnet Rule 3).

        A device that takes checksums and TCP segmentation gets packets straight from the
        socket to its driver (``PACKET_QDISC_BYPASS``); the rare packets it cannot take (UDP
        segmentation, ECN-marked TSO, on a NIC without those) are cut in Python.  A device
        without them (an e1000 guest's TAP, ``ethtool -K tso off``) gets every packet through
        the qdisc layer instead, where ``validate_xmit_skb`` cuts super-frames
        (``skb_gso_segment``) and finishes checksums in C; bypassing it would drop them.  All
        of a port's packets take the one path, so none overtakes another.  bench.offloads
        measured TCP to such a device at 0.85 Gbit/s when cut in Python (vswitch.gso, 13 µs a
        segment) against 7.4 for the kernel bridge; the kernel's cut is the one worth taking.
        If the socket cannot leave bypass, the packets are cut in Python.
        """
        assert self.sock is not None
        bypass = offloads.segments_tcp
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, int(bypass))
            kernel_cuts = not bypass
        except OSError:
            kernel_cuts = False
        self.use_fd(self.sock.fileno(), offloads, kernel_cuts)

    def poll(self) -> None:
        """Offloads, carrier, and frames the kernel dropped because our receive queue was full
        (``PACKET_STATISTICS``: the counters reset on every read)."""
        self.follow_offloads()
        self.set_up(has_carrier(self.interface))
        if self.sock is not None:
            _, dropped = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                                  8))
            if dropped:
                self.drops[RX_OVERFLOW] += dropped

    def follow_offloads(self) -> None:
        """Send by what the device takes now (a TAP's change with each qemu's NIC model)."""
        if self.sock is None:
            return
        offloads = device_offloads(self.interface)
        if offloads is not None and offloads != self.offloads:
            log.info("port %s: %s now takes offloads: %s", self.name, self.interface,
                     " ".join(offloads.names()) or "none")
            self.send_by(offloads)

    def close(self) -> None:
        if self.sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
