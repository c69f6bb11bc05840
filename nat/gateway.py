"""The gateway's own stack: the router port's address on the guest network, like virbr0's.

Rule 1: ARP requests for the gateway address are answered (RFC 826); a request claiming the
        gateway's own address as sender is counted as a conflict and not answered.
Rule 2: ICMP echo requests to the gateway are answered (RFC 792; RFC 1122 3.2.2.6).  Fragments
        come here whole (the router port reassembles them), and an answer larger than ``mtu``
        goes without DF, for the router port to fragment.
Rule 3: UDP to the gateway address, the subnet broadcast or 255.255.255.255 goes to the service
        registered for its destination port (DHCP 67, DNS 53).  Unicast UDP to a port with no
        service gets ICMP port unreachable (RFC 1122 3.2.2.1); broadcast never gets an error
        (RFC 1122 3.2.2).
Rule 4: TCP to the gateway goes to the TCP service for its port (DNS 53); other ports get RST
        (RFC 793 3.4, "reset generation").
Rule 5: an alias (the host uplink's host address, when it is not the gateway's own) answers
        ARP and ping like the gateway address; its TCP and UDP are the router's.
Rule 6: what cannot be parsed is counted by reason and dropped; nothing here raises.

Sans-I/O: ``handle(frame, now)`` takes one plain Ethernet frame and returns frames to send back
into the switch; services may also hand frames to the daemon later (DNS answers from upstream).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from wire.errors import MalformedPacket
from wire.packets import (
    BROADCAST_IP,
    ETH_P_ARP,
    ETH_P_IP,
    ICMP_ECHO_REQUEST,
    IPV4_FRAGMENTED,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    Arp,
    Ipv4,
    decode_arp,
    decode_ethernet,
    decode_icmp,
    decode_ipv4,
    decode_udp,
    encode_arp,
    encode_ethernet,
    encode_icmp,
    encode_icmp_error,
    encode_ipv4,
    encode_udp,
)
from wire.tcp import reset_for

#: A UDP service: (client MAC, client IP, client port, destination IP, payload, now) -> frames.
UdpService = Callable[[bytes, bytes, int, bytes, bytes, float], list[bytes]]


class TcpService(Protocol):
    def handle_segment(self, gateway: Gateway, frame: bytes, ip: Ipv4, now: float) -> list[bytes]:
        """Frames answering one TCP segment addressed to the gateway."""
        ...


class Gateway:
    def __init__(self, mac: bytes, ip: bytes, prefix: int,
                 aliases: frozenset[bytes] = frozenset()) -> None:
        self.mac = mac
        self.ip = ip
        mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        self.broadcast = struct.pack("!I", int.from_bytes(ip, "big") | (~mask & 0xFFFFFFFF))
        self.udp: dict[int, UdpService] = {}
        self.tcp: dict[int, TcpService] = {}
        self.counters: Counter[str] = Counter()
        self.aliases = aliases  # Rule 5
        self.mtu = 1500  # the link's (the router port sets it): larger answers go without DF
        self._ident = 0
        self._dispatch = {ETH_P_ARP: self._handle_arp, ETH_P_IP: self._handle_ipv4}

    def handle(self, frame: bytes, now: float) -> list[bytes]:
        """Frames to send in answer to ``frame`` (Rule 6: never raises on bad input)."""
        try:
            dst, _, ethertype, tags, _ = decode_ethernet(frame)
        except MalformedPacket:
            self.counters["runt"] += 1
            return []
        if dst != self.mac and not dst[0] & 1:
            return []  # flooded unicast for someone else
        handler = self._dispatch.get(ethertype)
        if handler is None or tags:  # the gateway's network is untagged
            return []
        try:
            return handler(frame, now)
        except MalformedPacket as exc:
            self.counters[f"malformed: {exc}"] += 1
            return []

    # -- ARP (Rule 1) ---------------------------------------------------------------------

    def _handle_arp(self, frame: bytes, now: float) -> list[bytes]:
        arp = decode_arp(frame)
        if arp.op != 1 or (arp.target_ip != self.ip and arp.target_ip not in self.aliases):
            return []
        if arp.sender_ip == self.ip:
            self.counters["arp-claims-gateway-ip"] += 1
            return []
        if arp.sender_mac != frame[6:12]:
            self.counters["arp-sender-mac-mismatch"] += 1  # answered to the frame's source
        reply = Arp(2, self.mac, arp.target_ip, arp.sender_mac, arp.sender_ip)
        self.counters["arp-replies"] += 1
        return [encode_ethernet(frame[6:12], self.mac, ETH_P_ARP, encode_arp(reply))]

    # -- IPv4 ---------------------------------------------------------------------------------

    def _handle_ipv4(self, frame: bytes, now: float) -> list[bytes]:
        ip = decode_ipv4(frame)
        if ip.dst in self.aliases:
            return self._handle_icmp(frame, ip) if ip.proto == PROTO_ICMP else []
        if ip.dst not in (self.ip, self.broadcast, BROADCAST_IP):
            return []  # routing is the router's job, not the gateway stack's
        if ip.fragment & IPV4_FRAGMENTED:
            self.counters["fragment-to-gateway"] += 1  # services here never need fragments
            return []
        if ip.proto == PROTO_UDP:
            return self._handle_udp(frame, ip, now)
        if ip.dst != self.ip:
            return []
        if ip.proto == PROTO_ICMP:
            return self._handle_icmp(frame, ip)
        if ip.proto == PROTO_TCP:
            service = self.tcp.get(_tcp_dport(frame, ip))
            if service is not None:
                return service.handle_segment(self, frame, ip, now)
            return self.tcp_reset(frame, ip)
        return [self.icmp_error(frame, ip, 3, 2)]  # protocol unreachable

    def _handle_udp(self, frame: bytes, ip: Ipv4, now: float) -> list[bytes]:
        sport, dport, payload = decode_udp(frame, ip)
        service = self.udp.get(dport)
        if service is None:
            if ip.dst != self.ip:
                return []  # Rule 3: no errors for broadcast
            return [self.icmp_error(frame, ip, 3, 3)]
        return service(frame[6:12], ip.src, sport, ip.dst, payload, now)

    def _handle_icmp(self, frame: bytes, ip: Ipv4) -> list[bytes]:
        icmp = decode_icmp(frame, ip)
        if icmp.type != ICMP_ECHO_REQUEST:
            return []
        # echo reply: the same identifier, sequence and data
        reply = encode_icmp(0, 0, frame[icmp.start + 4:icmp.end])
        self.counters["echo-replies"] += 1
        return [self.ip_frame(frame[6:12], ip.src, PROTO_ICMP, reply, source=ip.dst)]

    # -- building -----------------------------------------------------------------------------

    def ip_frame(self, dst_mac: bytes, dst_ip: bytes, proto: int, payload: bytes,
                 source: bytes | None = None) -> bytes:
        self._ident = (self._ident + 1) & 0xFFFF
        return encode_ethernet(dst_mac, self.mac, ETH_P_IP,
                               encode_ipv4(source or self.ip, dst_ip, proto, payload,
                                           ident=self._ident,
                                           dont_fragment=20 + len(payload) <= self.mtu))

    def udp_frame(self, dst_mac: bytes, dst_ip: bytes, sport: int, dport: int,
                  payload: bytes) -> bytes:
        return self.ip_frame(dst_mac, dst_ip, PROTO_UDP,
                             encode_udp(self.ip, dst_ip, sport, dport, payload))

    def icmp_error(self, frame: bytes, ip: Ipv4, icmp_type: int, code: int) -> bytes:
        """An ICMP error quoting the IP header and 8 bytes of the offending datagram (RFC 792)."""
        quoted = frame[14:min(ip.end, ip.start + 8)]
        self.counters[f"icmp-{icmp_type}/{code}-sent"] += 1
        return self.ip_frame(frame[6:12], ip.src, PROTO_ICMP,
                             encode_icmp_error(icmp_type, code, quoted))

    def tcp_reset(self, frame: bytes, ip: Ipv4) -> list[bytes]:
        """RST for a segment to a closed port (RFC 793 3.4); never in answer to a RST."""
        reset = reset_for(self.ip, frame, ip)
        if reset is None:
            return []
        self.counters["tcp-resets"] += 1
        return [self.ip_frame(frame[6:12], ip.src, PROTO_TCP, reset)]


def _tcp_dport(frame: bytes, ip: Ipv4) -> int:
    if ip.end - ip.start < 20:
        raise MalformedPacket("TCP header truncated")
    return int.from_bytes(frame[ip.start + 2:ip.start + 4], "big")
