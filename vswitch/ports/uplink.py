"""The raw uplink: the router's own station on an L2 interface (``[uplink] type = "raw"``).

An AF_PACKET socket on the interface, with its own MAC and address (the host's are not used):
frames for that MAC go to ``Router.from_uplink`` (IPv6 ones to ``Router6.from_uplink``); the
routers' packets leave here, GSO included when the interface takes it (else cut in software:
``Port.use_fd``).  It needs CAP_NET_RAW.

With ``address = "dhcp"`` the uplink leases its address as a DHCP client (``dhcp.client``):
replies to UDP port 68 go to the client, and each new lease (or its loss) is reported to the
daemon, which rebinds the router.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dhcp.client import Bound, DhcpClient, Lost, Send
from nat.uplink6 import UplinkStation6
from vswitch.ports.packet import PacketSocketPort
from vswitch.ports.router import RouterPort
from vswitch.ports.tun import link_is_up, run_ip
from wire.errors import MalformedPacket
from wire.packets import (
    BROADCAST_MAC,
    ETH_P_IP,
    PROTO_TCP,
    PROTO_UDP,
    decode_ipv4,
    decode_udp,
    encode_ethernet,
    encode_ipv4,
    encode_udp,
    ipv4_ihl,
)
from wire.vnet import EVERY_OFFLOAD, NO_OFFLOAD, Offloads


class RawUplink(PacketSocketPort):
    kind = "uplink"

    def __init__(self, interface: str, router_port: RouterPort, mac: bytes) -> None:
        super().__init__(-1, f"uplink:{interface}", 1500, None, interface)
        self.router_port = router_port
        self.mac = mac
        self.client: DhcpClient | None = None
        self.on_lease: Callable[[Bound | None], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer6: asyncio.TimerHandle | None = None  # the IPv6 station's (Router6 Rule 6)
        self._deadline6: float | None = None

    def lease_by_dhcp(self, client: DhcpClient, on_lease: Callable[[Bound | None], None]) -> None:
        self.client = client
        self.on_lease = on_lease

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deliver = self.from_uplink
        if not link_is_up(self.interface):  # needs CAP_NET_ADMIN; skipped when already up
            run_ip(["ip", "link", "set", "dev", self.interface, "up"])
        self.listen(loop)  # sends go straight to the socket (use_fd)
        if self.client is not None:
            self._dhcp(self.client.start(loop.time()))
        station = self._station6()
        if station is not None:
            self._send6(station.start(loop.time()))

    def use_fd(self, fd: int, offloads: Offloads = EVERY_OFFLOAD,
               kernel_cuts: bool = False) -> None:
        """As ``Port.use_fd``; the router sends through the new ``send`` too."""
        super().use_fd(fd, offloads, kernel_cuts)
        self.router_port.to_uplink = self.send

    def from_uplink(self, packet: bytes, _port: int, now: float) -> None:
        """A frame from the uplink network (read in batches by ``Port.read_fd_batch``): to
        the DHCP client if it is its server's reply, else to the router."""
        router = self.router_port.router
        assert router is not None
        if self.client is not None and _to_dhcp_client(packet):
            self._dhcp_reply(packet, now)
            return
        router6 = self.router_port.router6
        if router6 is not None and packet[22:24] == b"\x86\xdd":
            self.router_port.dispatch(router6.from_uplink(packet, now))
            if packet[10] & 1 or packet[30] != PROTO_TCP:  # maybe the station's (DAD, DHCPv6)
                self._arm6()
            return
        self.router_port.dispatch(router.from_uplink(packet, now))

    # -- DHCP client I/O (address = "dhcp") -----------------------------------------------

    def _dhcp_reply(self, packet: bytes, now: float) -> None:
        assert self.client is not None
        try:
            frame = packet[10:]
            _, _, payload = decode_udp(frame, decode_ipv4(frame))
        except MalformedPacket:
            self.drops["rx-malformed-dhcp"] += 1
            return
        self._dhcp(self.client.handle(payload, now))

    def _dhcp(self, actions: list[Send | Bound | Lost]) -> None:
        """Carry out the client's actions and re-arm its one timer."""
        assert self.client is not None and self.loop is not None
        router = self.router_port.router
        for action in actions:
            if isinstance(action, Send):
                dst_mac = BROADCAST_MAC
                if not action.broadcast and router is not None:
                    dst_mac = router.outside.lookup(action.dst_ip, self.loop.time()) or dst_mac
                udp = encode_udp(action.src_ip, action.dst_ip, 68, 67, action.payload)
                ip = encode_ipv4(action.src_ip, action.dst_ip, PROTO_UDP, udp, ttl=64)
                self.send(bytes(10) + encode_ethernet(dst_mac, self.mac, ETH_P_IP, ip))
            elif self.on_lease is not None:
                self.on_lease(action if isinstance(action, Bound) else None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.client.next_deadline()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._dhcp_expire)

    def _dhcp_expire(self) -> None:
        assert self.client is not None and self.loop is not None
        self._timer = None
        self._dhcp(self.client.expire(self.loop.time()))

    # -- the IPv6 station's I/O (address6: nat.uplink6) ------------------------------------

    def _station6(self) -> UplinkStation6 | None:
        router6 = self.router_port.router6
        return router6.station if router6 is not None else None  # type: ignore[return-value]

    def _send6(self, frames: list[bytes]) -> None:
        """Send the station's frames and re-arm its one timer."""
        for frame in frames:
            self.send(NO_OFFLOAD + frame)
        self._arm6()

    def _arm6(self) -> None:
        station = self._station6()
        if station is None or self.loop is None:
            return
        deadline = station.next_deadline()
        if self._timer6 is not None:
            if deadline == self._deadline6:
                return
            self._timer6.cancel()
            self._timer6 = None
        self._deadline6 = deadline
        if deadline is not None:
            self._timer6 = self.loop.call_at(deadline, self._tick6)

    def poll(self) -> None:
        """Once a second, as every port: also re-arm the IPv6 station's timer, which what
        the router sent may have moved (a next hop to solicit)."""
        super().poll()
        self._arm6()

    def _tick6(self) -> None:
        station = self._station6()
        assert station is not None and self.loop is not None
        self._timer6 = None
        self._send6(station.tick(self.loop.time()))

    def close(self) -> None:
        if self.client is not None and self.loop is not None and self.sock is not None:
            self._dhcp(self.client.release(self.loop.time()))  # RFC 2131 4.4.6: give it back
        station = self._station6()
        if station is not None and self.loop is not None and self.sock is not None:
            for frame in station.stop(self.loop.time()):  # RFC 8415 18.2.7: the lease back
                self.send(NO_OFFLOAD + frame)
        for timer in (self._timer, self._timer6):
            if timer is not None:
                timer.cancel()
        super().close()

    def detail(self) -> str:
        return f"raw on {self.interface}"


def _to_dhcp_client(packet: bytes) -> bool:
    """IPv4 UDP to port 68: a DHCP server's reply for the uplink's client."""
    if len(packet) < 10 + 14 + 28 or packet[22:24] != b"\x08\x00" or packet[33] != 17:
        return False
    ihl = ipv4_ihl(packet, 24)
    return packet[24 + ihl + 2:24 + ihl + 4] == b"\x00\x44"
