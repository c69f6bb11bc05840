"""What every protocol of the host uplink shares: the loop, the way back to guests, how host
addresses map to guest-network addresses, the flow limit, ICMP errors and the counters."""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
from collections import Counter
from collections.abc import Callable
from typing import Final

from nat.egress.flows import GuestQuota
from nat.egress.frames import ZERO_MACS, Emit, fragments, ip_packet
from nat.translate import admin_prohibited
from wire.packets import PROTO_ICMP, PROTO_UDP, encode_icmp_error, encode_udp
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN

LOOPBACK: Final = "127.0.0.1"


class HostSide:
    """Shared by the UDP, echo, TCP and forward adapters (``nat.egress`` Rules 4 and 6)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, emit: Emit, deliver: Emit,
                 gateway_ip: bytes, host_address: bytes | None, mtu: int,
                 max_flows: int, max_per_guest: int | None = None) -> None:
        """``max_per_guest``: the per-guest quota (``nat.egress`` Rule 6; None: none but
        ``max_flows``)."""
        self.loop = loop
        self.emit = emit  # to guests, addressed by the router's ARP cache
        self.deliver = deliver  # to guests, already addressed (a TCP flow knows its guest's MAC)
        self.gateway_ip = gateway_ip
        self.host_address = host_address
        self.mtu = mtu
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:  # one socket per flow: take what the hard limit allows
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        self.max_flows = max(16, min(max_flows, soft - 256))
        per_guest = self.max_flows if max_per_guest is None else max_per_guest
        if self.max_flows < max_flows:  # the file limit shrank the table: a quarter at most
            per_guest = min(per_guest, max(1, self.max_flows // 4))
        #: Flows per guest address, counted by the flow tables and the TCP adapter (Rule 6).
        self.quota = GuestQuota(min(per_guest, self.max_flows))
        #: Answers an IPv6 guest's refused packet (ICMPv6 1/1, ``nat.egress.v6`` Rule 8); set
        #: when guests have IPv6.
        self.refuse6: Callable[[bytes], None] = lambda _: None
        #: How many host sockets the flows hold now (set by the egress: all protocols count).
        self.flows_in_use: Callable[[], int] = lambda: 0
        self.counters: Counter[str] = Counter()
        self._ident = 0

    def real(self, dst: bytes) -> str:
        """Where a guest's destination is on the host (Rule 4)."""
        return LOOPBACK if dst == self.host_address else socket.inet_ntoa(dst)

    def seen(self, host: str) -> bytes:
        """How a host peer's address appears to guests (Rule 4)."""
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        if ":" in host or host.startswith("127."):
            return self.host_address or self.gateway_ip
        return socket.inet_aton(host)

    def has_room(self) -> bool:
        """Rule 6: another host socket may be opened."""
        return self.flows_in_use() < self.max_flows

    def full(self, packet: bytes, guest: bytes) -> bool:
        """Rule 6: no room for another host socket, or ``guest`` holds its quota: the guest
        gets ICMP 3/13 (an IPv6 guest ICMPv6 1/1)."""
        if not self.has_room():
            self.counters["drop-table-full"] += 1
        elif not self.quota.admits(guest):
            self.counters["drop-guest-quota"] += 1
        else:
            return False
        if len(guest) == 16:
            self.refuse6(packet)
        else:
            self.icmp(admin_prohibited(packet, self.gateway_ip))
        return True

    def icmp(self, error: bytes | None) -> None:
        """An ICMP error made by ``nat.translate`` (a whole packet), to the guest."""
        if error is not None:
            self.emit([NO_OFFLOAD + ZERO_MACS + error[VNET_HDR_LEN + 12:]])

    def next_ident(self) -> int:
        """The IP identification of the next datagram that may be fragmented toward a guest."""
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def datagram_to_guest(self, src: bytes, sport: int, dst: bytes, dport: int,
                          data: bytes) -> list[bytes]:
        return fragments(src, dst, PROTO_UDP, encode_udp(src, dst, sport, dport, data),
                         self.next_ident(), self.mtu)

    def error_to_guest(self, guest_ip: bytes, quoted: bytes, reporter: str, icmp_type: int,
                       code: int, info: int) -> list[bytes]:
        """An ICMP error about a guest's packet, as the guest's own router would pass it on:
        from the router that reported it, quoting the packet as the guest sent it (RFC 792;
        RFC 1812 4.3.2.3: at most 576 bytes)."""
        word = struct.pack("!HH", 0, info & 0xFFFF) if (icmp_type, code) == (3, 4) \
            else bytes(4)  # frag needed carries the next-hop MTU (RFC 1191)
        self.counters[f"icmp-{icmp_type}/{code}-to-guest"] += 1
        error = encode_icmp_error(icmp_type, code, quoted, word)
        return [ip_packet(self.seen(reporter), guest_ip, PROTO_ICMP, error)]
