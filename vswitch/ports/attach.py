"""``attach`` port: an existing host interface (veth end, NIC) joined to the switch.

Like ``brctl addif br0 eth0``: every frame heard on the interface enters the switch, every frame
the switch sends it goes out there.  The interface is not created or removed by vswitch.
"""

from __future__ import annotations

import asyncio

from vswitch.ports.base import Deliver
from vswitch.ports.packet import PacketSocketPort
from vswitch.ports.tun import run_ip


class AttachPort(PacketSocketPort):
    kind = "attach"

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        run_ip(["ip", "link", "set", "dev", self.interface, "up"])
        self.listen(loop)

    def detail(self) -> str:
        return f"interface {self.interface}"
