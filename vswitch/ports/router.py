"""The router port: where the gateway's own stack (``nat.gateway``) sits on the switch.

Like virbr0's own address on the kernel bridge, the gateway is just another station: frames the
switch sends it are handed to ``Gateway.handle``, and whatever it answers enters the switch as
if received on this port.  Port id 0 is reserved for it.
"""

from __future__ import annotations

import asyncio

from nat.gateway import Gateway
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

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        self.set_up(True)

    def send(self, packet: bytes) -> None:
        """A frame for the gateway: answer it synchronously into the switch."""
        assert self.loop is not None
        self.tx_frames += 1
        self.tx_bytes += len(packet)
        try:
            frames = to_plain_frames(packet) if needs_software(packet) else [packet[10:]]
        except MalformedPacket:
            self.drops[TX_MALFORMED] += 1
            return
        now = self.loop.time()
        for frame in frames:
            for reply in self.gateway.handle(frame, now):
                self.emit(reply, now)

    def emit(self, frame: bytes, now: float | None = None) -> None:
        """Send a frame from the gateway into the switch (also used by services later)."""
        assert self.deliver is not None and self.loop is not None
        self.rx_frames += 1
        self.rx_bytes += len(frame)
        self.deliver(NO_OFFLOAD + frame, ROUTER_PORT, self.loop.time() if now is None else now)

    def detail(self) -> str:
        gw = self.gateway
        return f"{'.'.join(map(str, gw.ip))} {':'.join(f'{b:02x}' for b in gw.mac)}"
