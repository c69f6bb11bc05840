"""The router port: where the gateway's own stack (``nat.gateway``) sits on the switch.

Like virbr0's own address on the kernel bridge, the gateway is just another station: frames the
switch sends it are handed to ``Gateway.handle``, and whatever it answers enters the switch as
if received on this port.  Port id 0 is reserved for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nat.gateway import Gateway
from nat.router import Out, Router
from vswitch.errors import MalformedPacket
from vswitch.gso import to_plain_frames
from vswitch.ports.base import TX_MALFORMED, Deliver, Port
from vswitch.vnet import NO_OFFLOAD, needs_software

ROUTER_PORT = 0


class RouterPort(Port):
    kind = "router"
    vnet = True

    def __init__(self, gateway: Gateway, mtu: int = 1500) -> None:
        super().__init__(ROUTER_PORT, "gateway", mtu, None)
        self.gateway = gateway
        #: The router behind the gateway, and where its uplink-bound packets go (set by the
        #: daemon when there is an uplink).
        self.router: Router | None = None
        self.to_uplink: Callable[[bytes], None] | None = None

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        self.set_up(True)

    def send(self, packet: bytes) -> None:
        """A frame for the gateway: answer it synchronously into the switch."""
        assert self.loop is not None
        self.tx_frames += 1
        self.tx_bytes += len(packet)
        if self.router is not None and self._routed(packet):
            return
        try:
            frames = to_plain_frames(packet) if needs_software(packet) else [packet[10:]]
        except MalformedPacket:
            self.drops[TX_MALFORMED] += 1
            return
        now = self.loop.time()
        for frame in frames:
            for reply in self.gateway.handle(frame, now):
                self.emit(reply, now)

    def _routed(self, packet: bytes) -> bool:
        """Hand the router what is its (Rule 1 of nat.router); True if it took the packet."""
        router = self.router
        assert router is not None and self.loop is not None
        ethertype = packet[22:24]
        now = self.loop.time()
        if ethertype == b"\x08\x06":  # ARP: the router learns guests (and we go on)
            self.dispatch(Out(router.guest_arp(packet[10:], now), []))
            return False
        if (ethertype != b"\x08\x00" or packet[10:16] != self.gateway.mac
                or len(packet) < 44 or packet[40:44] == self.gateway.broadcast):
            return False
        dst = packet[40:44]
        if (dst == self.gateway.ip or dst in self.gateway.aliases) and not self._to_host(packet):
            return False
        self.dispatch(router.from_guest(packet, now))
        return True

    def _to_host(self, packet: bytes) -> bool:
        """TCP or UDP to the host address that no gateway service takes (nat.egress Rule 4)."""
        egress = self.router.egress if self.router is not None else None
        if egress is None or packet[40:44] != egress.host_address:
            return False
        proto, l4 = packet[33], 24 + (packet[24] & 0x0F) * 4
        if proto not in (6, 17) or len(packet) < l4 + 4 or packet[30:32] not in (b"\x00\x00",
                                                                                 b"\x40\x00"):
            return False  # not TCP/UDP, or a fragment: the gateway stack's business
        services = self.gateway.tcp if proto == 6 else self.gateway.udp
        return int.from_bytes(packet[l4 + 2:l4 + 4], "big") not in services

    def dispatch(self, out: Out) -> None:
        """Router output: packets into the switch from this port, and out of the uplink."""
        assert self.deliver is not None and self.loop is not None
        now = self.loop.time()
        for packet in out.switch:
            self.rx_frames += 1
            self.rx_bytes += len(packet)
            self.deliver(packet, ROUTER_PORT, now)
        if out.uplink and self.to_uplink is not None:
            for packet in out.uplink:
                self.to_uplink(packet)

    def emit(self, frame: bytes, now: float | None = None) -> None:
        """Send a frame from the gateway into the switch (also used by services later)."""
        assert self.deliver is not None and self.loop is not None
        self.rx_frames += 1
        self.rx_bytes += len(frame)
        self.deliver(NO_OFFLOAD + frame, ROUTER_PORT, self.loop.time() if now is None else now)

    def detail(self) -> str:
        gw = self.gateway
        return f"{'.'.join(map(str, gw.ip))} {':'.join(f'{b:02x}' for b in gw.mac)}"
