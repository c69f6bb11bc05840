"""The router: between the guest network (the switch's router port) and the uplink.

Rule 1: a guest frame sent to the gateway's MAC with an IPv4 destination outside the subnet is
        routed; one for the gateway itself is the gateway stack's (``nat.gateway``).  A source
        outside the subnet is dropped and counted (ingress filtering, BCP 38 / RFC 2827), as
        libvirt's FORWARD rules reject it.
Rule 2: modes, as libvirt's: ``nat`` translates through the conntrack (SNAT, DNAT forwards);
        ``route`` and ``open`` forward without translation (the far side routes the subnet to
        the uplink address); ``isolated`` forwards nothing (guests get ICMP 3/13).
Rule 3: TTL is decremented; a packet that would leave with TTL 0 gets ICMP time exceeded
        (RFC 1812 5.3.1).  A packet larger than the MTU of the side it leaves by (the uplink's,
        or the guest link's: ``gateway.mtu``) is cut into fragments (RFC 791 2.3, RFC 1812
        4.2.2.7), or with DF set answered with fragmentation needed and that MTU (RFC 1191 4).
        GSO super-frames are exempt: they leave as segments of the right size.
Rule 4: next hops are found by ARP (RFC 826) on each side: a bounded cache with timeouts, and
        a few packets held per address while a request is out (RFC 1122 2.3.2.2), dropped and
        counted when nobody answers.  On the uplink a destination inside the uplink's own
        prefix is its own next hop (the local/remote decision of RFC 1122 3.3.1.1 and RFC 1812
        5.2.1, as the kernel's connected route); everything else goes to ``next_hop``, the
        gateway.  The prefix's broadcast address is not forwarded to (a directed broadcast,
        off by default: RFC 2644): dropped and counted.
Rule 5: the uplink address answers ARP and ping itself; everything else arriving there goes
        through the conntrack (``nat``) or is routed to the subnet (``route``/``open``).
Rule 6: with a host uplink (``nat.egress``) there is no uplink station: routed packets go to
        the host's sockets, and what comes back is addressed to guests by Rule 4.

Sans-I/O: packets (virtio-net header + frame) in, ``Out(switch, uplink)`` packets out.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from nat.conntrack import Conntrack
from nat.explain import Line, explain_inbound, explain_outbound
from nat.gateway import Gateway
from nat.translate import (
    LATER,
    admin_prohibited,
    flow_of,
    frag_needed,
    icmp_error,
    is_icmp_error,
    nat_packet,
    time_exceeded,
)
from nat.verdicts import Drop
from wire.checksum import adjust_checksum, checksum_delta
from wire.errors import MalformedPacket
from wire.gso import fragment_ipv4, to_plain_frames
from wire.packets import (
    BROADCAST_MAC,
    ETH_P_ARP,
    ETH_P_IP,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    IPV4_DF,
    PROTO_ICMP,
    Arp,
    Icmp,
    Ipv4,
    decode_arp,
    decode_icmp,
    decode_ipv4,
    encode_arp,
    encode_ethernet,
    encode_icmp,
    encode_ipv4,
    format_ip,
    ipv4_ihl,
)
from wire.vnet import FLAG_NEEDS_CSUM, NO_OFFLOAD, VNET_HDR_LEN, is_gso

ETH: Final = VNET_HDR_LEN  # offset of the Ethernet header in a packet
IP: Final = VNET_HDR_LEN + 14
ARP_TTL: Final = 300.0
ARP_RETRY: Final = 1.0
HELD_PER_ADDRESS: Final = 3
_U16: Final = struct.Struct("!H")
HELD_ADDRESSES: Final = 256
ARP_ENTRIES: Final = 4096



class Out(NamedTuple):
    switch: list[bytes]
    """Packets into the switch, from the router port."""
    uplink: list[bytes | bytearray]
    """Packets out of the uplink interface."""


@dataclass(frozen=True, slots=True)
class UplinkAddress:
    """The raw uplink's own station on its network (fixed, or leased by DHCP)."""

    ip: bytes
    """The router's own address on the uplink network."""
    prefix: int
    """Prefix length of the uplink network."""
    mac: bytes
    """The router's own MAC there."""
    next_hop: bytes
    """The default gateway on the uplink network: the next hop for what is not on the link."""
    mtu: int = 1500
    """Largest IP packet the uplink takes."""

    def hop_for(self, dst: bytes) -> bytes | None:
        """Rule 4: whom to ARP for to reach ``dst``: ``dst`` itself inside our prefix, else
        (our own address included) the gateway; None for the prefix's broadcast address."""
        host_bits = 32 - self.prefix
        value = int.from_bytes(dst, "big")
        if (value ^ int.from_bytes(self.ip, "big")) >> host_bits or dst == self.ip:
            return self.next_hop
        hosts = (1 << host_bits) - 1
        if host_bits >= 2 and value & hosts == hosts:  # a /31 has no broadcast (RFC 3021)
            return None
        return dst


