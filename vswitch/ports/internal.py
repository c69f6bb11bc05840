"""``internal`` port: vswitch holds the TAP's device fd; the kernel side is a host interface.

The host (or a network namespace the interface is moved into, ``netns``) is then a station on
the switch: host-to-guest access, and the guests of tests and the demo.  The TAP is opened with
``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` so the kernel hands over whole TSO frames.
"""

from __future__ import annotations

import asyncio

import pytun

from .base import Deliver, Port
from .tun import link_setup, open_tap, run_ip, set_nonblocking


class InternalPort(Port):
    kind = "internal"
    vnet = True

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None,
                 netns: str | None) -> None:
        super().__init__(port_id, name, mtu, mac_limit)
        self.netns = netns
        self.dev: pytun.TunTapDevice | None = None

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        self.dev = open_tap(self.name, vnet=True)
        self.use_fd(self.dev.fileno())
        set_nonblocking(self._fd)
        # A host port keeps IPv6; one moved into a namespace is that namespace's business.
        link_setup(self.name, self.mtu, ipv6=True, up=self.netns is None)
        if self.netns is not None:
            run_ip(["ip", "link", "set", "dev", self.name, "netns", self.netns])
        loop.add_reader(self._fd, self.read_fd_batch, self._fd)
        self.set_up(True)  # we hold the device side: the link has carrier while we run

    def close(self) -> None:
        if self.dev is not None:
            if self.loop is not None:
                self.loop.remove_reader(self._fd)
            self.dev.close()  # not persistent: closing the last fd deletes the interface
            self.dev = None

    def detail(self) -> str:
        return f"netns {self.netns}" if self.netns else "host interface"
