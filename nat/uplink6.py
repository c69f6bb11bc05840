"""The raw uplink's own IPv6 station: its addresses and its next hop on the uplink network.

With ``[uplink] type = "raw"`` the router stands on an L2 interface as a host of its own (its
own MAC, ``vswitch.ports.uplink``).  For IPv6 that host needs what a host's kernel would do for
it: a link-local address, a global one (static, SLAAC or DHCPv6), a default router, neighbour
resolution, and answers to the neighbours' questions.  This is that station, sans-I/O.

Rule 1: Neighbor Discovery is taken only with hop limit 255, a valid checksum, code 0 and
        well-formed options (RFC 4861 6.1, 7.1); an RA only from a link-local source (6.1.2);
        an NS from :: only to the target's solicited-node group and without a source
        link-layer option, an NA to a multicast group only unsolicited (7.1.1, 7.1.2).
        Anything else is counted and dropped; ``handle`` never raises.  Frames from the
        station's own MAC (looped back) are dropped too: they would look like a duplicate;
        and frames from a multicast or all-zero MAC, packets from a multicast address (RFC
        4291 2.7) and link-layer address options that are not a unicast MAC: nobody could
        take an answer.
Rule 2: addresses (RFC 4862): the link-local one from the MAC's modified EUI-64 (RFC 4291
        2.5.1), always; a global one by ``mode``: "static" (given), "slaac" (the first /64
        prefix of an RA with the A flag, plus the same interface identifier, RFC 4862 5.5.3),
        or "dhcp" (a DHCPv6 IA_NA lease, started when an RA sets the M flag, RFC 4861 4.2).
        Each is tentative until duplicate address detection passes: one NS from :: to its
        solicited-node group, then RetransTimer (1 s) of silence (RFC 4862 5.4.2,
        DupAddrDetectTransmits 1).  An NA for it, or another node's probe for it, while
        tentative means it is in use: it is never used (5.4.5); the link-local one failing
        stops the station (5.4.5: the MAC is duplicated); a leased one is declined (RFC 8415
        18.2.10.1).  Only DAD-passed addresses are answered for, used as sources or pinged.
Rule 3: SLAAC lifetimes follow the prefix option (RFC 4862 5.5.3): a preferred lifetime above
        the valid one, or a prefix other than /64, is ignored; a valid lifetime shorter than
        two hours shortens the address's only if it was already below two hours (the "two
        hours rule", 5.5.3 e); at its end the address goes.  Only one SLAAC prefix is used.
Rule 4: a router (RFC 4861 6.3.4): an RA with router lifetime > 0 makes its source the
        default router until the lifetime ends (0 removes it); its source link-layer option
        fills the neighbour cache; its MTU option sets ``mtu`` when within 1280..``link_mtu``;
        a prefix with the L flag is on-link for its valid lifetime.  In "static" mode the
        next hop is ``gateway6`` and the prefix the static one; RAs only set the MTU.
Rule 5: router solicitation (RFC 4861 6.3.7): once the link-local address is usable, after a
        random 0..MAX_RTR_SOLICITATION_DELAY, an RS from it to all-routers (ff02::2) with our
        source link-layer option; again every RTR_SOLICITATION_INTERVAL (4 s), at most
        MAX_RTR_SOLICITATIONS (3); none after an RA with a router lifetime.  Not in "static".
Rule 6: answers (RFC 4861 7.2.4, RFC 4862 5.4.3): an NS for one of our usable addresses gets
        an NA (solicited, override; not router: the station is a host on the uplink) to the
        solicitor, whose link-layer address is learned; a DAD probe (from ::) for one gets an
        unsolicited NA to all-nodes, defending it.  An echo request to one gets an echo reply
        (RFC 4443 4.2).  RS and redirects are counted and ignored (a host discards RS, 6.2.6;
        redirects are not followed).
Rule 7: resolution (RFC 4861 7.2.2): ``resolve`` addresses each packet for the uplink to its
        destination's MAC when the destination is link-local, multicast (RFC 2464 7) or in an
        on-link prefix, else to the default router's.  An unknown MAC holds a few packets per
        address (``nat.router.Neighbours``, bounded) while NSs go to the solicited-node group,
        from the packet's source when it is ours, else from link-local, with our link-layer
        option: MAX_MULTICAST_SOLICIT (3), RetransTimer (1 s) apart; no answer drops what was
        held.  An NA with a target link-layer option fills an entry being resolved or updates
        one (7.2.5: an override flag is needed to change a known MAC); an NS for our address
        fills its source's; either releases the packets held.  Entries live ``ARP_TTL``, as
        the IPv4 side's (no unreachability detection, 7.3).  With no router and an off-link
        destination, or a packet above ``mtu`` (not GSO), the packet is counted and dropped:
        the router sends Packet Too Big before it gets here (RFC 8201).
Rule 8: DHCPv6 (mode "dhcp"): the client (``dhcp.client6``, given as ``client``; ``nat`` does
        not import ``dhcp``) starts when an RA sets M and the link-local address is usable;
        its messages go from link-local port 546 to ff02::1:2 port 547 (RFC 8415 7.1, 18);
        UDP from port 547 to our link-local port 546, with a valid checksum, is its.  A lease
        (``Bound6``) is DAD-tested before use; a lost one (``Lost6``) goes at once.
Rule 9: the router is told (``on_change(old, new)``) when the usable global address appears,
        changes or goes, so it can rebind its NAT66 conntrack.  ``handle`` consumes what is
        the station's (Neighbor Discovery, echo requests to its addresses, DHCPv6 replies);
        everything else is the router's to translate.

Sans-I/O: ``handle(frame, now)`` takes a plain Ethernet frame from the uplink and returns
plain frames to send and whether the frame was the station's; ``start``, ``tick`` and
``stop`` return plain frames too.  ``resolve`` takes the router's *packets* (the 10-byte
virtio-net header, ``wire.vnet``, and a frame) and returns packets, its NSs with
``NO_OFFLOAD``.  Packets held for an address that ``handle`` resolves come back from
``handle`` as frames, GSO cut and checksums finished in software (``wire.gso``): a few per
address, on a path that is not the hot one.
"""

