"""The router port: where the gateway's own stack (``nat.gateway``) sits on the switch.

Like virbr0's own address on the kernel bridge, the gateway is just another station: frames the
switch sends it are handed to ``Gateway.handle``, and whatever it answers enters the switch as
if received on this port.  Port id 0 is reserved for it.

As a host's IP layer does (RFC 1122 3.3.2), the port reassembles fragments addressed to the
gateway's own addresses (``nat.reassembly``) before deciding whose the datagram is, and cuts
what the gateway answers into fragments when it is larger than the port's MTU: ``ping -s 4000``
to the gateway works, as it does to virbr0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nat.gateway import Gateway, Line
from nat.reassembly import Reassembly
from nat.router import Out, Router
from nat.router6 import Router6
from nat.translate import icmp_error
from vswitch.ports.base import TX_MALFORMED, Deliver, Port
from wire.errors import MalformedPacket
from wire.gso import fragment_ipv4, to_plain_frames
from wire.packets import (
    IPV4_DF,
    IPV4_FRAGMENTED,
    PROTO_TCP,
    PROTO_UDP,
    Ipv4,
    decode_ipv4,
    format_mac,
    ipv4_ihl,
)
from wire.vnet import FLAG_NEEDS_CSUM, NO_OFFLOAD, VNET_HDR_LEN, is_gso

ROUTER_PORT = 0
L3 = VNET_HDR_LEN + 14  # the IPv4 header's offset in a packet
#: A partial checksum's csum_offset (virtio-net header, little-endian) when it is TCP's.
TCP_CSUM = (16).to_bytes(2, "little")


class RouterPort(Port):
    kind = "router"
    vnet = True

    def __init__(self, gateway: Gateway, router: Router | None = None, mtu: int = 1500,
                 fragment_timeout: float = 30.0) -> None:
        super().__init__(ROUTER_PORT, "gateway", mtu, None)
        self.gateway = gateway
        gateway.mtu = mtu
        self.reassembly = Reassembly(fragment_timeout)
        #: The router behind the gateway (None without an uplink), and where its uplink-bound
        #: packets go (the raw uplink's port sets it when it opens, and as its device changes).
        self.router = router
        self.to_uplink: Callable[[bytes], None] | None = None
        #: The IPv6 router (``nat.router6``), when the guest network has a prefix.
        self.router6: Router6 | None = None
        if gateway.v6 is not None:  # mode: the IPv4 router's, the gateway's with no router
            mode = router.mode if router is not None else \
                "isolated" if gateway.v6.isolated else "none"
            self.router6 = Router6(gateway.v6, mode, fragment_timeout=fragment_timeout)
            self.router6.released = self.dispatch

    def open(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        super().open(loop, deliver)
        self.set_up(True)

    def send(self, packet: bytes) -> None:
        """A frame for the gateway: answer it synchronously into the switch."""
        assert self.loop is not None
        self.tx_frames += 1
        self.tx_bytes += len(packet)
        self._take(packet)

    def _take(self, packet: bytes) -> None:
        assert self.loop is not None
        if self.router is not None and self._routed(packet):
            return
        if self.router6 is not None and packet[22:24] == b"\x86\xdd":
            ip6 = self.router6.routes(packet)
            if ip6 is not None:  # nat.router6 Rule 1
                self.dispatch(self.router6.from_guest(packet, ip6, self.loop.time()))
                return
        if self._fragment_for_us(packet):
            self._reassemble(packet)
            return
        try:
            # GSO frames are cut into the segments they stand for, and a TCP segment's partial
            # checksum is finished: nat.tcp_server verifies it (its Rule 6).  A UDP one is left
            # as it is: the gateway stack verifies none (a virtual link), and finishing it
            # cost a tenth of a DNS answer's time.
            if is_gso(packet) or packet[0] & FLAG_NEEDS_CSUM and packet[8:10] == TCP_CSUM:
                frames = to_plain_frames(packet)
            else:
                frames = [packet[10:]]
        except MalformedPacket:
            self.drops[TX_MALFORMED] += 1
            return
        now = self.loop.time()
        for frame in frames:
            for reply in self.gateway.handle(frame, now):
                self.emit(reply, now)

    def _routed(self, packet: bytes) -> bool:
        """Hand the router what is its (Rule 1 of nat.router); True if it took the packet.

        The IPv4 header is decoded here, once, and the view goes down the router, the NAT and
        the host uplink with the packet.
        """
        router = self.router
        assert router is not None and self.loop is not None
        if packet[22:24] == b"\x08\x06":  # ARP: the router learns guests (and we go on)
            self.dispatch(Out(router.guest_arp(packet[10:], self.loop.time()), []))
            return False
        ip = self.routes(packet)
        if ip is None:
            return False
        self.dispatch(router.from_guest(packet, self.loop.time(), ip))
        return True

    def routes(self, packet: bytes) -> Ipv4 | None:
        """The IPv4 header of ``packet`` if it is the router's to route (not the gateway
        stack's), else None."""
        gateway = self.gateway
        if self.router is None or packet[22:24] != b"\x08\x00" or packet[10:16] != gateway.mac:
            return None
        try:
            ip = decode_ipv4(packet, L3)
        except MalformedPacket:
            return None  # the gateway stack counts it (nat.gateway)
        dst = ip.dst
        if dst == gateway.broadcast or (dst == gateway.ip or dst in gateway.aliases) \
                and not self._to_host(packet, ip):
            return None
        return ip

    def explain(self, packet: bytes) -> list[Line]:
        """What this port would do with ``packet`` (the router's or the gateway's decision),
        in words with its rule; changes nothing."""
        ip = self.routes(packet)
        if ip is not None:
            assert self.router is not None
            return self.router.explain_from_guest(packet, ip)
        if self.router6 is not None and packet[22:24] == b"\x86\xdd":
            ip6 = self.router6.routes(packet)
            if ip6 is not None:
                return self.router6.explain(packet, ip6)
        if self._fragment_for_us(packet):
            return [("a fragment for the gateway: held until the datagram is whole",
                     "router port (RFC 1122 3.3.2)")]
        return self.gateway.explain(packet[VNET_HDR_LEN:])

    def _to_host(self, packet: bytes, ip: Ipv4) -> bool:
        """TCP or UDP to the host address that no gateway service takes (nat.egress Rule 4)."""
        egress = self.router.egress if self.router is not None else None
        if egress is None or ip.dst != egress.host_address:
            return False
        if ip.proto not in (PROTO_TCP, PROTO_UDP) or ip.end - ip.start < 4 \
                or ip.fragment & IPV4_FRAGMENTED:
            return False  # not TCP/UDP, or a fragment: the gateway stack's business
        services = self.gateway.tcp if ip.proto == PROTO_TCP else self.gateway.udp
        return int.from_bytes(packet[ip.start + 2:ip.start + 4], "big") not in services

    def _fragment_for_us(self, packet: bytes) -> bool:
        """An IPv4 fragment to the gateway's MAC and one of its addresses (the host address is
        one: whose the datagram is depends on its ports, known once it is whole)."""
        return (len(packet) >= 44 and packet[22:24] == b"\x08\x00"
                and (packet[30] << 8 | packet[31]) & IPV4_FRAGMENTED != 0
                and packet[10:16] == self.gateway.mac
                and (packet[40:44] == self.gateway.ip or packet[40:44] in self.gateway.aliases))

    def _reassemble(self, packet: bytes) -> None:
        assert self.loop is not None
        try:
            if packet[1] or packet[0] & 1:  # GSO or NEEDS_CSUM: no fragment is either
                raise MalformedPacket("an offloaded fragment")
            ip = decode_ipv4(packet, VNET_HDR_LEN + 14)
        except MalformedPacket:
            self.drops[TX_MALFORMED] += 1
            return
        whole = self.reassembly.add(packet[:ip.end], self.loop.time(), VNET_HDR_LEN + 14)
        if whole is not None:
            self._take(whole)

    def poll(self) -> None:
        """Once a second: datagrams whose fragments did not all come are dropped, with ICMP
        time exceeded, code 1, when their first fragment came (RFC 792, RFC 1122 3.3.2)."""
        if self.loop is None:
            return
        now = self.loop.time()
        if self.gateway.v6 is not None:  # unsolicited router advertisements (gateway6 Rule 3)
            for frame in self.gateway.v6.tick(now):
                self.emit(frame, now)
        if self.router6 is not None:
            self.dispatch(self.router6.expire(now))
        for first in self.reassembly.expire(now):
            error = icmp_error(first, 11, 1, first[VNET_HDR_LEN + 30:VNET_HDR_LEN + 34])
            if error is not None:
                self.emit(error[VNET_HDR_LEN:], now)

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
        """Send a frame from the gateway into the switch (also used by services later); an
        IPv4 packet over the MTU without DF leaves in fragments (RFC 791 3.2)."""
        assert self.deliver is not None and self.loop is not None
        now = self.loop.time() if now is None else now
        frames = [frame]
        if len(frame) > 14 + self.mtu and frame[12:14] == b"\x08\x00" \
                and not frame[20] << 8 & IPV4_DF:
            ihl = ipv4_ihl(frame, 14)
            frames = fragment_ipv4(frame, 14, 14 + ihl, self.mtu - ihl)
        for piece in frames:
            self.rx_frames += 1
            self.rx_bytes += len(piece)
            self.deliver(NO_OFFLOAD + piece, ROUTER_PORT, now)

    def detail(self) -> str:
        gw = self.gateway
        return f"{'.'.join(map(str, gw.ip))} {format_mac(gw.mac)}"
