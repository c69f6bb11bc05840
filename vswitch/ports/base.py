"""What every port adapter shares: counters, state, and the two ways of sending a packet.

Rule 1: a port never blocks and never queues: a packet the destination cannot take right now is
        dropped and counted with its reason (a switch drops, it does not buffer forever).
Rule 2: a port that speaks the virtio-net header (``vnet = True``) sends packets as they are,
        GSO included, when its device takes them (``wire.vnet`` Rule 3: ``offloads``); any
        other packet is segmented and checksummed in software (by the kernel on a packet
        socket's qdisc path, else here) and counted (``soft_segmented``,
        ``soft_checksummed``), and a port without the header gets plain frames.
Rule 3: reads are drained in batches of at most ``BATCH`` per wake-up, for fairness between ports.
        The gateway's work for a frame (``ports.router``) is done in the same turn, so a port
        flooding the gateway costs the others latency (its batches and the work they start),
        not their frames: ``tests/lab/test_fairness.py`` measures one guest flooding it (ARP,
        DNS, SYNs to a forward) while another pings it and resolves names: no loss, a few ms.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.vnet import (
    EVERY_OFFLOAD,
    FLAG_NEEDS_CSUM,
    NO_OFFLOAD,
    NO_OFFLOADS,
    Offloads,
    is_gso,
    needs_software,
    taken_as_is,
)

BATCH = 64
#: Largest packet read: a 64 KiB GSO frame plus Ethernet, VLAN and virtio-net headers.
READ_SIZE = 65536 + 64

#: Called by a port for every packet it reads: (packet, ingress port id, now).
Deliver = Callable[[bytes, int, float], None]

# Drop reasons on transmit, as shown by `vswitch show ports`.
TX_FULL = "tx-full"
TX_DOWN = "tx-link-down"
TX_ERROR = "tx-error"
TX_MALFORMED = "tx-malformed-gso"
RX_ERROR = "rx-error"
RX_OVERFLOW = "rx-kernel-queue-full"
RX_FRAMING = "rx-framing"


class Port:
    kind: ClassVar[str] = "?"
    #: True when reads and writes carry the virtio-net header (offloads possible).
    vnet: bool = False

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None) -> None:
        self.id = port_id
        self.name = name
        self.mtu = mtu
        self.mac_limit = mac_limit
        self.up = False
        self.rx_frames = self.rx_bytes = self.tx_frames = self.tx_bytes = 0
        self.drops: Counter[str] = Counter()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.deliver: Deliver | None = None
        #: Called with (port, up) when the port goes up or down; set by the daemon.
        self.on_state: Callable[[Port, bool], None] | None = None
        #: What the device behind the port takes as it is (Rule 2).
        self.offloads: Offloads = EVERY_OFFLOAD if self.vnet else NO_OFFLOADS
        #: GSO packets cut into segments, and partial checksums finished, in software (Rule 2).
        self.soft_segmented = self.soft_checksummed = 0

    # -- lifecycle, implemented per transport ------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        self.loop = loop
        self.deliver = deliver

    def close(self) -> None:
        """Release everything this port holds; remove what it created unless persistent."""

    def poll(self) -> None:
        """Re-check link state (called about once a second by the daemon)."""

    def set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            if self.on_state is not None:
                self.on_state(self, up)

    # -- sending --------------------------------------------------------------------------------

    def send(self, packet: bytes) -> None:
        """Send one packet (Rule 1) to a port without offloads; vnet ports use ``send_fd``."""
        if needs_software(packet):
            frames = self.plain_frames(packet)
            if frames is not None:
                for frame in frames:
                    self._write_frame(frame)
        else:
            self._write_frame(memoryview(packet)[10:])

    def plain_frames(self, packet: bytes) -> list[bytes] | None:
        """Rule 2: the plain frames that stand for ``packet`` (which asks for an offload), cut
        and checksummed in software and counted; None, counted as a drop, if it is malformed."""
        try:
            frames = to_plain_frames(packet)
        except MalformedPacket:
            self.drops[TX_MALFORMED] += 1
            return None
        self.count_software(packet)
        return frames

    def count_software(self, packet: bytes) -> None:
        """Rule 2: one more packet cut (GSO) or checksummed in software for this port."""
        if is_gso(packet):
            self.soft_segmented += 1
        else:
            self.soft_checksummed += 1

    def _write_frame(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def use_fd(self, fd: int, offloads: Offloads = EVERY_OFFLOAD,
               kernel_cuts: bool = False) -> None:
        """Send packets, virtio-net header and all, to ``fd`` (a TAP or packet socket) whose
        device takes ``offloads``; call again when they change.

        ``send`` is rebound per instance to a closure with the write inline: two method calls
        fewer per frame on the hot path.  A full device drops (Rule 1); an error that means
        "nobody there" (no carrier, peer gone) is counted apart from real errors.  A device that
        takes every offload gets no test at all.  Any other gets packets it cannot take (Rule
        2) as they are when ``kernel_cuts`` (a packet socket going through the qdisc layer,
        where the kernel's GSO cuts them in C), else as plain frames behind ``NO_OFFLOAD``.
        """
        self._fd = fd
        self.offloads = offloads
        taken = taken_as_is(offloads)
        write = os.write
        drops = self.drops

        def send_fd(packet: bytes) -> None:
            try:
                write(fd, packet)
            except BlockingIOError:
                drops[TX_FULL] += 1
                return
            except OSError as exc:
                drops[_TX_REASON.get(exc.errno or 0, TX_ERROR)] += 1
                return
            self.tx_frames += 1
            self.tx_bytes += len(packet)

        if taken is None:
            self.send = send_fd  # type: ignore[method-assign]
            return
        if kernel_cuts:
            count_software = self.count_software

            def send_counted(packet: bytes) -> None:
                if (packet[0] & FLAG_NEEDS_CSUM or packet[1]) and not taken(packet):
                    count_software(packet)
                send_fd(packet)

            self.send = send_counted  # type: ignore[method-assign]
            return
        plain_frames = self.plain_frames

        def send_checked(packet: bytes) -> None:
            if (packet[0] & FLAG_NEEDS_CSUM or packet[1]) and not taken(packet):
                for frame in plain_frames(packet) or ():
                    send_fd(NO_OFFLOAD + frame)
                return
            send_fd(packet)

        self.send = send_checked  # type: ignore[method-assign]

    def read_fd_batch(self, fd: int) -> None:
        """Rule 3: drain up to BATCH packets from ``fd`` and hand each to the switch."""
        deliver = self.deliver
        assert deliver is not None and self.loop is not None
        now = self.loop.time()
        pid = self.id
        read = os.read
        for _ in range(BATCH):
            try:
                packet = read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                self.drops[RX_ERROR] += 1
                return
            self.rx_frames += 1
            self.rx_bytes += len(packet)
            deliver(packet, pid, now)

    # -- display ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.kind,
            "state": "up" if self.up else "down",
            "mtu": self.mtu,
            "offloads": self.offloads.names(),
            "software": {"segmented": self.soft_segmented,
                         "checksummed": self.soft_checksummed},
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
            "drops": dict(self.drops),
            "detail": self.detail(),
        }

    def detail(self) -> str:
        return ""


#: errnos meaning "nobody is there right now" (no carrier, peer gone), not a fault of ours.
_DOWN_ERRNOS = {
    errno.EIO, errno.ENXIO, errno.ENODEV, errno.ENETDOWN, errno.ECONNREFUSED,
    errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET, errno.ENOENT,
}
#: A write's errno -> the drop reason: ENOBUFS is a packet socket's full device queue.
_TX_REASON = {**dict.fromkeys(_DOWN_ERRNOS, TX_DOWN), errno.ENOBUFS: TX_FULL}