from __future__ import annotations

import math
import random
import struct
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from nat.gateway6 import MTU_OPTION, PREFIX_INFO, SOURCE_LL, TARGET_LL
from nat.router import Neighbours
from wire.errors import MalformedPacket
from wire.gso import to_plain_frames
from wire.ipv6 import (
    ALL_NODES,
    ALL_ROUTERS,
    DHCP6_CLIENT_PORT,
    DHCP6_SERVER_PORT,
    ECHO_REPLY,
    ECHO_REQUEST,
    MIN_MTU,
    NEIGHBOR_ADVERT,
    NEIGHBOR_SOLICIT,
    PROTO_ICMPV6,
    REDIRECT,
    ROUTER_ADVERT,
    ROUTER_SOLICIT,
    UNSPECIFIED,
    Ipv6,
    decode_ipv6,
    encode_ipv6,
    encode_udp6,
    icmpv6_checksum_ok,
    icmpv6_frame,
    in_prefix,
    interface_id,
    is_link_local,
    link_address,
    link_local,
    multicast_mac,
    nd_option,
    nd_options,
    solicited_node,
    udp6_checksum_ok,
)
from wire.packets import ETH_P_IPV6, PROTO_UDP, encode_ethernet, format_ip
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN, is_gso

MODES: Final = ("static", "slaac", "dhcp")
ETH: Final = VNET_HDR_LEN  # offset of the Ethernet header in a packet
IP6: Final = VNET_HDR_LEN + 14  # offset of the IPv6 header in a packet
# RFC 4861 10 (host constants and defaults), RFC 4862 5.1.
MAX_RTR_SOLICITATION_DELAY: Final = 1.0
RTR_SOLICITATION_INTERVAL: Final = 4.0
MAX_RTR_SOLICITATIONS: Final = 3
MAX_MULTICAST_SOLICIT: Final = 3
RETRANS_TIMER: Final = 1.0
TWO_HOURS: Final = 7200.0  # RFC 4862 5.5.3 e
INFINITY: Final = 0xFFFFFFFF  # RFC 4861 4.6.2: a lifetime of all ones
#: Bounds on what the uplink network can make the station remember.
MAX_ROUTERS: Final = 8
MAX_PREFIXES: Final = 16
# NA flags (RFC 4861 4.4) and RA flags (4.2).
NA_SOLICITED, NA_OVERRIDE = 0x40, 0x20
RA_MANAGED: Final = 0x80
PREFIX_ON_LINK, PREFIX_AUTONOMOUS = 0x80, 0x40

Packets = list[bytes | bytearray]
Frames = list[bytes]


@dataclass(frozen=True, slots=True)
class StaticAddress6:
    """A static global address (``[uplink] address6 = "2001:db8:1::2/64"``)."""

    address: bytes
    """16 bytes."""
    prefix_len: int
    """The on-link prefix's length."""
    gateway: bytes
    """The next hop for everything off that prefix (``[uplink] gateway6``), 16 bytes."""


# -- what the station needs of its DHCPv6 client (``dhcp.client6.Dhcp6Client``, Rule 8) ---------


