"""The IPv6 router: between the guest prefix (the switch's router port) and the uplink.

Rule 1: a guest packet sent to the gateway's MAC for a unicast address that is not the
        gateway's is routed; what is for the gateway itself is its stack's (``nat.gateway6``).
        A source outside the guest prefix, or one of the gateway's own addresses, is dropped
        and counted (BCP 38), as the IPv4 router does (``nat.router`` Rule 1); so is a
        link-local, loopback or unspecified destination: such an address is never routed off
        its link (RFC 4291 2.5.2, 2.5.3, 2.5.6).  TCP and UDP to the gateway's address that
        no gateway service takes are the router's too: for the host's ``::1`` (Rule 5).
Rule 2: modes, as the IPv4 router's: ``nat`` translates (NAT66, ``nat.translate6``) to the
        uplink's address; ``route`` and ``open`` forward unchanged (the far side routes the
        prefix to the uplink); ``isolated`` forwards nothing: the guest gets destination
        unreachable, administratively prohibited (RFC 4443 3.1, code 1).  With no uplink, or
        no uplink address yet, the answer is no route (code 0).  Errors to guests come from
        the gateway (``Gateway6.error_packet``: its budget, RFC 4443 2.4 (f)); errors out of
        the uplink have a budget of their own (``errors_out``).
Rule 3: the hop limit is decremented; a packet that would leave with hop limit 0 gets time
        exceeded (RFC 4443 3.3, RFC 8200 3).  A router never fragments IPv6 (RFC 8200 5): a
        packet larger than the link it leaves by gets packet too big with that link's MTU
        (RFC 4443 3.2); GSO super-frames are exempt, they leave as segments of the right
        size.
Rule 4: next hops on the guest link are found by Neighbor Discovery (RFC 4861 7.2): a bounded
        cache (``nat.router.Neighbours``) fed by what the gateway hears (``Gateway6``
        Rule 5) and by each routed packet's source, a few packets held per address while a
        solicitation is out, sent on when the address is heard, dropped and counted when
        nobody answers.
Rule 5: with a host uplink (``nat.egress.v6``) routed packets go to the host's IPv6 sockets;
        fragments are reassembled first (RFC 8200 4.5, ``nat.reassembly`` Rule R7), since a
        socket takes whole datagrams, and a datagram still incomplete at its timeout gets
        time exceeded, code 1, when its first fragment came.  What comes back is addressed by
        Rule 4.
Rule 6: with a raw uplink, the uplink's own station (``nat.uplink6``) answers for its
        addresses and resolves the next hop; everything else arriving for the uplink's
        address goes through the conntrack (``nat``), or, for the guest prefix, is routed
        to the guests (``route``/``open``), hop limit decremented.  A link-local, loopback or
        unspecified source is not routed (Rule 1; Linux's ``ip6_forward`` drops them too),
        nor is what is for another address of the uplink's or for the gateway's own addresses
        (each counted).  A translated packet larger than the guest link gets packet too big
        (Rule 3).
Rule 7: a router never fragments (Rule 3), but the host uplink is a source: a datagram it
        made for a guest from a host socket's data, larger than the guest link, leaves in
        fragments (RFC 8200 4.5), as a host's own stack sends it.

Sans-I/O: packets (virtio-net header + frame) in, ``Out(switch, uplink)`` packets out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from nat.conntrack import Conntrack
from nat.gateway6 import Gateway6
from nat.ratelimit import ErrorBudget
from nat.reassembly import Reassembly
from nat.router import Neighbours, Out
from nat.translate6 import LOOPBACK, icmp6_error, nat_packet6
from nat.verdicts import Drop
from wire.errors import MalformedPacket
from wire.gso import fragment_ipv6, to_plain_frames
from wire.ipv6 import (
    DEST_UNREACHABLE,
    PACKET_TOO_BIG,
    TIME_EXCEEDED,
    UNSPECIFIED,
    Ipv6,
    decode_ipv6,
    in_prefix,
    is_link_local,
)
from wire.packets import ETH_P_IPV6, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from wire.vnet import FLAG_NEEDS_CSUM, NO_OFFLOAD, VNET_HDR_LEN, is_gso

ETH: Final = VNET_HDR_LEN
L3: Final = VNET_HDR_LEN + 14
_HOP_LIMIT: Final = L3 + 7


class Egress6(Protocol):
    """Where routed IPv6 goes with a host uplink (``nat.egress.v6.HostEgress6``)."""

    def from_guest(self, packet: bytes, ip: Ipv6, now: float) -> bool: ...


class Station6(Protocol):
    """The raw uplink's own IPv6 station (``nat.uplink6.UplinkStation6``, Rule 6)."""

    mac: bytes

    @property
    def address(self) -> bytes | None: ...

    @property
    def mtu(self) -> int: ...

    def handle(self, frame: bytes, now: float) -> tuple[list[bytes], bool]: ...

    def resolve(self, packets: list[bytes | bytearray],
                now: float) -> list[bytes | bytearray]: ...

    def stats(self) -> dict[str, Any]: ...


