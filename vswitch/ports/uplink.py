"""The raw uplink: the router's own station on an L2 interface (``[uplink] type = "raw"``).

An AF_PACKET socket on the interface, with its own MAC and address (the host's are not used):
frames for that MAC go to ``Router.from_uplink``; the router's packets leave here, GSO included
(the kernel segments for the interface if it must).  It needs CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import os

from vswitch.ports.base import BATCH, READ_SIZE, RX_ERROR
from vswitch.ports.packet import PacketSocketPort
from vswitch.ports.router import RouterPort
from vswitch.ports.tun import link_is_up, run_ip


class RawUplink(PacketSocketPort):
    kind = "uplink"

    def __init__(self, interface: str, router_port: RouterPort) -> None:
        super().__init__(-1, f"uplink:{interface}", 1500, None, interface)
        self.router_port = router_port

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if not link_is_up(self.interface):  # needs CAP_NET_ADMIN; skipped when already up
            run_ip(["ip", "link", "set", "dev", self.interface, "up"])
        self.listen(loop)  # sends go straight to the socket (Port.use_fd)
        self.router_port.to_uplink = self.send

    def read_fd_batch(self, fd: int) -> None:
        """Frames from the uplink network, up to BATCH per wake-up, to the router."""
        router = self.router_port.router
        assert router is not None and self.loop is not None
        now = self.loop.time()
        for _ in range(BATCH):
            try:
                packet = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                self.drops[RX_ERROR] += 1
                return
            self.rx_frames += 1
            self.rx_bytes += len(packet)
            self.router_port.dispatch(router.from_uplink(packet, now))

    def detail(self) -> str:
        return f"raw on {self.interface}"
