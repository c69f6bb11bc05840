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

from nat.gateway6 import Gateway6
from wire.errors import MalformedPacket
from wire.packets import (
    BROADCAST_IP,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
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
    format_ip,
    format_mac,
)
from wire.tcp import reset_for

#: A UDP service: (client MAC, client IP, client port, destination IP, payload, now) -> frames.
UdpService = Callable[[bytes, bytes, int, bytes, bytes, float], list[bytes]]


#: One decision in words and the rule that made it, as ``vswitch trace`` prints them.
Line = tuple[str, str]
#: A service's explanation of one datagram: (client MAC, client IP, payload) -> lines.
Explainer = Callable[[bytes, bytes, bytes], list[Line]]
#: The well-known ports of the gateway's services, named in explanations.
SERVICE_NAMES = {53: "DNS", 67: "DHCP"}



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
        #: (protocol, port) -> a service's own explanation of a datagram (src MAC, src IP,
        #: payload) -> lines, for ``explain``.
        self.explainers: dict[tuple[int, int], Explainer] = {}
        self.counters: Counter[str] = Counter()
        self.aliases = aliases  # Rule 5
        self.mtu = 1500  # the link's (the router port sets it): larger answers go without DF
        self._ident = 0
        #: The IPv6 stack (nat.gateway6) when the network has an IPv6 prefix.
        self.v6: Gateway6 | None = None
        self._dispatch = {ETH_P_ARP: self._handle_arp, ETH_P_IP: self._handle_ipv4,
                          ETH_P_IPV6: self._handle_ipv6}

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

    def _handle_ipv6(self, frame: bytes, now: float) -> list[bytes]:
        return self.v6.handle(frame, now) if self.v6 is not None else []

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

    # -- explaining (vswitch trace, vswitch explain) ----------------------------------------

    def explain(self, frame: bytes) -> list[Line]:
        """What ``handle(frame, ...)`` would do, in words with its rule; changes nothing.
        A service's own explanation (``explainers``) follows the gateway's."""
        try:
            dst, _, ethertype, tags, _ = decode_ethernet(frame)
            if dst != self.mac and not dst[0] & 1:
                return [("not for the gateway (flooded unicast)", "gateway Rule 6")]
            if ethertype == ETH_P_ARP and not tags:
                arp = decode_arp(frame)
                if arp.op != 1 or (arp.target_ip != self.ip and arp.target_ip not in self.aliases):
                    return [("ARP not asking for the gateway: ignored", "gateway Rule 1")]
                if arp.sender_ip == self.ip:
                    return [("ARP claims the gateway's address: conflict, not answered",
                             "gateway Rule 1")]
                return [(f"ARP answered: {format_ip(arp.target_ip)} is at {format_mac(self.mac)}",
                         "gateway Rule 1")]
            if ethertype == ETH_P_IPV6 and not tags and self.v6 is not None:
                return self.v6.explain(frame)
            if ethertype != ETH_P_IP or tags:
                return [("not IPv4 or ARP, or tagged: ignored", "gateway Rule 6")]
            return self._explain_ipv4(frame, decode_ipv4(frame))
        except MalformedPacket as exc:
            return [(f"dropped: malformed ({exc})", "gateway Rule 6")]

    def _explain_ipv4(self, frame: bytes, ip: Ipv4) -> list[Line]:
        if ip.dst not in (self.ip, self.broadcast, BROADCAST_IP, *self.aliases):
            if frame[:6] != self.mac:
                return [(f"to {format_ip(ip.dst)}, not sent to the gateway's MAC: nobody routes it",
                         "gateway Rule 3")]
            return [(f"to {format_ip(ip.dst)}: not routed (this network has no uplink)",
                     "router Rule 2")]
        if ip.fragment & IPV4_FRAGMENTED:
            return [("dropped: a fragment to the gateway", "gateway Rule 2")]
        if ip.proto == PROTO_ICMP:
            icmp = decode_icmp(frame, ip)
            if icmp.type == ICMP_ECHO_REQUEST:
                return [(f"echo answered from {format_ip(ip.dst)}", "gateway Rule 2")]
            return [(f"ICMP type {icmp.type}: ignored", "gateway Rule 2")]
        if ip.dst in self.aliases:
            return [("TCP/UDP to the host address: the router's", "gateway Rule 5")]
        if ip.proto == PROTO_UDP:
            sport, dport, payload = decode_udp(frame, ip)
            service = SERVICE_NAMES.get(dport, f"port {dport}")
            if dport not in self.udp:
                if ip.dst != self.ip:
                    return [(f"UDP broadcast to {service}: no service, ignored",
                             "gateway Rule 3")]
                return [(f"UDP to {service}: no service, ICMP port unreachable sent",
                         "gateway Rule 3")]
            explain = self.explainers.get((PROTO_UDP, dport))
            more = explain(frame[6:12], ip.src, payload) if explain is not None else []
            return [(f"UDP {format_ip(ip.src)}:{sport} taken by the {service} service",
                     "gateway Rule 3"), *more]
        if ip.dst != self.ip:
            return [("broadcast other than UDP: ignored", "gateway Rule 3")]
        if ip.proto == PROTO_TCP:
            dport = _tcp_dport(frame, ip)
            if dport in self.tcp:
                service = SERVICE_NAMES.get(dport, f"port {dport}")
                return [(f"TCP taken by the {service} service", "gateway Rule 4")]
            return [(f"TCP to port {dport}: nobody listens, RST sent", "gateway Rule 4")]
        return [(f"IP protocol {ip.proto}: ICMP protocol unreachable sent", "gateway Rule 3")]

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
