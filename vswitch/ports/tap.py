"""``tap`` port: a persistent TAP that qemu opens by name; vswitch listens on its host side.

qemu holds the device side (``-netdev tap,ifname=NAME,script=no,downscript=no``), so it can
start, stop and restart without vswitch noticing more than a carrier change: the TAP persists,
and vswitch's packet socket stays bound to it.  ``owner``/``group`` let an unprivileged qemu
open it.  Without a qemu attached the TAP has no carrier: the port is down, not in error.
"""

from __future__ import annotations

import asyncio
import socket

from .base import Deliver, Port
from .packet import open_packet_socket
from .tun import delete_link, has_carrier, link_setup, make_persistent_tap


class TapPort(Port):
    kind = "tap"
    vnet = True

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None,
                 owner: int | None, group: int | None, persistent: bool) -> None:
        super().__init__(port_id, name, mtu, mac_limit)
        self.owner = owner
        self.group = group
        self.persistent = persistent
        self.created = False
        self.sock: socket.socket | None = None

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        self.created = make_persistent_tap(self.name, self.owner, self.group)
        link_setup(self.name, self.mtu, ipv6=False)
        self.sock = open_packet_socket(self.name)
        self.use_fd(self.sock.fileno())
        loop.add_reader(self._fd, self.read_fd_batch, self._fd)
        self.poll()

    def poll(self) -> None:
        self.set_up(has_carrier(self.name))

    def close(self) -> None:
        if self.sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self._fd)
            self.sock.close()
            self.sock = None
        if self.created and not self.persistent:
            delete_link(self.name)

    def detail(self) -> str:
        return "qemu attached" if self.up else "waiting for qemu"