class Egress(Protocol):
    """Where routed packets go with a host uplink (``nat.egress.HostEgress``, Rule 6)."""

    @property
    def host_address(self) -> bytes | None: ...

    def from_guest(self, packet: bytes, now: float, ip: Ipv4 | None = None) -> None: ...

    def explain(self, packet: bytes, ip: Ipv4) -> list[Line]: ...


class Neighbours:
    """One side's ARP cache, with packets held while an address is resolved (Rule 4)."""

    def __init__(self) -> None:
        self.cache: dict[bytes, tuple[bytes, float]] = {}
        self.held: dict[bytes, tuple[float, list[bytes | bytearray]]] = {}
        self.dropped = 0

    def learn(self, ip: bytes, mac: bytes, now: float) -> list[bytes | bytearray]:
        """Record ``ip`` at ``mac``; the packets that were waiting for it."""
        if len(self.cache) >= ARP_ENTRIES and ip not in self.cache:
            self.cache.pop(next(iter(self.cache)))
        self.cache[ip] = (mac, now + ARP_TTL)
        return self.held.pop(ip, (0.0, []))[1]

    def lookup(self, ip: bytes, now: float) -> bytes | None:
        entry = self.cache.get(ip)
        return entry[0] if entry is not None and entry[1] > now else None

    def hold(self, ip: bytes, packet: bytes | bytearray, now: float) -> bool:
        """Keep ``packet`` until ``ip`` resolves; True if a request should go out now."""
        sent, queue = self.held.get(ip, (-ARP_RETRY, []))
        if not queue:
            sent = -ARP_RETRY  # nothing waiting: ask now, whatever the clock says
        if not queue and len(self.held) >= HELD_ADDRESSES:
            self.dropped += 1
            return False
        if len(queue) >= HELD_PER_ADDRESS:
            self.dropped += 1
        else:
            queue.append(packet)
        ask = now - sent >= ARP_RETRY
        self.held[ip] = (now if ask else sent, queue)
        return ask

    def expire(self, now: float) -> None:
        self.cache = {ip: e for ip, e in self.cache.items() if e[1] > now}
        for ip, (sent, queue) in list(self.held.items()):
            if now - sent > 3 * ARP_RETRY:
                self.dropped += len(queue)
                del self.held[ip]