@runtime_checkable
class DatagramEvent(Protocol):
    """``dhcp.client6.Send6``: a message for the servers."""

    @property
    def payload(self) -> bytes: ...

    @property
    def dst(self) -> bytes: ...


@runtime_checkable
class LeaseEvent(Protocol):
    """``dhcp.client6.Bound6``: a lease to DAD-test and use."""

    @property
    def address(self) -> bytes: ...

    @property
    def valid(self) -> int: ...

    @property
    def preferred(self) -> int: ...

    @property
    def dns(self) -> tuple[bytes, ...]: ...


@runtime_checkable
class LostEvent(Protocol):
    """``dhcp.client6.Lost6``: an address no longer to use."""

    @property
    def address(self) -> bytes: ...

    @property
    def reason(self) -> str: ...


class LeaseClient6(Protocol):
    """``dhcp.client6.Dhcp6Client``, as the station drives it."""

    @property
    def state(self) -> str: ...

    @property
    def counters(self) -> Mapping[str, int]: ...  # what it dropped and why (in ``stats``)

    def start(self, now: float) -> Sequence[object]: ...

    def receive(self, payload: bytes, now: float) -> Sequence[object]: ...

    def tick(self, now: float) -> Sequence[object]: ...

    def next_deadline(self) -> float | None: ...

    def stop(self, now: float) -> Sequence[object]: ...

    def decline(self, now: float) -> Sequence[object]: ...


