"""The gateway's IPv6 stack: Neighbor Discovery and Router Advertisements for the guest
network's prefix (RFC 4861, 4862, 8106), and ICMPv6 echo (RFC 4443).

Rule 1: Neighbor Discovery messages are accepted only with hop limit 255, a valid checksum and
        well-formed options (RFC 4861 6.1, 7.1); anything else is counted and dropped.
Rule 2: a Neighbor Solicitation for one of the gateway's addresses (its address in the prefix,
        its link-local fe80:: from its MAC) is answered with a Neighbor Advertisement (router,
        solicited, override) to the solicitor; a duplicate address detection probe for one of
        them (source ::) is answered to all-nodes, defending the address (RFC 4862 5.4.3).  A
        probe for any other address is the guests' business: no answer.
Rule 3: a Router Solicitation is answered with a Router Advertisement, and advertisements go to
        all-nodes unsolicited: the first three at most 16 s apart, then every 200-600 s with
        jitter (RFC 4861 6.2.4, 6.2.1 defaults).  An advertisement carries the source link-layer
        address, the MTU, the prefix (on-link; autonomous when it is a /64), RDNSS and DNSSL
        (RFC 8106), the M flag when addresses are leased by DHCPv6, the O flag for DNS by
        DHCPv6, and router lifetime 1800 s, or 0 when nothing is routed out (Rule 12).
Rule 4: an echo request to the gateway's addresses is answered (RFC 4443 4.2).
Rule 5: the guests the gateway hears (the source link-layer option of their NS and RS, the
        target link-layer option of their NA) are remembered in a bounded cache, for DNS
        names, and told to the router (``on_neighbour``), which resolves guests' addresses by
        the solicitations the gateway makes (``solicitation``, RFC 4861 7.2).
Rule 6: UDP to the gateway's addresses, or to All_DHCP_Relay_Agents_and_Servers, goes to the
        service registered for its port (DNS 53, DHCPv6 547).
Rule 7: a packet sent to the gateway's MAC for another address is the router's
        (``nat.router6``, which also takes TCP and UDP to the gateway's address that no
        service here takes, for the host's ``::1``); on its own (no router) the gateway
        answers destination unreachable, no route (RFC 4443 3.1), so a guest's connection
        fails at once instead of timing out.  A datagram the gateway reassembled (Rule 8) for
        a port no service takes goes to ``egress`` (the host uplink) the same way.  A source
        outside the prefix is dropped and counted (BCP 38), as the IPv4 router does.
Rule 8: fragments to the gateway's addresses are reassembled (``nat.reassembly`` Rule R7:
        overlaps drop the whole datagram, RFC 5722); an atomic fragment (offset 0, no more)
        is a whole packet (RFC 6946); a datagram still incomplete at its timeout gets time
        exceeded, code 1, when its first fragment came (RFC 8200 4.5).
Rule 9: TCP to the gateway's addresses goes to the TCP service registered for its port (DNS
        53 over ``nat.tcp_server``, RFC 7766), as the IPv4 gateway's Rule 4.  A port no
        service takes goes to ``egress`` when sent to the gateway's address in the prefix (the
        host's ``::1``, as UDP in Rule 7); otherwise a segment gets RST (RFC 9293 3.10.7.1),
        unless its checksum fails: then it is dropped and counted (RFC 9293 3.1, MUST-3).
Rule 10: an upper-layer protocol the gateway does not speak, sent to one of its addresses,
        gets parameter problem, code 1, pointing at the next-header byte that names it
        (RFC 8200 4, RFC 4443 3.4).  Multicast listener reports and queries (MLD) are accepted
        and need no answer: the switch floods 33:33:* to every port.
Rule 11: the ICMPv6 errors the gateway and the router send guests share one budget
        (``nat.ratelimit``, RFC 4443 2.4 (f)), and are made by ``nat.translate6.icmp6_error``.
Rule 12: advertisements carry router lifetime 0 when no IPv6 leaves the guest network
        (isolated, no uplink, or a raw uplink without an IPv6 address): guests then have no
        IPv6 default route and pick IPv4 for dual-stack names at once (RFC 4861 6.2.3).

Sans-I/O: ``handle(frame, now)`` takes a plain Ethernet frame and returns frames to send;
``tick(now)`` returns the unsolicited advertisements that are due, and the time-exceeded
errors for datagrams that never completed.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable
from typing import Final, Protocol

from nat.ratelimit import ErrorBudget
from nat.reassembly import Reassembly
from nat.translate6 import icmp6_error
from wire.errors import MalformedPacket
from wire.ipv6 import (
    ALL_NODES,
    ALL_SERVERS,
    DEST_UNREACHABLE,
    ECHO_REPLY,
    ECHO_REQUEST,
    MIN_MTU,
    NEIGHBOR_ADVERT,
    NEIGHBOR_SOLICIT,
    NO_NEXT,
    PARAMETER_PROBLEM,
    PROTO_ICMPV6,
    ROUTER_ADVERT,
    ROUTER_SOLICIT,
    TIME_EXCEEDED,
    UNSPECIFIED,
    Ipv6,
    decode_ipv6,
    decode_udp6,
    encode_ipv6,
    encode_udp6,
    icmpv6_checksum_ok,
    icmpv6_frame,
    in_prefix,
    is_link_local,
    link_local,
    multicast_mac,
    nd_option,
    nd_options,
    search_domain,
    solicited_node,
)
from wire.packets import ETH_P_IPV6, PROTO_TCP, PROTO_UDP, encode_ethernet
from wire.tcp import checksum_ok, reset_for
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN

# NDP option types (RFC 4861 4.6, RFC 8106 5).
SOURCE_LL, TARGET_LL, PREFIX_INFO, MTU_OPTION, RDNSS, DNSSL = 1, 2, 3, 5, 25, 31
ROUTER_LIFETIME: Final = 1800
VALID_LIFETIME: Final = 86400
PREFERRED_LIFETIME: Final = 14400
DNS_LIFETIME: Final = 1800
MIN_INTERVAL, MAX_INTERVAL = 200.0, 600.0
INITIAL_INTERVAL, INITIAL_COUNT = 16.0, 3
NEIGHBOURS: Final = 4096
#: The well-known ports of the gateway's services, named in explanations.
SERVICE_NAMES: Final = {53: "DNS", 547: "DHCPv6"}


class TcpService(Protocol):
    def handle_segment(self, gateway: Gateway6, frame: bytes, ip: Ipv6,
                       now: float) -> list[bytes]:
        """Frames answering one TCP segment addressed to the gateway (Rule 9)."""
        ...


class Gateway6:
    def __init__(self, mac: bytes, address: bytes, prefix: bytes, prefix_len: int,
                 mtu: int = 1500, managed: bool = False, isolated: bool = False,
                 domain: str = "", rng: random.Random | None = None) -> None:
        self.mac = mac
        self.address = address
        self.link_local = link_local(mac)
        self.addresses = frozenset({address, self.link_local})
        self.prefix, self.prefix_len = prefix, prefix_len
        self.mtu = mtu
        self.managed = managed
        self.isolated = isolated
        #: Whether IPv6 leaves the guest network (Rule 12): the daemon says so.
        self.default_route = True
        self.domain = domain
        self.counters: Counter[str] = Counter()
        #: UDP services by port, as the IPv4 gateway's (DNS 53): (client MAC, client address,
        #: client port, destination, payload, now) -> frames
        self.udp: dict[int, Callable[[bytes, bytes, int, bytes, bytes, float], list[bytes]]] = {}
        #: TCP services by port (Rule 9), as the IPv4 gateway's (DNS 53: ``nat.tcp_server``)
        self.tcp: dict[int, TcpService] = {}
        #: Where a reassembled datagram for the host's ``::1`` goes (Rule 7): (frame,
        #: header, now) -> whether it was taken.
        self.egress: Callable[[bytes, Ipv6, float], bool] | None = None
        #: Told of each guest address heard with its MAC (Rule 5): the router resolves its
        #: next hops on the guest link by it.
        self.on_neighbour: Callable[[bytes, bytes, float], None] | None = None
        #: guest address -> (MAC, when heard), bounded (Rule 5)
        self.neighbours: dict[bytes, tuple[bytes, float]] = {}
        self._rng = rng or random.Random()
        #: Fragments to the gateway's addresses, until their datagrams are whole (Rule 8).
        self.reassembly = Reassembly()
        #: The ICMPv6 errors the gateway and the router send guests, limited (RFC 4443 2.4 (f)).
        self.errors = ErrorBudget()
        self._sent_unsolicited = 0
        self._next_advert = 0.0

    # -- receiving ---------------------------------------------------------------------------

    def handle(self, frame: bytes, now: float) -> list[bytes]:
        """Frames answering one IPv6 frame (Rule 1: bad input is counted, never raised)."""
        try:
            ip = decode_ipv6(frame)
            if self._not_routed(frame, ip):
                # BCP 38: only the guest network's own sources
                if not in_prefix(ip.src, self.prefix, self.prefix_len):
                    self.counters["drop-source-not-in-prefix"] += 1
                    return []
                return self._unreachable(frame, ip, now)
            if ip.fragment is not None and (ip.fragment[1] or ip.fragment[2]):
                if ip.dst not in self.addresses and ip.dst != ALL_SERVERS:
                    return []
                whole = self.reassembly.add6(frame, now, ip)  # Rule 8
                return self.handle(whole, now) if whole is not None else []
            if ip.proto == PROTO_UDP and (ip.dst in self.addresses or ip.dst == ALL_SERVERS):
                return self._udp(frame, ip, now)
            if ip.proto == PROTO_TCP and ip.dst in self.addresses:
                return self._tcp(frame, ip, now)
            if ip.proto != PROTO_ICMPV6:
                if ip.dst in self.addresses and ip.proto not in (PROTO_UDP, NO_NEXT):
                    return self._unrecognized(frame, ip, now)
                return []
            if ip.end - ip.start < 8 or not icmpv6_checksum_ok(frame, ip):
                self.counters["icmpv6-bad-checksum-or-short"] += 1
                return []
            kind = frame[ip.start]
            if kind in (NEIGHBOR_SOLICIT, ROUTER_SOLICIT, NEIGHBOR_ADVERT):
                if ip.hop_limit != 255:
                    self.counters["ndp-hop-limit-not-255"] += 1
                    return []
                if kind == NEIGHBOR_ADVERT:
                    return self._advertised(frame[ip.start + 8:ip.end], now)
                if kind == NEIGHBOR_SOLICIT:
                    return self._solicited(frame, ip.src, frame[ip.start + 8:ip.end], now)
                return self._router_solicited(frame, ip.src, frame[ip.start + 8:ip.end], now)
            if kind == ECHO_REQUEST and ip.dst in self.addresses:
                self.counters["echo6-replies"] += 1
                return [self._icmp(frame[6:12], ip.src, ECHO_REPLY, frame[ip.start + 4:ip.end],
                                   source=ip.dst)]
            return []
        except MalformedPacket as exc:
            self.counters[f"malformed6: {exc}"] += 1
            return []

    def _not_routed(self, frame: bytes, ip: Ipv6) -> bool:
        """Rule 7: unicast to the gateway's MAC for an address that is not the gateway's."""
        return (frame[:6] == self.mac and ip.dst[0] != 0xFF and ip.dst not in self.addresses
                and ip.src != UNSPECIFIED and ip.src[0] != 0xFF)

    def _unrecognized(self, frame: bytes, ip: Ipv6, now: float) -> list[bytes]:
        """Rule 10: a next header the gateway does not know, for one of its addresses:
        parameter problem, code 1, pointing at the byte that names it (RFC 8200 4)."""
        error = self.error(frame, ip, PARAMETER_PROBLEM, 1, now, ip.names_at - 14)
        return [] if error is None else [error]

    def _unreachable(self, frame: bytes, ip: Ipv6, now: float) -> list[bytes]:
        """Rule 7: destination unreachable, no route (RFC 4443 3.1, code 0)."""
        error = self.error(frame, ip, DEST_UNREACHABLE, 0, now)
        return [] if error is None else [error]

    def error(self, frame: bytes, ip: Ipv6, icmp_type: int, code: int, now: float,
              word: int = 0) -> bytes | None:
        """An ICMPv6 error from the gateway's address to the sender of ``frame`` (a plain
        Ethernet frame), made as the router makes them (``nat.translate6.icmp6_error``: what
        it quotes, when none may be sent); ``word`` is the MTU of packet too big or the
        pointer of parameter problem.  None past the error budget (Rule 11)."""
        error = self.error_packet(NO_OFFLOAD + frame, icmp_type, code, now, word)
        return None if error is None else error[VNET_HDR_LEN:]

    def error_packet(self, packet: bytes, icmp_type: int, code: int, now: float,
                     word: int = 0) -> bytes | None:
        """``error`` for a packet (virtio-net header + frame): the router's refusals."""
        if not self.errors.take(now):
            self.counters["icmp6-errors-rate-limited"] += 1
            return None
        try:
            error = icmp6_error(packet, icmp_type, code, self.address, word, self.mac)
        except MalformedPacket:
            error = None
        if error is not None:
            self.counters[f"icmp6-errors-sent-type-{icmp_type}"] += 1
        return error

    def solicitation(self, target: bytes) -> bytes:
        """A Neighbor Solicitation for a guest's ``target`` address, to its solicited-node
        group (RFC 4861 7.2.2), from the gateway's address in the prefix (or its link-local
        one for a link-local target), with the gateway's link-layer address."""
        group = solicited_node(target)
        source = self.link_local if is_link_local(target) else self.address
        self.counters["neighbor-solicits-sent"] += 1
        return self._icmp(multicast_mac(group), group, NEIGHBOR_SOLICIT,
                          bytes(4) + target + nd_option(SOURCE_LL, self.mac), source=source,
                          hop_limit=255)

    def _udp(self, frame: bytes, ip: Ipv6, now: float) -> list[bytes]:
        """UDP to the gateway: the service registered for its port (DNS 53), as the IPv4
        gateway's Rule 3; no service: nothing (port unreachable comes later)."""
        sport, dport, payload = decode_udp6(frame, ip)
        service = self.udp.get(dport)
        if service is None:
            if ip.dst == self.address and self.egress is not None \
                    and self.egress(frame, ip, now):
                return []  # to the host's ::1, which the gateway's address stands for
            self.counters["udp6-no-service"] += 1
            return []
        return service(frame[6:12], ip.src, sport, ip.dst, payload, now)

    def _tcp(self, frame: bytes, ip: Ipv6, now: float) -> list[bytes]:
        """Rule 9: the service for the destination port; no service: the host's ``::1``
        (the gateway's address in the prefix) or RST."""
        service = self.tcp.get(_tcp_dport(frame, ip))
        if service is not None:
            return service.handle_segment(self, frame, ip, now)
        if ip.dst == self.address and self.egress is not None and self.egress(frame, ip, now):
            return []  # to the host's ::1, which the gateway's address stands for
        if not checksum_ok(frame, ip):
            self.counters["tcp-bad-checksum"] += 1
            return []
        return self.tcp_reset(frame, ip)

    def tcp_reset(self, frame: bytes, ip: Ipv6) -> list[bytes]:
        """RST for a segment to a port nobody serves (Rule 9), from the address it was sent
        to; never in answer to a RST."""
        reset = reset_for(ip.dst, frame, ip)
        if reset is None:
            return []
        self.counters["tcp-resets"] += 1
        return [self.ip_frame(frame[6:12], ip.src, PROTO_TCP, reset, source=ip.dst)]

    def ip_frame(self, dst_mac: bytes, dst_ip: bytes, proto: int, payload: bytes,
                 source: bytes | None = None) -> bytes:
        """An IPv6 packet of ``proto`` from the gateway's address (or ``source``) to a guest:
        the header a TCP service's segments go in (``nat.tcp_server`` Rule 5)."""
        return encode_ethernet(dst_mac, self.mac, ETH_P_IPV6,
                               encode_ipv6(source or self.address, dst_ip, proto, payload))

    def udp_frame(self, dst_mac: bytes, dst: bytes, sport: int, dport: int, payload: bytes,
                  source: bytes | None = None) -> bytes:
        """A UDP datagram from the gateway's address (or ``source``) to a guest."""
        src = source or self.address
        return encode_ethernet(dst_mac, self.mac, ETH_P_IPV6, encode_ipv6(
            src, dst, PROTO_UDP, encode_udp6(src, dst, sport, dport, payload)))

    def _solicited(self, frame: bytes, src: bytes, body: bytes, now: float) -> list[bytes]:
        """Rule 2."""
        if len(body) < 16:
            raise MalformedPacket("neighbor solicitation truncated")
        target, options = body[:16], nd_options(body[16:])
        if target[0] == 0xFF:
            raise MalformedPacket("neighbor solicitation for a multicast address")
        if src != UNSPECIFIED:
            self._learn(src, options, now)
        if target not in self.addresses:
            return []
        if src == UNSPECIFIED:  # a DAD probe for our own address: defend it
            self.counters["dad-defended"] += 1
            return [self._advert(target, ALL_NODES, multicast_mac(ALL_NODES), solicited=False)]
        self.counters["neighbor-adverts"] += 1
        return [self._advert(target, src, frame[6:12], solicited=True)]

    def _router_solicited(self, frame: bytes, src: bytes, body: bytes,
                          now: float) -> list[bytes]:
        """Rule 3: answered at once, to the solicitor (or all-nodes from ::)."""
        options = nd_options(body)  # after the 4 reserved bytes: options only
        if src != UNSPECIFIED:
            self._learn(src, options, now)
            self.counters["router-adverts-solicited"] += 1
            return [self.advertisement(src, frame[6:12])]
        self.counters["router-adverts-solicited"] += 1
        return [self.advertisement(ALL_NODES, multicast_mac(ALL_NODES))]

    def _advertised(self, body: bytes, now: float) -> list[bytes]:
        """Rule 5: a guest's Neighbor Advertisement (the answer to ``solicitation``): its
        target is at its target link-layer address."""
        if len(body) < 16:
            raise MalformedPacket("neighbor advertisement truncated")
        if body[0] == 0xFF:
            raise MalformedPacket("neighbor advertisement for a multicast address")
        self._learn(body[:16], nd_options(body[16:]), now, TARGET_LL)
        return []

    def _learn(self, address: bytes, options: list[tuple[int, bytes]], now: float,
               option: int = SOURCE_LL) -> None:
        """Rule 5."""
        mac = next((body[:6] for kind, body in options if kind == option and len(body) >= 6),
                   None)
        if mac is None or address[0] == 0xFF or address in self.addresses:
            return
        if len(self.neighbours) >= NEIGHBOURS and address not in self.neighbours:
            self.neighbours.pop(next(iter(self.neighbours)))
        self.neighbours[address] = (mac, now)
        if self.on_neighbour is not None:
            self.on_neighbour(address, mac, now)

    def explain(self, frame: bytes) -> list[tuple[str, str]]:
        """What ``handle`` would do with ``frame``, in words with its rule; changes nothing."""
        try:
            ip = decode_ipv6(frame)
        except MalformedPacket as exc:
            return [(f"dropped: malformed IPv6 ({exc})", "gateway6 Rule 1")]
        if self._not_routed(frame, ip):
            return [("no router behind the gateway: ICMPv6 no route sent", "gateway6 Rule 7")]
        if ip.proto in (PROTO_UDP, PROTO_TCP) and ip.dst in self.addresses \
                and ip.end - ip.start >= 4 and ip.fragment is None:
            return self._explain_service(frame, ip)
        if ip.proto != PROTO_ICMPV6 or ip.end - ip.start < 8:
            return [(f"IPv6 next header {ip.proto}: not the gateway's", "gateway6 Rule 1")]
        kind = frame[ip.start]
        if kind in (NEIGHBOR_SOLICIT, ROUTER_SOLICIT) and ip.hop_limit != 255:
            return [("dropped: NDP with hop limit other than 255", "gateway6 Rule 1")]
        if kind == NEIGHBOR_SOLICIT and ip.end - ip.start >= 24:
            target = frame[ip.start + 8:ip.start + 24]
            if target not in self.addresses:
                return [("neighbor solicitation for a guest's address: not answered",
                         "gateway6 Rule 2")]
            if ip.src == UNSPECIFIED:
                return [("DAD probe for the gateway's address: defended (NA to all-nodes)",
                         "gateway6 Rule 2")]
            return [("neighbor solicitation answered (router, solicited, override)",
                     "gateway6 Rule 2")]
        if kind == ROUTER_SOLICIT:
            return [("router solicitation answered with a router advertisement",
                     "gateway6 Rule 3")]
        if kind == ECHO_REQUEST and ip.dst in self.addresses:
            return [("echo6 answered", "gateway6 Rule 4")]
        return [(f"ICMPv6 type {kind}: not for the gateway", "gateway6 Rule 1")]

    def _explain_service(self, frame: bytes, ip: Ipv6) -> list[tuple[str, str]]:
        """UDP (Rule 6) and TCP (Rule 9) to one of the gateway's addresses."""
        dport = int.from_bytes(frame[ip.start + 2:ip.start + 4], "big")
        name = SERVICE_NAMES.get(dport, f"port {dport}")
        udp = ip.proto == PROTO_UDP
        kind, rule = ("UDP", "gateway6 Rule 6") if udp else ("TCP", "gateway6 Rule 9")
        if dport in (self.udp if udp else self.tcp):
            return [(f"{kind} taken by the {name} service", rule)]
        if ip.dst == self.address and self.egress is not None:
            return [(f"{kind} to {name}: no gateway service, to the host's ::1 (host uplink)",
                     "gateway6 Rule 7" if udp else rule)]
        if udp:
            return [(f"UDP to {name}: no service, dropped", rule)]
        return [(f"TCP to {name}: no service, RST sent", rule)]

    # -- sending -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[bytes]:
        """Rule 3: the unsolicited advertisement, when one is due; Rule 8: time exceeded for
        the datagrams whose fragments did not all come."""
        late = [self._icmp(first[6:12], first[22:38], TIME_EXCEEDED, bytes(4)
                           + first[14:][:MIN_MTU - 48], source=self.address, code=1)
                for first in self.reassembly.expire(now)]
        if now < self._next_advert:
            return late
        self._sent_unsolicited += 1
        if self._sent_unsolicited <= INITIAL_COUNT:
            delay = self._rng.uniform(1.0, INITIAL_INTERVAL)
        else:
            delay = self._rng.uniform(MIN_INTERVAL, MAX_INTERVAL)
        self._next_advert = now + delay
        self.counters["router-adverts-unsolicited"] += 1
        return [*late, self.advertisement(ALL_NODES, multicast_mac(ALL_NODES))]

    def advertisement(self, dst: bytes, dst_mac: bytes) -> bytes:
        """A Router Advertisement (Rule 3)."""
        flags = (0x80 if self.managed else 0) | 0x40  # M, O
        lifetime = ROUTER_LIFETIME if self.default_route and not self.isolated else 0
        body = struct.pack("!BBHII", 64, flags, lifetime, 0, 0)
        body += nd_option(SOURCE_LL, self.mac)
        body += nd_option(MTU_OPTION, struct.pack("!HI", 0, self.mtu))
        prefix_flags = 0x80 | (0x40 if self.prefix_len == 64 else 0)  # L, A
        body += nd_option(PREFIX_INFO, struct.pack("!BBIII", self.prefix_len, prefix_flags,
                                                   VALID_LIFETIME, PREFERRED_LIFETIME, 0)
                          + self.prefix)
        body += nd_option(RDNSS, struct.pack("!HI", 0, DNS_LIFETIME) + self.address)
        if self.domain:
            search = search_domain(self.domain)
            search += bytes(-(len(search) + 8) % 8)
            body += nd_option(DNSSL, struct.pack("!HI", 0, DNS_LIFETIME) + search)
        return self._icmp(dst_mac, dst, ROUTER_ADVERT, body, source=self.link_local,
                          code=0, hop_limit=255)

    def _advert(self, target: bytes, dst: bytes, dst_mac: bytes, solicited: bool) -> bytes:
        flags = 0x80 | (0x40 if solicited else 0) | 0x20  # router, solicited, override
        body = struct.pack("!B3x", flags) + target + nd_option(TARGET_LL, self.mac)
        return self._icmp(dst_mac, dst, NEIGHBOR_ADVERT, body, source=target, hop_limit=255)

    def _icmp(self, dst_mac: bytes, dst: bytes, icmp_type: int, body: bytes,
              source: bytes, code: int = 0, hop_limit: int = 64) -> bytes:
        return icmpv6_frame(dst_mac, self.mac, source, dst, icmp_type, code, body, hop_limit)


def _tcp_dport(frame: bytes, ip: Ipv6) -> int:
    if ip.end - ip.start < 20:
        raise MalformedPacket("TCP header truncated")
    return int.from_bytes(frame[ip.start + 2:ip.start + 4], "big")
