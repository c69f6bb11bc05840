"""``attach`` port: an existing host interface (veth end, NIC) joined to the switch.

Like ``brctl addif br0 eth0``: every frame heard on the interface enters the switch, every frame
the switch sends it goes out there.  The interface is not created or removed by vswitch.
"""

from __future__ import annotations

import asyncio
import socket

from .base import Deliver, Port
from .packet import open_packet_socket
from .tun import has_carrier, run_ip


class AttachPort(Port):
    kind = "attach"
    vnet = True

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None,
                 interface: str) -> None:
        super().__init__(port_id, name, mtu, mac_limit)
        self.interface = interface
        self.sock: socket.socket | None = None

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        run_ip(["ip", "link", "set", "dev", self.interface, "up"])
        self.sock = open_packet_socket(self.interface)
        fd = self.sock.fileno()
        self.use_fd(fd)
        loop.add_reader(fd, self.read_fd_batch, fd)
        self.poll()

    def poll(self) -> None:
        self.set_up(has_carrier(self.interface))

    def close(self) -> None:
        if self.sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self._fd)
            self.sock.close()
            self.sock = None

    def detail(self) -> str:
        return f"interface {self.interface}"