class UplinkStation6:
    def __init__(self, mac: bytes, mode: str, static: StaticAddress6 | None = None,
                 rng: random.Random | None = None, client: LeaseClient6 | None = None,
                 link_mtu: int = 1500) -> None:
        if len(mac) != 6 or mac[0] & 1:
            raise ValueError(f"mac: {mac.hex(':')} is not a unicast Ethernet address")
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        if (static is not None) != (mode == "static"):
            raise ValueError("static: an address and gateway with mode \"static\", and only then")
        if (client is not None) != (mode == "dhcp"):
            raise ValueError("client: a DHCPv6 client with mode \"dhcp\", and only then")
        self.mac = mac
        self.mode = mode
        self.static = static
        self.client = client
        self.link_local = link_local(mac)
        self.link_mtu = link_mtu
        self.mtu = min(1500, link_mtu)
        """The uplink's IPv6 MTU: the RA's MTU option (Rule 4), else 1500."""
        self.counters: Counter[str] = Counter()
        #: Told (old, new) when the usable global address appears, changes or goes (Rule 9).
        self.on_change: Callable[[bytes | None, bytes | None], None] | None = None
        #: The outside side's neighbour cache, with packets held while resolving (Rule 7).
        self.neighbours = Neighbours()
        #: DNS servers of the DHCPv6 lease.
        self.dns: tuple[bytes, ...] = ()
        self._rng = rng if rng is not None else random.Random()
        self._started = self._stopped = False
        self._disabled = False  # the link-local address is someone else's (Rule 2)
        self._usable: set[bytes] = set()  # DAD passed (Rule 2)
        self._tentative: dict[bytes, float] = {}  # address -> when DAD is over
        self._address: bytes | None = None  # the usable global address
        self._candidate: bytes | None = None  # the tentative global address
        self._slaac: tuple[bytes, float] | None = None  # (prefix, end of its valid lifetime)
        self._slaac_refused: bytes | None = None  # a prefix whose address DAD found in use
        self._routers: dict[bytes, float] = {}  # default routers -> end of their lifetime
        self._on_link: dict[tuple[bytes, int], float] = {}  # RA prefixes (L) -> end
        self._rs_sent = 0
        self._rs_next: float | None = None
        self._probes: dict[bytes, tuple[float, int, bytes]] = {}  # target -> (next, sent, src)
        self._dhcp_wanted = False
        self._dhcp_running = False

    # -- what the router reads ------------------------------------------------------------------

    @property
    def address(self) -> bytes | None:
        """The usable global address (Rule 2), None while there is none."""
        return self._address

    @property
    def next_hop(self) -> bytes | None:
        """The default router: ``gateway6`` when static, else the first RA source whose
        router lifetime has not ended (Rule 4)."""
        if self.static is not None:
            return self.static.gateway
        return next(iter(self._routers), None)

    @property
    def ready(self) -> bool:
        """The link-local address passed DAD: the station can resolve and send."""
        return self.link_local in self._usable

    # -- the entry points -----------------------------------------------------------------------

    def start(self, now: float) -> Frames:
        """DAD for the link-local address (and a static one); RS follows from ``tick`` once
        the link-local address is usable (Rules 2, 5)."""
        if self._started:
            raise RuntimeError("start(): the station is running")
        self._started = True
        out = self._probe(self.link_local, now)
        if self.static is not None:
            out += self._probe(self.static.address, now)
        return out

    def handle(self, frame: bytes, now: float) -> tuple[Frames, bool]:
        """Frames answering one Ethernet frame from the uplink (and packets it released, as
        frames), and whether the frame was the station's (Rule 9); bad input is counted,
        never raised (Rule 1)."""
        if len(frame) < 14 or frame[12:14] != b"\x86\xdd":
            return [], False
        if frame[:6] != self.mac and not frame[0] & 1:
            return [], False  # another station's unicast (a promiscuous socket)
        if frame[6:12] == self.mac:
            self.counters["drop-own-frame"] += 1
            return [], True
        if frame[6] & 1 or not any(frame[6:12]):  # no station has it: never answered
            self.counters["drop-bad-source-mac"] += 1
            return [], True
        try:
            ip = decode_ipv6(frame)
            if ip.src[0] == 0xFF:  # RFC 4291 2.7: never a source
                self.counters["drop-multicast-source"] += 1
                return [], True
            if ip.fragment is not None:
                return [], False  # not NDP (RFC 6980); reassembly is the router's
            if ip.proto == PROTO_ICMPV6:
                return self._icmpv6(frame, ip, now)
            if ip.proto == PROTO_UDP and ip.dst == self.link_local and ip.end - ip.start >= 8:
                sport, dport = struct.unpack_from("!HH", frame, ip.start)
                if (sport, dport) == (DHCP6_SERVER_PORT, DHCP6_CLIENT_PORT):
                    return self._dhcp_reply(frame, ip, now), True
            return [], False
        except (MalformedPacket, struct.error):
            self.counters["drop-malformed"] += 1
            return [], True

    def tick(self, now: float) -> Frames:
        """What is due: DAD results, RS, NS retransmissions, lifetimes, the DHCPv6 client."""
        out: Frames = []
        for address, end in list(self._tentative.items()):
            if end <= now:
                del self._tentative[address]
                out += self._dad_passed(address, now)
        if self._rs_next is not None and now >= self._rs_next:  # Rule 5
            out.append(self._router_solicit(now))
        out += self._retry_probes(now)
        if self._slaac is not None and now >= self._slaac[1]:  # Rule 3
            self.counters["slaac-address-expired"] += 1
            self._forget_global()
            self._slaac = None
        self._routers = {r: end for r, end in self._routers.items() if end > now}
        self._on_link = {p: end for p, end in self._on_link.items() if end > now}
        self.neighbours.expire(now)
        if self.client is not None and self._dhcp_running:
            deadline = self.client.next_deadline()
            if deadline is not None and now >= deadline:
                out += self._client_events(self.client.tick(now), now)
        return out

    def next_deadline(self) -> float | None:
        """When ``tick`` has work next (None: nothing is pending)."""
        times = [*self._tentative.values(), *(p[0] for p in self._probes.values()),
                 *self._routers.values(), *self._on_link.values()]
        if self._rs_next is not None:
            times.append(self._rs_next)
        if self._slaac is not None:
            times.append(self._slaac[1])
        if self.client is not None and self._dhcp_running:
            deadline = self.client.next_deadline()
            if deadline is not None:
                times.append(deadline)
        finite = [t for t in times if t != math.inf]
        return min(finite) if finite else None

    def stop(self, now: float) -> Frames:
        """Give a DHCPv6 lease back (RFC 8415 18.2.7: ``tick`` would retransmit it; a
        daemon shutting down sends it once), stop using the global address, and answer
        Neighbor Discovery no more."""
        self._stopped = True
        out: Frames = []
        if self.client is not None and self._dhcp_running:
            out += self._client_events(self.client.stop(now), now)  # its RELEASE goes on
        self._dhcp_wanted = False
        self._forget_global()
        self._rs_next = None
        return out

    def resolve(self, packets: Sequence[bytes | bytearray], now: float) -> Packets:
        """Address IPv6 packets leaving by the uplink (Rule 7): MACs written in place in a
        ``bytearray`` (copied once if given ``bytes``); NSs for what must be resolved first."""
        out: Packets = []
        for packet in packets:
            if len(packet) < IP6 + 40 or packet[ETH + 12:ETH + 14] != b"\x86\xdd":
                self.counters["drop-not-ipv6"] += 1
                continue
            if not self.ready or self._disabled:
                self.counters["drop-station-not-ready"] += 1
                continue
            if len(packet) - IP6 > self.mtu and not is_gso(packet):
                self.counters["drop-too-big"] += 1
                continue
            dst = bytes(packet[IP6 + 24:IP6 + 40])
            hop = dst if dst[0] == 0xFF else self._hop_for(dst)
            if hop is None:
                self.counters["drop-no-route"] += 1
                continue
            mac = multicast_mac(dst) if dst[0] == 0xFF else self.neighbours.lookup(hop, now)
            if mac is None:
                if self.neighbours.hold(hop, packet, now) and hop not in self._probes:
                    source = bytes(packet[IP6 + 8:IP6 + 24])
                    source = source if source in self._usable else self.link_local
                    self._probes[hop] = (now + RETRANS_TIMER, 1, source)
                    out.append(NO_OFFLOAD + self._solicit(hop, source))
                continue
            frame = packet if type(packet) is bytearray else bytearray(packet)
            frame[ETH:ETH + 12] = mac + self.mac
            out.append(frame)
        return out

    def stats(self) -> dict[str, Any]:
        """``show router``: drops by reason and the station's state."""
        hop = self.next_hop
        return dict(self.counters) | {
            "mode6": self.mode,
            "link_local6": format_ip(self.link_local)
            + ("" if self.ready else " (disabled)" if self._disabled else " (tentative)"),
            "address6": "none" if self._address is None else format_ip(self._address),
            "next_hop6": "none" if hop is None else format_ip(hop),
            "mtu6": self.mtu,
            "neighbours6": len(self.neighbours.cache),
            "held6_dropped": self.neighbours.dropped,
            "dhcp6": self.client.state if self.client is not None and self._dhcp_running
            else "off",
        } | ({} if self.client is None else
             {f"dhcp6-client-{k}": v for k, v in self.client.counters.items()})

    # -- Neighbor Discovery (Rules 1 to 6) -------------------------------------------------------

    def _icmpv6(self, frame: bytes, ip: Ipv6, now: float) -> tuple[Frames, bool]:
        if ip.end - ip.start < 4:
            raise MalformedPacket("ICMPv6 header truncated")
        kind = frame[ip.start]
        if kind in (ROUTER_SOLICIT, ROUTER_ADVERT, NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT, REDIRECT):
            return self._ndp(frame, ip, kind, now), True
        if kind == ECHO_REQUEST and ip.dst in self._usable:  # Rule 6
            if not icmpv6_checksum_ok(frame, ip):
                self.counters["drop-bad-checksum"] += 1
                return [], True
            self.counters["echo6-replies"] += 1
            reply = icmpv6_frame(frame[6:12], self.mac, ip.dst, ip.src, ECHO_REPLY, 0,
                                 frame[ip.start + 4:ip.end])
            return [reply], True
        return [], False

    def _ndp(self, frame: bytes, ip: Ipv6, kind: int, now: float) -> Frames:
        """Rule 1, then the message."""
        if ip.hop_limit != 255:
            self.counters["drop-ndp-hop-limit"] += 1
            return []
        if not icmpv6_checksum_ok(frame, ip):
            self.counters["drop-bad-checksum"] += 1
            return []
        if frame[ip.start + 1] != 0:
            self.counters["drop-ndp-code"] += 1
            return []
        if self._disabled or self._stopped:
            return []
        try:
            if kind == NEIGHBOR_SOLICIT:
                return self._solicited(frame, ip, now)
            if kind == NEIGHBOR_ADVERT:
                return self._advertised(frame, ip, now)
            if kind == ROUTER_ADVERT:
                return self._router_advert(frame, ip, now)
        except MalformedPacket:
            self.counters["drop-malformed-ndp"] += 1
            return []
        self.counters["rs-ignored" if kind == ROUTER_SOLICIT else "redirect-ignored"] += 1
        return []

    def _solicited(self, frame: bytes, ip: Ipv6, now: float) -> Frames:
        """Rules 2 and 6."""
        if ip.end - ip.start < 24:
            raise MalformedPacket("neighbor solicitation truncated")
        target = frame[ip.start + 8:ip.start + 24]
        options = nd_options(frame[ip.start + 24:ip.end])
        if target[0] == 0xFF:
            raise MalformedPacket("neighbor solicitation for a multicast address")
        source_mac = _link_address(options, SOURCE_LL)
        if ip.src == UNSPECIFIED:  # a DAD probe (RFC 4861 7.1.1)
            if ip.dst != solicited_node(target) or source_mac is not None:
                raise MalformedPacket("DAD probe not to the solicited-node group, or with a "
                                      "source link-layer option")
            if target in self._tentative:
                return self._dad_failed(target, now)
            if target in self._usable:
                self.counters["dad-defended"] += 1
                return [self._advert(target, ALL_NODES, multicast_mac(ALL_NODES), False)]
            return []  # another host's address
        if target not in self._usable:
            return []  # not ours, or tentative: silently discarded (RFC 4861 7.2.3)
        out = self._learn(ip.src, source_mac, now) if source_mac is not None else []
        self.counters["neighbor-adverts"] += 1
        return [self._advert(target, ip.src, source_mac or frame[6:12], True), *out]

    def _advertised(self, frame: bytes, ip: Ipv6, now: float) -> Frames:
        """Rules 2 and 7."""
        if ip.end - ip.start < 24:
            raise MalformedPacket("neighbor advertisement truncated")
        flags = frame[ip.start + 4]
        target = frame[ip.start + 8:ip.start + 24]
        options = nd_options(frame[ip.start + 24:ip.end])
        if target[0] == 0xFF:
            raise MalformedPacket("neighbor advertisement for a multicast address")
        if ip.dst[0] == 0xFF and flags & NA_SOLICITED:
            raise MalformedPacket("solicited neighbor advertisement to a multicast group")
        if target in self._tentative:
            return self._dad_failed(target, now)
        if target in self._usable:  # RFC 4862 5.4.4: someone else claims it; logged only
            self.counters["address-conflict"] += 1
            return []
        mac = _link_address(options, TARGET_LL)
        if mac is None:
            self.counters["na-without-target-ll"] += 1
            return []
        known = self.neighbours.cache.get(target)
        if target not in self.neighbours.held and known is None:
            self.counters["na-unsolicited-ignored"] += 1  # RFC 4861 7.2.5: no entry
            return []
        if known is not None and known[0] != mac and not flags & NA_OVERRIDE:
            self.counters["na-no-override-ignored"] += 1
            return []
        return self._learn(target, mac, now)

    def _router_advert(self, frame: bytes, ip: Ipv6, now: float) -> Frames:
        """Rules 3, 4 and 8."""
        if not is_link_local(ip.src):
            raise MalformedPacket("router advertisement not from a link-local address")
        if ip.end - ip.start < 16:
            raise MalformedPacket("router advertisement truncated")
        flags, lifetime = frame[ip.start + 5], struct.unpack_from("!H", frame, ip.start + 6)[0]
        options = nd_options(frame[ip.start + 16:ip.end])
        router_mac = _link_address(options, SOURCE_LL)
        self.counters["router-adverts"] += 1
        out: Frames = []
        if router_mac is not None:  # RFC 4861 6.3.4: the router's link-layer address
            out += self._learn(ip.src, router_mac, now)
        for kind, body in options:
            if kind == MTU_OPTION:
                self._take_mtu(body)
        if self.mode == "static":
            return out
        if lifetime:
            if ip.src not in self._routers and len(self._routers) >= MAX_ROUTERS:
                self.counters["routers-full"] += 1
            else:
                self._routers[ip.src] = now + lifetime
            self._rs_next = None  # RFC 4861 6.3.7: desist
        else:
            self._routers.pop(ip.src, None)
        for kind, body in options:
            if kind == PREFIX_INFO:
                out += self._prefix(body, now)
        if self.mode == "dhcp" and flags & RA_MANAGED:
            self._dhcp_wanted = True
            out += self._start_dhcp(now)
        return out

    def _take_mtu(self, body: bytes) -> None:
        if len(body) < 6:
            self.counters["ra-bad-mtu-option"] += 1
            return
        mtu = struct.unpack_from("!I", body, 2)[0]
        if MIN_MTU <= mtu <= self.link_mtu:
            self.mtu = mtu
        else:
            self.counters["ra-mtu-out-of-range"] += 1

    def _prefix(self, body: bytes, now: float) -> Frames:
        """Rules 3 and 4: one prefix information option (RFC 4861 4.6.2)."""
        if len(body) < 30 or body[0] > 128:
            self.counters["ra-bad-prefix-option"] += 1
            return []
        length, flags = body[0], body[1]
        valid, preferred = struct.unpack_from("!II", body, 2)
        prefix = _masked(body[14:30], length)
        if is_link_local(prefix):
            return []  # the link-local prefix (RFC 4861 6.3.4, RFC 4862 5.5.3 b)
        if flags & PREFIX_ON_LINK:
            if valid == 0:
                self._on_link.pop((prefix, length), None)
            elif (prefix, length) in self._on_link or len(self._on_link) < MAX_PREFIXES:
                self._on_link[(prefix, length)] = now + _seconds(valid)
            else:
                self.counters["prefixes-full"] += 1
        if flags & PREFIX_AUTONOMOUS and self.mode == "slaac":
            return self._autoconfigure(prefix, length, valid, preferred, now)
        return []

    def _autoconfigure(self, prefix: bytes, length: int, valid: int, preferred: int,
                       now: float) -> Frames:
        """Rule 3 (RFC 4862 5.5.3)."""
        if preferred > valid:
            self.counters["slaac-preferred-above-valid"] += 1
            return []
        if length != 64:  # c: the prefix and the 64-bit interface identifier make 128 bits
            self.counters["slaac-prefix-not-64"] += 1
            return []
        if self._slaac is None:
            if valid == 0 or prefix == self._slaac_refused:
                return []
            self._slaac = (prefix, now + _seconds(valid))
            return self._probe(prefix[:8] + interface_id(self.mac), now)
        held, end = self._slaac
        if prefix != held:
            self.counters["slaac-other-prefix-ignored"] += 1
            return []
        received = now + _seconds(valid)  # e: the two hours rule
        if valid > TWO_HOURS or received > end:
            self._slaac = (held, received)
        elif end - now > TWO_HOURS:
            self._slaac = (held, now + TWO_HOURS)
        return []

    # -- addresses (Rule 2) ----------------------------------------------------------------------

    def _probe(self, address: bytes, now: float) -> Frames:
        """Make ``address`` tentative and send its DAD probe (RFC 4862 5.4.2)."""
        self._tentative[address] = now + RETRANS_TIMER
        if address != self.link_local:
            self._candidate = address
        self.counters["dad-probes"] += 1
        group = solicited_node(address)
        return [icmpv6_frame(multicast_mac(group), self.mac, UNSPECIFIED, group,
                             NEIGHBOR_SOLICIT, 0, bytes(4) + address, 255)]

    def _dad_passed(self, address: bytes, now: float) -> Frames:
        self._usable.add(address)
        if address == self.link_local:
            if self.mode != "static":  # Rule 5: the first RS after a random delay
                self._rs_next = now + self._rng.uniform(0.0, MAX_RTR_SOLICITATION_DELAY)
            return self._start_dhcp(now)
        if address == self._candidate:
            self._candidate = None
            self._set_global(address)
        return []

    def _dad_failed(self, address: bytes, now: float) -> Frames:
        """RFC 4862 5.4.5: the address is someone else's."""
        del self._tentative[address]
        self.counters["dad-failed"] += 1
        if address == self.link_local:
            self.counters["dad-failed-link-local"] += 1
            self._disabled = True  # the MAC itself is duplicated: stop
            self._rs_next = None
            return []
        if address == self._candidate:
            self._candidate = None
        if self.mode == "slaac" and self._slaac is not None:
            self._slaac_refused, self._slaac = self._slaac[0], None
        if self.client is not None and self._dhcp_running:
            return self._client_events(self.client.decline(now), now)
        return []

    def _set_global(self, address: bytes | None) -> None:
        """Rule 9."""
        old = self._address
        if old == address:
            return
        if old is not None:
            self._usable.discard(old)
        self._address = address
        if address is not None:
            self._usable.add(address)
        if self.on_change is not None:
            self.on_change(old, address)

    def _forget_global(self) -> None:
        if self._candidate is not None:
            self._tentative.pop(self._candidate, None)
            self._candidate = None
        self._set_global(None)

    # -- resolution (Rule 7) ----------------------------------------------------------------------

    def _hop_for(self, dst: bytes) -> bytes | None:
        """The neighbour a packet to ``dst`` goes to: itself on-link, else the router."""
        if is_link_local(dst):
            return dst
        static = self.static
        if static is not None and in_prefix(dst, static.address, static.prefix_len):
            return dst
        if any(in_prefix(dst, prefix, length) for prefix, length in self._on_link):
            return dst
        return self.next_hop

    def _learn(self, address: bytes, mac: bytes, now: float) -> Frames:
        """Fill the neighbour cache; the packets held for ``address``, addressed now, as
        plain frames (GSO cut, checksums finished: ``wire.gso``)."""
        if address == UNSPECIFIED or address[0] == 0xFF or mac[0] & 1:
            return []
        held = self.neighbours.learn(address, mac, now)
        self._probes.pop(address, None)
        out: Frames = []
        for packet in self.resolve(held, now) if held else []:
            try:
                out += to_plain_frames(bytes(packet))
            except MalformedPacket:
                self.counters["drop-malformed-held"] += 1
        return out

    def _retry_probes(self, now: float) -> Frames:
        """NS again every RetransTimer; after MAX_MULTICAST_SOLICIT, drop what was held."""
        out: Frames = []
        for target, (when, sent, source) in list(self._probes.items()):
            if target not in self.neighbours.held:
                del self._probes[target]
            elif now >= when and sent >= MAX_MULTICAST_SOLICIT:
                del self._probes[target]
                self.neighbours.dropped += len(self.neighbours.held.pop(target)[1])
                self.counters["unresolved"] += 1
            elif now >= when:
                self._probes[target] = (now + RETRANS_TIMER, sent + 1, source)
                out.append(self._solicit(target, source))
        return out

    # -- DHCPv6 (Rule 8) -----------------------------------------------------------------------

    def _start_dhcp(self, now: float) -> Frames:
        if self.client is None or self._dhcp_running or not self._dhcp_wanted \
                or not self.ready or self._disabled:
            return []
        self._dhcp_running = True
        return self._client_events(self.client.start(now), now)

    def _dhcp_reply(self, frame: bytes, ip: Ipv6, now: float) -> Frames:
        if self.client is None or not self._dhcp_running:
            self.counters["dhcp6-not-running"] += 1
            return []
        if not udp6_checksum_ok(frame, ip):
            self.counters["drop-bad-checksum"] += 1
            return []
        length = struct.unpack_from("!H", frame, ip.start + 4)[0]
        if length < 8 or ip.start + length > ip.end:
            raise MalformedPacket("UDP length < 8 or beyond the IPv6 payload")
        return self._client_events(self.client.receive(frame[ip.start + 8:ip.start + length],
                                                       now), now)

    def _client_events(self, events: Sequence[object], now: float) -> Frames:
        out: Frames = []
        for event in events:
            if isinstance(event, DatagramEvent):
                if event.dst[0] != 0xFF:  # the client only multicasts (RFC 8415 18)
                    self.counters["dhcp6-unicast-not-sent"] += 1
                    continue
                udp = encode_udp6(self.link_local, event.dst, DHCP6_CLIENT_PORT,
                                  DHCP6_SERVER_PORT, event.payload)
                out.append(encode_ethernet(multicast_mac(event.dst), self.mac, ETH_P_IPV6,
                                           encode_ipv6(self.link_local, event.dst, PROTO_UDP,
                                                       udp)))
            elif isinstance(event, LeaseEvent):
                self.dns = event.dns
                if event.address in (self._address, self._candidate):
                    continue  # renewed
                self._forget_global()
                out += self._probe(event.address, now)
            elif isinstance(event, LostEvent):
                self.counters[f"lease-lost-{event.reason}"] += 1
                if event.address in (self._address, self._candidate):
                    self._forget_global()
        return out

    # -- building ---------------------------------------------------------------------------------

    def _advert(self, target: bytes, dst: bytes, dst_mac: bytes, solicited: bool) -> bytes:
        """An NA for our ``target``: override, solicited when answering, never router."""
        flags = (NA_SOLICITED if solicited else 0) | NA_OVERRIDE
        body = struct.pack("!B3x", flags) + target + nd_option(TARGET_LL, self.mac)
        return icmpv6_frame(dst_mac, self.mac, target, dst, NEIGHBOR_ADVERT, 0, body, 255)

    def _solicit(self, target: bytes, source: bytes) -> bytes:
        """A multicast NS resolving ``target`` (RFC 4861 7.2.2)."""
        self.counters["neighbor-solicits"] += 1
        group = solicited_node(target)
        body = bytes(4) + target + nd_option(SOURCE_LL, self.mac)
        return icmpv6_frame(multicast_mac(group), self.mac, source, group, NEIGHBOR_SOLICIT, 0,
                            body, 255)

    def _router_solicit(self, now: float) -> bytes:
        """Rule 5."""
        self._rs_sent += 1
        more = self._rs_sent < MAX_RTR_SOLICITATIONS
        self._rs_next = now + RTR_SOLICITATION_INTERVAL if more else None
        self.counters["router-solicits"] += 1
        return icmpv6_frame(multicast_mac(ALL_ROUTERS), self.mac, self.link_local, ALL_ROUTERS,
                            ROUTER_SOLICIT, 0, bytes(4) + nd_option(SOURCE_LL, self.mac), 255)


def _link_address(options: list[tuple[int, bytes]], kind: int) -> bytes | None:
    """``wire.ipv6.link_address``, refusing a multicast or all-zero MAC (Rule 1): nobody
    has it, and answers would go to it."""
    mac = link_address(options, kind)
    if mac is not None and (mac[0] & 1 or not any(mac)):
        raise MalformedPacket("a link-layer address option that is not a unicast MAC")
    return mac


def _seconds(lifetime: int) -> float:
    return math.inf if lifetime == INFINITY else float(lifetime)


def _masked(prefix: bytes, length: int) -> bytes:
    """``prefix`` with the bits past ``length`` cleared."""
    bits = int.from_bytes(prefix, "big") >> (128 - length) << (128 - length) if length else 0
    return bits.to_bytes(16, "big")
