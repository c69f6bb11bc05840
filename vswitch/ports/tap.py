"""``tap`` port: a persistent TAP that qemu opens by name; vswitch listens on its host side.

qemu holds the device side (``-netdev tap,ifname=NAME,script=no,downscript=no``), so it can
start, stop and restart without vswitch noticing more than a carrier change: the TAP persists,
and vswitch's packet socket stays bound to it.  ``owner``/``group`` let an unprivileged qemu
open it.  Without a qemu attached the TAP has no carrier: the port is down, not in error.

Without root: a TAP that root created once, with an owner, and brought up (``ip tuntap add NAME
mode tap user USER vnet_hdr``, ``ip link set NAME up``) is used as it is when vswitch may not
configure it; the packet socket on its host side still needs CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import logging

from vswitch.ports.base import Deliver
from vswitch.ports.packet import PacketSocketPort
from vswitch.ports.tun import delete_link, link_exists, link_is_up, link_setup, make_persistent_tap

log = logging.getLogger("vswitch.tap")


class TapPort(PacketSocketPort):
    kind = "tap"

    def __init__(self, port_id: int, name: str, mtu: int, mac_limit: int | None,
                 owner: int | None, group: int | None, persistent: bool) -> None:
        super().__init__(port_id, name, mtu, mac_limit, interface=name)
        self.owner = owner
        self.group = group
        self.persistent = persistent
        self.created = False

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        try:
            self.created = make_persistent_tap(self.name, self.owner, self.group)
            link_setup(self.name, self.mtu, ipv6=False)
        except OSError as exc:
            if not (link_exists(self.name) and link_is_up(self.name)):
                raise OSError(f"{exc}; without CAP_NET_ADMIN, have root create the TAP once: "
                              f"ip tuntap add {self.name} mode tap user USER vnet_hdr && "
                              f"ip link set {self.name} up") from exc
            log.info("tap %s: using it as root set it up (%s)", self.name, exc)
        self.listen(loop)

    def close(self) -> None:
        super().close()
        if self.created and not self.persistent:
            delete_link(self.name)

    def detail(self) -> str:
        return "qemu attached" if self.up else "waiting for qemu"