class Router6:
    def __init__(self, gateway: Gateway6, mode: str, egress: Egress6 | None = None,
                 fragment_timeout: float = 30.0) -> None:
        self.gateway = gateway
        self.mode = mode
        self.egress = egress
        #: The raw uplink's station and, in nat mode once it has an address, the NAT66
        #: conntrack (Rule 6).
        self.station: Station6 | None = None
        self.conntrack: Conntrack | None = None
        self.guests = Neighbours()
        self.reassembly = Reassembly(fragment_timeout)
        self.counters: Counter[str] = Counter()
        self._ident = 0  # fragment identification of the datagrams cut here (Rule 7)
        #: The errors sent out of the uplink, limited (``nat.ratelimit``); those to guests
        #: come from the gateway's own budget.
        self.errors_out = ErrorBudget()
        #: Where packets released by a guest's Neighbor Advertisement go (the router port's
        #: ``dispatch``).
        self.released: Callable[[Out], None] | None = None
        gateway.on_neighbour = self._heard
        # the guest prefix's whole bytes: a slice compare per packet, where the prefix length
        # is a multiple of 8 (a /64 always), instead of two 128-bit conversions
        self._whole = gateway.prefix[:gateway.prefix_len // 8] \
            if gateway.prefix_len % 8 == 0 else None

    def local(self, address: bytes) -> bool:
        """Whether ``address`` is in the guest prefix."""
        whole = self._whole
        if whole is not None:
            return address[:len(whole)] == whole
        gateway = self.gateway
        return in_prefix(address, gateway.prefix, gateway.prefix_len)

    def _heard(self, address: bytes, mac: bytes, now: float) -> None:
        """Rule 4: the gateway heard a guest; packets held for it are released through
        ``released`` (the router port sets it)."""
        held = self.guests.learn(address, mac, now)
        if held and self.released is not None:
            self.released(self.to_guests(held, now, fragment=True))

    def routes(self, packet: bytes) -> Ipv6 | None:
        """The IPv6 header of ``packet`` (in packet offsets) if it is the router's to route
        (Rule 1), else None: the gateway stack takes it."""
        gateway = self.gateway
        if packet[ETH:ETH + 6] != gateway.mac:
            return None
        try:
            ip = decode_ipv6(packet, L3)
        except MalformedPacket:
            return None  # the gateway stack counts it
        if ip.dst[0] == 0xFF or ip.src[0] == 0xFF or not any(ip.src):
            return None
        if ip.dst in gateway.addresses and not self._for_host(packet, ip):
            return None
        return ip

    def _for_host(self, packet: bytes, ip: Ipv6) -> bool:
        """Rule 1: TCP or UDP (whole) to the gateway's address in the prefix that no gateway
        service takes, with a host uplink: for the host's ``::1``."""
        gateway = self.gateway
        if self.egress is None or ip.dst != gateway.address or ip.fragment is not None \
                or ip.end - ip.start < 4:
            return False
        services: Any = {PROTO_TCP: gateway.tcp, PROTO_UDP: gateway.udp}.get(ip.proto)
        port = int.from_bytes(packet[ip.start + 2:ip.start + 4], "big")
        return services is not None and port not in services

    # -- guest -> outside ---------------------------------------------------------------

    def from_guest(self, packet: bytes, ip: Ipv6, now: float) -> Out:
        """A guest's packet to route (Rule 1); ``ip`` is its header, from ``routes``."""
        out = Out([], [])
        gateway = self.gateway
        if not self.local(ip.src):
            self.counters["drop-source-not-in-prefix"] += 1
            return out
        if ip.src in gateway.addresses:
            self.counters["drop-source-is-the-gateway"] += 1
            return out
        held = self.guests.learn(ip.src, packet[ETH + 6:ETH + 12], now)
        if held:  # Rule 4: waiting for this guest, who spoke first
            out.switch.extend(self.to_guests(held, now, fragment=True).switch)
        if ip.dst == gateway.address:  # only _for_host sends these here (Rule 5)
            return self._to_host(packet, ip, now, out)
        if self.local(ip.dst):
            return out  # on-link: the switch delivers it
        if not_routed(ip.dst):
            self.counters["drop-destination-not-routable"] += 1
            return out
        if self.mode == "isolated":
            return self._refuse(packet, ip, out, now, DEST_UNREACHABLE, 1, "isolated")
        if ip.hop_limit <= 1:
            return self._refuse(packet, ip, out, now, TIME_EXCEEDED, 0, "hop-limit-exceeded")
        if self.egress is not None:
            return self._to_host(packet, ip, now, out)
        if self.station is not None:
            return self._to_uplink(packet, ip, now, out)
        return self._refuse(packet, ip, out, now, DEST_UNREACHABLE, 0, "no-route")

    def _to_uplink(self, packet: bytes, ip: Ipv6, now: float, out: Out) -> Out:
        """Rules 2, 3 and 6: translated or routed out of the raw uplink."""
        station = self.station
        assert station is not None
        if self.mode == "nat" and self.conntrack is None:  # no address yet
            return self._refuse(packet, ip, out, now, DEST_UNREACHABLE, 0, "no-uplink-address")
        if self.too_big(packet, ip, station.mtu):
            return self._refuse(packet, ip, out, now, PACKET_TOO_BIG, 0, "too-big", station.mtu)
        if self.conntrack is None:  # route, open
            out.uplink.extend(station.resolve([decrement_hop_limit(packet)], now))
            return out
        try:
            result = nat_packet6(packet, self.conntrack, False, now, ip)
        except MalformedPacket:
            self.counters["malformed"] += 1
            return out
        if isinstance(result, Drop):
            self.counters[f"drop-{result.reason}"] += 1
            if result.icmp is not None:
                return self._refuse(packet, ip, out, now, *result.icmp, result.reason)
            return out
        out.uplink.extend(station.resolve(list(result), now))
        return out

    # -- outside -> guests (raw uplink, Rule 6) ---------------------------------------------

    def from_uplink(self, packet: bytes, now: float) -> Out:
        """An IPv6 frame from the raw uplink: the station's, translated (nat), routed to the
        guest prefix (route, open), or ignored."""
        out = Out([], [])
        station = self.station
        if station is None:
            return out
        if packet[ETH] & 1 or len(packet) < L3 + 40 or packet[L3 + 6] != PROTO_TCP:
            # unicast TCP (the bulk of it) is never the station's: no copy, no decoding
            frame = packet[ETH:]
            if packet[0] & FLAG_NEEDS_CSUM and not is_gso(packet) and _maybe_station_s(packet):
                try:  # the station verifies checksums (a veth peer leaves them partial)
                    frame = to_plain_frames(packet)[0]
                except MalformedPacket:
                    self.counters["malformed-from-uplink"] += 1
                    return out
            replies, taken = station.handle(frame, now)
            out.uplink.extend(NO_OFFLOAD + reply for reply in replies)
            if taken:
                return out
        if packet[ETH:ETH + 6] != station.mac:
            return out
        try:
            ip = decode_ipv6(packet, L3)
        except MalformedPacket:
            self.counters["malformed-from-uplink"] += 1
            return out
        if not_routed(ip.src):
            self.counters["drop-source-not-routable"] += 1
            return out
        gateway = self.gateway
        if self.conntrack is not None:
            if ip.dst != station.address:
                self.counters["drop-not-for-uplink-address"] += 1
                return out
            try:
                result = nat_packet6(packet, self.conntrack, True, now, ip)
            except MalformedPacket:
                self.counters["malformed-from-uplink"] += 1
                return out
            if isinstance(result, Drop):
                self.counters[f"drop-{result.reason}"] += 1
                if result.icmp is not None:
                    self._error_out(packet, out, *result.icmp, now)
                return out
            packets: list[bytes | bytearray] = list(result)
        elif self.mode in ("route", "open") and self.local(ip.dst):
            if ip.dst in gateway.addresses:
                self.counters["drop-to-the-gateway-from-outside"] += 1
                return out
            if ip.hop_limit <= 1:
                self.counters["drop-hop-limit-exceeded"] += 1
                self._error_out(packet, out, TIME_EXCEEDED, 0, now)
                return out
            packets = [decrement_hop_limit(packet)]
        else:
            self.counters["drop-not-for-guest-prefix"] += 1
            return out
        for one in packets:  # a held later fragment is released with the first: each sized
            if len(one) - L3 > gateway.mtu and not is_gso(one):
                self.counters["drop-too-big-for-guests"] += 1
                self._error_out(packet, out, PACKET_TOO_BIG, 0, now, gateway.mtu)
                continue
            out.switch.extend(self.to_guests([one], now).switch)
        return out

    def _error_out(self, packet: bytes, out: Out, icmp_type: int, code: int, now: float,
                   word: int = 0) -> None:
        """An ICMPv6 error from the uplink's address to a sender outside."""
        station = self.station
        assert station is not None
        if station.address is None:
            return
        if not self.errors_out.take(now):  # RFC 4443 2.4 (f)
            self.counters["icmp6-errors-rate-limited"] += 1
            return
        try:
            error = icmp6_error(packet, icmp_type, code, station.address, word, station.mac)
        except MalformedPacket:  # an offloaded packet whose headers do not hold
            self.counters["malformed-from-uplink"] += 1
            return
        if error is not None:
            out.uplink.extend(station.resolve([error], now))

    def _to_host(self, packet: bytes, ip: Ipv6, now: float, out: Out) -> Out:
        """Rule 5."""
        assert self.egress is not None
        if ip.fragment is not None and (ip.fragment[1] or ip.fragment[2]):
            if is_gso(packet):
                self.counters["malformed"] += 1
                return out
            frame = packet[ETH:ip.end]
            try:
                whole = self.reassembly.add6(frame, now, decode_ipv6(frame))
            except MalformedPacket:
                self.counters["malformed"] += 1
                return out
            if whole is None:
                return out
            packet = NO_OFFLOAD + whole
            try:
                ip = decode_ipv6(packet, L3)
            except MalformedPacket:
                self.counters["malformed"] += 1
                return out
        if not self.egress.from_guest(packet, ip, now):
            return self._refuse(packet, ip, out, now, DEST_UNREACHABLE, 0, "no-route")
        return out

    def explain(self, packet: bytes, ip: Ipv6) -> list[tuple[str, str]]:
        """What ``from_guest`` would do with ``packet``, in words with its rule; changes
        nothing."""
        if not self.local(ip.src):
            return [("dropped: the source is not in the guest prefix (BCP 38)",
                     "router6 Rule 1")]
        if self.local(ip.dst):
            return [("on-link: the switch delivers it, not the router", "router6 Rule 1")]
        if not_routed(ip.dst):
            return [("dropped: a link-local, loopback or unspecified destination is not routed "
                     "(RFC 4291 2.5.6)", "router6 Rule 1")]
        if self.mode == "isolated":
            return [("refused: the network is isolated; ICMPv6 unreachable (administratively "
                     "prohibited) sent", "router6 Rule 2")]
        if ip.hop_limit <= 1:
            return [(f"hop limit {ip.hop_limit}: ICMPv6 time exceeded sent", "router6 Rule 3")]
        if self.egress is not None:
            return [("to the host's IPv6 sockets (TCP, UDP, ping)", "router6 Rule 5")]
        station = self.station
        if station is None or self.mode == "nat" and self.conntrack is None:
            return [("no IPv6 route out (no uplink IPv6 address): ICMPv6 unreachable (no "
                     "route) sent", "router6 Rule 2")]
        if self.too_big(packet, ip, station.mtu):
            return [(f"{ip.end - L3} bytes > uplink MTU {station.mtu}: ICMPv6 packet too big "
                     "sent", "router6 Rule 3")]
        if self.conntrack is None:
            return [(f"routed unchanged (mode {self.mode}), hop limit - 1", "router6 Rule 2")]
        return [("translated (NAT66) to the uplink's IPv6 address, hop limit - 1",
                 "router6 Rule 6")]

    def _refuse(self, packet: bytes, ip: Ipv6, out: Out, now: float, icmp_type: int,
                code: int, reason: str, word: int = 0) -> Out:
        self.counters[f"drop-{reason}"] += 1
        error = self.gateway.error_packet(packet, icmp_type, code, now, word)
        if error is not None:
            out.switch.append(error)
        return out

    def too_big(self, packet: bytes | bytearray, ip: Ipv6, mtu: int) -> bool:
        """Rule 3: over ``mtu`` and not a GSO super-frame."""
        return ip.end - L3 > mtu and not is_gso(packet)

    # -- outside -> guests ------------------------------------------------------------------

    def to_guests(self, packets: Sequence[bytes | bytearray], now: float,
                  fragment: bool = False) -> Out:
        """IPv6 packets for guests, addressed to their MACs from the gateway's (Rule 4);
        ``fragment``: they may be the host uplink's, larger than the guest link (Rule 7)."""
        out = Out([], [])
        gateway = self.gateway
        for packet in packets:
            dst = bytes(packet[L3 + 24:L3 + 40])
            mac = self.guests.lookup(dst, now)
            if mac is None:
                heard = gateway.neighbours.get(dst)
                if heard is not None:
                    mac = heard[0]
                    self.guests.learn(dst, mac, now)
            if mac is None:
                if not fragment and len(packet) - L3 > gateway.mtu and not is_gso(packet):
                    self.counters["drop-too-big-for-guests"] += 1  # sized by the callers
                    continue
                if self.guests.hold(dst, packet, now):
                    out.switch.append(NO_OFFLOAD + gateway.solicitation(dst))
                continue
            frame = packet if type(packet) is bytearray else bytearray(packet)
            frame[ETH:ETH + 12] = mac + gateway.mac
            frame[ETH + 12:ETH + 14] = ETH_P_IPV6.to_bytes(2, "big")
            if len(frame) - L3 > gateway.mtu and not is_gso(frame):
                if fragment:
                    out.switch.extend(self._fragments(frame))
                else:
                    self.counters["drop-too-big-for-guests"] += 1
                continue
            out.switch.append(bytes(frame))
        return out

    def _fragments(self, packet: bytearray) -> list[bytes]:
        """Rule 7: a datagram the host uplink made (as its source) larger than the guest
        link, in fragments (RFC 8200 4.5); a partial checksum is finished first."""
        self._ident = (self._ident + 1) & 0xFFFFFFFF
        try:
            frame = (to_plain_frames(bytes(packet))[0] if packet[0] & FLAG_NEEDS_CSUM
                     else bytes(packet[ETH:]))
            pieces = fragment_ipv6(frame, 14, self.gateway.mtu, self._ident)
        except MalformedPacket:
            self.counters["malformed"] += 1
            return []
        self.counters["fragmented-for-guests"] += 1
        return [NO_OFFLOAD + piece for piece in pieces]

    # -- timers, listing -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``show router``: IPv6 drops by reason and the guest-side neighbour cache."""
        stats: dict[str, Any] = {f"ipv6-{k}": v for k, v in self.counters.items()} | {
            "ndp_guests": len(self.guests.cache), "ndp_held_dropped": self.guests.dropped}
        if self.station is not None:
            stats |= {"uplink6": self.station.stats(),
                      "conntrack6": len(self.conntrack) if self.conntrack is not None else 0}
        return stats

    def expire(self, now: float) -> Out:
        """Neighbours, held packets and NAT66 flows past their time; time exceeded (code 1)
        for the datagrams whose fragments did not all come (Rule 5)."""
        self.guests.expire(now)
        if self.conntrack is not None:
            self.conntrack.expire(now)
        out = Out([], [])
        for first in self.reassembly.expire(now):
            error = self.gateway.error_packet(NO_OFFLOAD + first, TIME_EXCEEDED, 1, now)
            if error is not None:
                out.switch.append(error)
        return out


def decrement_hop_limit(packet: bytes) -> bytearray:
    """Hop limit - 1 (IPv6 has no header checksum), in a new buffer addressed in place."""
    buf = bytearray(packet)
    buf[_HOP_LIMIT] -= 1
    return buf


def not_routed(address: bytes) -> bool:
    """Link-local, loopback or unspecified: never routed off its link (Rules 1, 6)."""
    return is_link_local(address) or address in (UNSPECIFIED, LOOPBACK)


def _maybe_station_s(packet: bytes) -> bool:
    """ICMPv6 (Neighbor Discovery) or UDP to the DHCPv6 client port, without extension
    headers: what the raw uplink's station may take (its checksum is then finished)."""
    proto = packet[L3 + 6] if len(packet) > L3 + 43 else -1
    return proto == PROTO_ICMPV6 or proto == PROTO_UDP and packet[L3 + 42:L3 + 44] == b"\x02\x22"