class Router:
    def __init__(self, gateway: Gateway, mode: str, subnet: tuple[int, int],
                 uplink_address: UplinkAddress | None, conntrack: Conntrack | None,
                 egress: Egress | None = None) -> None:
        self.gateway = gateway
        self.mode = mode
        network, prefix = subnet
        self.mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        self.network = network & self.mask
        self.uplink_address = uplink_address
        self.conntrack = conntrack
        self.egress = egress
        self.guests = Neighbours()
        self.outside = Neighbours()
        self.counters: Counter[str] = Counter()

    def rebind(self, uplink_address: UplinkAddress | None, conntrack: Conntrack | None) -> None:
        """A new uplink address (a DHCP lease), or none: flows of the old address are gone."""
        self.uplink_address = uplink_address
        self.conntrack = conntrack
        self.outside = Neighbours()

    def local(self, ip: bytes) -> bool:
        return int.from_bytes(ip, "big") & self.mask == self.network

    # -- guest -> outside ---------------------------------------------------------------

    def from_guest(self, packet: bytes, now: float, ip: Ipv4 | None = None) -> Out:
        """A guest's packet to route (Rule 1): translate, or refuse with an ICMP error.
        ``ip`` is its IPv4 header, when the router port has decoded it already."""
        out = Out([], [])
        if ip is None:
            try:
                ip = decode_ipv4(packet, IP)
            except MalformedPacket:
                self.counters["malformed"] += 1
                return out
        src, dst = ip.src, ip.dst
        if not self.local(src):  # BCP 38 (RFC 2827): only the guest network's own sources
            self.counters["drop-source-not-in-subnet"] += 1
            return out
        held = self.guests.learn(src, packet[ETH + 6:ETH + 12], now)
        if held:  # Rule 4: packets waiting for this guest, which spoke before it answered ARP
            self._send_all(held, now, out)
        if self.local(dst) and (self.egress is None or dst != self.egress.host_address):
            return out  # the switch delivers on-link traffic, not the router
        if self.mode == "isolated":
            return self._refuse(admin_prohibited(packet, self.gateway.ip), out, "isolated")
        if self.egress is None and self.uplink_address is None:  # no address yet (DHCP)
            return self._refuse(icmp_error(packet, 3, 0, self.gateway.ip), out, "no-uplink")
        if ip.ttl <= 1:
            return self._refuse(time_exceeded(packet, self.gateway.ip), out, "ttl-exceeded")
        if self.egress is not None:  # Rule 6
            self.egress.from_guest(packet, now, ip)
            return out
        assert self.uplink_address is not None
        if ip.fragment & IPV4_DF and not is_gso(packet) \
                and ip.end - IP > self.uplink_address.mtu:
            return self._refuse(frag_needed(packet, self.gateway.ip, self.uplink_address.mtu),
                                out, "frag-needed")
        if self.mode == "nat":
            assert self.conntrack is not None
            return self._send_all(self._nat(packet, False, now, out, ip), now, out)
        return self._send_all([decrement_ttl(packet)], now, out)

    # -- outside -> guests ----------------------------------------------------------------

    def from_uplink(self, packet: bytes, now: float) -> Out:
        out = Out([], [])
        if len(packet) < IP or self.uplink_address is None:
            return out
        dst_mac = packet[ETH:ETH + 6]
        if dst_mac != self.uplink_address.mac and dst_mac != BROADCAST_MAC:
            return out
        ethertype = packet[ETH + 12:ETH + 14]
        try:
            if ethertype == b"\x08\x06":
                return self._uplink_arp(packet, now, out)
            if ethertype != b"\x08\x00":
                return out
            ip = decode_ipv4(packet, IP)
            if ip.dst == self.uplink_address.ip:
                if ip.proto == PROTO_ICMP:
                    icmp = decode_icmp(packet, ip)
                    if icmp.type == ICMP_ECHO_REQUEST and (
                            self.mode != "nat" or self._nat_lookup_fails(ip, icmp)):
                        out.uplink.append(self._echo_reply(packet, ip))
                        return out
                if self.mode == "nat":
                    translated = self._nat(packet, True, now, out, ip)
                    if translated and self._too_big_for_guests(packet, ip):
                        return self._refuse(frag_needed(packet, self.uplink_address.ip,
                                                        self.gateway.mtu),
                                            out, "frag-needed", uplink=True)
                    return self._send_all(translated, now, out)
                return out
            if self.mode in ("route", "open") and self.local(ip.dst):
                if ip.ttl <= 1:
                    return self._refuse(time_exceeded(packet, self.uplink_address.ip), out,
                                        "ttl-exceeded", uplink=True)
                if self._too_big_for_guests(packet, ip):
                    return self._refuse(frag_needed(packet, self.uplink_address.ip,
                                                    self.gateway.mtu),
                                        out, "frag-needed", uplink=True)
                return self._send_all([decrement_ttl(packet)], now, out)
        except MalformedPacket:
            self.counters["malformed-from-uplink"] += 1
        return out

    # -- explaining (vswitch trace, vswitch explain): the steps above, changing nothing ---

    def explain_from_guest(self, packet: bytes, ip: Ipv4) -> list[Line]:
        """What ``from_guest`` would do with ``packet`` (its IPv4 header ``ip``)."""
        if not self.local(ip.src):
            return [(f"dropped: source {format_ip(ip.src)} is not in the guest network (BCP 38)",
                     "router Rule 1")]
        if self.local(ip.dst) and (self.egress is None or ip.dst != self.egress.host_address):
            return [("on-link: the switch delivers it, not the router", "router Rule 1")]
        if self.mode == "isolated":
            return [("refused: the network is isolated; ICMP 3/13 sent", "router Rule 2")]
        if self.egress is None and self.uplink_address is None:
            return [("refused: the uplink has no address yet; ICMP 3/0 sent", "router Rule 2")]
        if ip.ttl <= 1:
            return [(f"TTL {ip.ttl}: ICMP time exceeded sent", "router Rule 3")]
        if self.egress is not None:
            return self.egress.explain(packet, ip)
        assert self.uplink_address is not None
        mtu = self.uplink_address.mtu
        if ip.fragment & IPV4_DF and not is_gso(packet) and ip.end - IP > mtu:
            return [(f"DF set and {ip.end - IP} bytes > uplink MTU {mtu}: ICMP fragmentation "
                     "needed sent", "router Rule 3")]
        if self.mode != "nat":
            return [(f"routed unchanged (mode {self.mode}), TTL - 1", "router Rule 2")]
        return self._explain_nat(packet, ip, False)

    def explain_from_uplink(self, packet: bytes) -> list[Line]:
        """What ``from_uplink`` would do with ``packet``, an IPv4 frame from the uplink."""
        address = self.uplink_address
        dst_mac, ethertype = packet[ETH:ETH + 6], packet[ETH + 12:ETH + 14]
        if address is None or dst_mac not in (address.mac, BROADCAST_MAC):
            return [("not addressed to the uplink's MAC: ignored", "router Rule 5")]
        if ethertype == b"\x08\x06":
            return [("ARP on the uplink: the sender is learned; a request for the uplink "
                     "address is answered", "router Rule 4")]
        if ethertype != b"\x08\x00":
            return [("not IPv4 or ARP: ignored", "router Rule 5")]
        try:
            ip = decode_ipv4(packet, IP)
        except MalformedPacket as exc:
            return [(f"dropped: malformed ({exc})", "router Rule 5")]
        if ip.dst != address.ip:
            if self.mode in ("route", "open") and self.local(ip.dst):
                return [("routed to the guests unchanged, TTL - 1", "router Rule 2")]
            return [("not for the uplink address: ignored", "router Rule 5")]
        if self.mode != "nat":
            return [("to the uplink address, not translated in this mode", "router Rule 5")]
        return self._explain_nat(packet, ip, True)

    def _explain_nat(self, packet: bytes, ip: Ipv4, from_outside: bool) -> list[Line]:
        conntrack = self.conntrack
        assert conntrack is not None
        try:
            flow = flow_of(packet, ip)
        except MalformedPacket as exc:
            return [(f"dropped: malformed ({exc})", "translate Rule 1")]
        if flow is None:
            if is_icmp_error(packet):
                return [("ICMP error: translated through the flow it quotes", "translate Rule 4")]
            if from_outside and ip.proto == PROTO_ICMP:
                return [("echo request to the uplink address: answered by the router",
                         "router Rule 5")]
            return [(f"not translatable (protocol {ip.proto}): dropped", "translate Rule 1")]
        if flow.fragment == LATER:
            return [("a later fragment: takes its first fragment's verdict", "translate Rule 3")]
        explain = explain_inbound if from_outside else explain_outbound
        return explain(conntrack, flow.proto, flow.src, flow.sport, flow.dst, flow.dport,
                       flow.tcp_flags)

    # -- helpers ----------------------------------------------------------------------------

    def _too_big_for_guests(self, packet: bytes, ip: Ipv4) -> bool:
        """Rule 3: DF, not GSO, and over the guest link's MTU."""
        return (ip.fragment & IPV4_DF != 0 and not is_gso(packet)
                and ip.end - IP > self.gateway.mtu)

    def _nat(self, packet: bytes, from_outside: bool, now: float,
             out: Out, ip: Ipv4 | None = None) -> list[bytes | bytearray]:
        assert self.conntrack is not None
        try:
            result = nat_packet(packet, self.conntrack, from_outside, now, ip)
        except MalformedPacket:
            self.counters["malformed"] += 1
            return []
        if isinstance(result, Drop):
            self.counters[f"drop-{result.reason}"] += 1
            if result.icmp is not None:
                address = self.uplink_address
                source = address.ip if from_outside and address else self.gateway.ip
                error = icmp_error(packet, result.icmp[0], result.icmp[1], source)
                if error is not None:
                    (out.uplink if from_outside else out.switch).append(error)
            return []
        return result

    def _send_all(self, packets: Sequence[bytes | bytearray], now: float, out: Out) -> Out:
        """Address each packet to its next hop (Rule 4) and put it on the right side.

        A ``bytearray`` is a copy the router made (translated, or TTL - 1): its MACs are
        written in place and it leaves as it is to the uplink; the switch gets ``bytes``
        (its MAC table keys on slices of them).  Copying a 64 KiB TSO frame costs about as much
        as translating it, so each frame is copied once on the way out, twice at most.
        """
        for packet in packets:
            dst = bytes(packet[IP + 16:IP + 20])
            to_switch = self.local(dst)
            if to_switch:
                side, ip, src_mac, asker = self.guests, dst, self.gateway.mac, self.gateway.ip
                mtu = self.gateway.mtu
            elif self.uplink_address is None:
                self.counters["drop-no-uplink"] += 1  # nowhere to send it
                continue
            else:
                address = self.uplink_address
                hop = address.hop_for(dst)  # on-link itself, else the gateway (Rule 4)
                if hop is None:
                    self.counters["drop-directed-broadcast"] += 1
                    continue
                side, ip, src_mac, asker = self.outside, hop, address.mac, address.ip
                mtu = address.mtu
            mac = side.lookup(ip, now)
            if mac is None:
                if side.hold(ip, packet, now):
                    (out.switch if to_switch else out.uplink).append(
                        arp_request(src_mac, asker, ip))
                continue
            frame = packet if type(packet) is bytearray else bytearray(packet)
            frame[ETH:ETH + 12] = mac + src_mac
            if len(frame) - IP > mtu and not is_gso(frame):
                if frame[IP + 6] & 0x40:  # DF: refused before translation; never cut it here
                    self.counters["drop-too-big"] += 1
                    continue
                try:
                    pieces = cut_to_mtu(frame, mtu)
                except MalformedPacket:  # a partial checksum pointing outside the packet
                    self.counters["malformed"] += 1
                    continue
                (out.switch if to_switch else out.uplink).extend(pieces)
            elif to_switch:
                out.switch.append(bytes(frame))
            else:
                out.uplink.append(frame)
        return out

    def to_guests(self, packets: list[bytes], now: float) -> Out:
        """Packets for guests from the host uplink (Rule 6), addressed by Rule 4."""
        return self._send_all(packets, now, Out([], []))

    def _uplink_arp(self, packet: bytes, now: float, out: Out) -> Out:
        up = self.uplink_address
        assert up is not None
        arp = decode_arp(packet, IP)  # the ARP body sits where an IP header would
        if self.local(arp.sender_ip) or not any(arp.sender_ip):
            return out
        held = self.outside.learn(arp.sender_ip, arp.sender_mac, now)
        if arp.op == 1 and arp.target_ip == up.ip:
            reply = Arp(2, up.mac, up.ip, arp.sender_mac, arp.sender_ip)
            out.uplink.append(NO_OFFLOAD + encode_ethernet(arp.sender_mac, up.mac,
                                                           ETH_P_ARP, encode_arp(reply)))
        return self._send_all(held, now, out)  # addressed now that the cache knows the hop

    def guest_arp(self, frame: bytes, now: float) -> list[bytes]:
        """ARP the gateway stack saw from a guest: learn it, release held packets."""
        try:
            arp = decode_arp(frame)
        except MalformedPacket:
            return []
        if not self.local(arp.sender_ip):
            return []
        held = self.guests.learn(arp.sender_ip, arp.sender_mac, now)
        return self._send_all(held, now, Out([], [])).switch

    def _refuse(self, error: bytes | None, out: Out, reason: str, uplink: bool = False) -> Out:
        self.counters[f"drop-{reason}"] += 1
        if error is not None:
            (out.uplink if uplink else out.switch).append(error)
        return out

    def _nat_lookup_fails(self, ip: Ipv4, icmp: Icmp) -> bool:
        """An echo request to the uplink address that no guest's mapping answers."""
        assert self.conntrack is not None and self.uplink_address is not None
        ident = icmp.word >> 16
        key = (PROTO_ICMP, ip.src, ident, self.uplink_address.ip, ident)
        return self.conntrack.lookup(key, True) is None

    def _echo_reply(self, packet: bytes, ip: Ipv4) -> bytes:
        assert self.uplink_address is not None
        reply = encode_icmp(ICMP_ECHO_REPLY, 0, packet[ip.start + 4:ip.end])
        answer = encode_ipv4(self.uplink_address.ip, ip.src, PROTO_ICMP, reply)
        self.counters["echo-replies"] += 1
        return NO_OFFLOAD + encode_ethernet(packet[ETH + 6:ETH + 12], self.uplink_address.mac,
                                            ETH_P_IP, answer)

    def guest_neighbours(self, now: float) -> list[tuple[bytes, bytes]]:
        """The guests the router has heard from and not forgotten: (IPv4 address, MAC) of
        each live entry of its guest-side ARP cache (``show topology``)."""
        return [(ip, mac) for ip, (mac, until) in self.guests.cache.items() if until > now]

    def stats(self) -> dict[str, Any]:
        """``show router``: drops by reason, the ARP caches, the uplink's address."""
        address = self.uplink_address
        return dict(self.counters) | {
            "uplink_address": "none" if address is None
            else f"{socket.inet_ntoa(address.ip)}/{address.prefix}",
            "arp_guests": len(self.guests.cache), "arp_outside": len(self.outside.cache),
            "held_dropped": self.guests.dropped + self.outside.dropped}

    def expire(self, now: float) -> None:
        self.guests.expire(now)
        self.outside.expire(now)
        if self.conntrack is not None:
            self.conntrack.expire(now)


def arp_request(src_mac: bytes, src_ip: bytes, target: bytes) -> bytes:
    request = Arp(1, src_mac, src_ip, bytes(6), target)
    return NO_OFFLOAD + encode_ethernet(BROADCAST_MAC, src_mac, ETH_P_ARP, encode_arp(request))


def cut_to_mtu(packet: bytes | bytearray, mtu: int) -> list[bytes]:
    """Rule 3: ``packet`` (not GSO, no DF) in IPv4 fragments that fit ``mtu``; a partial
    checksum is finished first, since no fragment can carry one (RFC 791 2.3)."""
    frame = (to_plain_frames(bytes(packet))[0] if packet[0] & FLAG_NEEDS_CSUM
             else bytes(packet[VNET_HDR_LEN:]))
    ihl = ipv4_ihl(frame, 14)
    return [NO_OFFLOAD + piece for piece in fragment_ipv4(frame, 14, 14 + ihl, mtu - ihl)]


def decrement_ttl(packet: bytes) -> bytearray:
    """TTL - 1 with the header checksum adjusted incrementally (RFC 1624 eqn. 3), in a new
    buffer the router addresses in place."""
    buf = bytearray(packet)
    old = bytes(buf[IP + 8:IP + 10])
    buf[IP + 8] -= 1
    check = adjust_checksum(_U16.unpack_from(buf, IP + 10)[0],
                            checksum_delta(old, bytes(buf[IP + 8:IP + 10])))
    _U16.pack_into(buf, IP + 10, check)
    return buf
