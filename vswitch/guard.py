"""Port guards: guests cannot impersonate the gateway or each other (sans-I/O).

Every frame from a guarded guest port passes ``Guard.check`` before the switch sees it; a frame
it refuses is dropped and counted on that port under the reason it returns (``show ports``),
and ``vswitch trace`` / ``explain`` print the rule.  The router port (id 0) is never guarded.

Rule 1: nobody but the gateway speaks for the gateway.  From a guest port, a frame whose source
        MAC is the gateway's (it would move the gateway in the MAC table), ARP whose sender IP is
        a gateway IPv4 address (requests, replies and gratuitous ARP alike: RFC 826, RFC 5227's
        ARP announcements), and Neighbor Discovery from a gateway IPv6 source or a Neighbor
        Advertisement whose target is a gateway IPv6 address (RFC 4861 7.2.5-7.2.6) are
        dropped.  A DAD probe for the gateway's address (source ::) passes: the gateway defends
        it (gateway6 Rule 2).
Rule 2: rogue DHCP: DHCPv4 server messages (UDP from port 67 to port 68: OFFER, ACK, NAK;
        RFC 2131 4.1) from guest ports are dropped when the network serves DHCP (DHCP snooping's
        untrusted port).
Rule 3: router advertisements, redirects and DHCPv6 server messages (UDP from port 547) from
        guest ports are dropped (RFC 6105 RA guard, RFC 7610 DHCPv6 shield), counted as
        ``ra-guard``; ``ra_guard = false`` on a port exempts it from this rule alone (a port
        that holds a real router).
Rule 4: strict ports (``guard = "strict"``, libvirt clean-traffic): a port sends only from its
        pinned MACs (``macs``), or else from the first MAC it sends from, until its link goes
        down; only IPv4, IPv6 and ARP (no other EtherType, no VLAN tags), and no frame too
        short for the headers it names (elsewhere the switch and the receivers drop those).
Rule 5: strict: an IPv4 source must be bound to the frame's MAC: a BOUND DHCP lease or a static
        ``[[dhcp.host]]``.  Before one exists, 0.0.0.0 may send DHCP to the server (UDP 68 -> 67,
        RFC 2131 4.1).  ARP may only claim a bound address, or 0.0.0.0 (an RFC 5227 probe), and
        its sender MAC must be the frame's.
Rule 6: strict: an IPv6 source must be bound to the frame's MAC: a DHCPv6 lease or a static
        ``ip6``; or link-local (fe80::/10, not bound: guests pick them, RFC 4862 5.3); or an
        address in subnet6 whose interface identifier is the MAC's modified EUI-64 (SLAAC,
        RFC 4291 2.5.1), or that the gateway heard in Neighbor Discovery from that MAC (its
        neighbour cache, gateway6 Rule 5: privacy and stable-privacy SLAAC addresses).  A
        Neighbor Solicitation's source and a Neighbor Advertisement's target may also claim a
        subnet6 address that no lease, static host or other MAC holds (first come, first
        served, RFC 6620): that is how the gateway comes to hear it; anything else they claim
        is dropped.  :: may only send ICMPv6 (DAD probes, RFC 4862 5.4; router solicitations,
        MLD reports); a DAD probe's target in subnet6 that nobody else holds is bound to the
        probing MAC (RFC 6620 FCFS SAVI; at most ``CLAIMS``, the oldest forgotten first).
Rule 7: cost: ``check`` runs for every frame from a guarded port; unicast TCP and UDP data is
        answered from a few single-byte compares on the frame as it is (no copy, no slice, no
        decode; ``check`` is a closure over its tables); only IPv6 with extension headers is
        decoded (``wire.ipv6.decode_ipv6``).  Measured as ``test_guard_cost`` does
        (tests/unit/test_guard.py, prints it with -s; the best of several runs of 50k calls,
        CPython 3.11 on a loaded 2-CPU VM), the delivery closure's guard step (``port_id in
        guarded`` and ``check``) per 1.4 KB frame on a default port: IPv4 TCP 0.17
        us, IPv4 UDP 0.23 us, IPv6 TCP 0.18 us, IPv6 UDP 0.21 us (the RA guard it replaces:
        0.1 us for IPv4 but 1.2 us for IPv6 UDP, which it decoded); on a strict port 0.45-0.9
        us (a dict lookup of the source address).  An empty call costs 0.03 us there.

Frames here carry the 10-byte virtio-net header (``wire.vnet`` Rule 1): the Ethernet header is
at offset 10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from wire.errors import MalformedPacket
from wire.ipv6 import decode_ipv6, in_prefix, interface_id

_DHCP_SERVER_TO_CLIENT: Final = b"\x00\x43\x00\x44"  # UDP 67 -> 68
_DHCP_CLIENT_TO_SERVER: Final = b"\x00\x44\x00\x43"  # UDP 68 -> 67
_DHCP6_FROM_SERVER: Final = b"\x02\x23"  # UDP source port 547
_ZERO4, _ZERO16 = bytes(4), bytes(16)
_RS, _RA, _NS, _NA, _REDIRECT = 133, 134, 135, 136, 137
#: IPv6 addresses strict ports' DAD probes may hold claimed at once (Rule 6).
CLAIMS: Final = 8192

#: Drop reasons, as ``show ports`` counts them, with the words and rule trace prints.
REASONS: Final = {
    "guard-gateway-mac": ("a guest sent from the gateway's MAC", "guard Rule 1"),
    "guard-gateway-arp": ("ARP claiming a gateway address", "guard Rule 1"),
    "guard-gateway-nd": ("Neighbor Discovery claiming a gateway address", "guard Rule 1"),
    "guard-dhcp-server": ("a DHCP server message from a guest (rogue DHCP)", "guard Rule 2"),
    "ra-guard": ("only the gateway may advertise a router or serve DHCPv6", "guard Rule 3"),
    "guard-mac": ("a source MAC that is not the port's", "guard Rule 4"),
    "guard-ethertype": ("strict: only IPv4, IPv6 and ARP", "guard Rule 4"),
    "guard-truncated": ("strict: a frame too short for the headers it names", "guard Rule 4"),
    "guard-ip-source": ("strict: an IPv4 source not bound to this MAC", "guard Rule 5"),
    "guard-arp-claim": ("strict: ARP claiming an address not bound to this MAC", "guard Rule 5"),
    "guard-ip6-source": ("strict: an IPv6 source not bound to this MAC", "guard Rule 6"),
    "guard-nd-claim": ("strict: Neighbor Discovery claiming an address not bound to this MAC",
                       "guard Rule 6"),
}


@dataclass(slots=True)
class PortGuard:
    """One guarded port's settings and what it learned."""

    strict: bool = False
    ra_guard: bool = True
    pinned: frozenset[bytes] = frozenset()
    """``macs``: the MACs a strict port may send from (empty: the first one it uses)."""
    learned: bytes | None = None
    """A strict port's first source MAC, when nothing is pinned (forgotten on link down)."""


@dataclass
class Guard:
    """The guards of every guest port, and the address bindings strict ports are held to."""

    gateway_mac: bytes
    gateway4: frozenset[bytes]
    """The gateway's IPv4 addresses (4 bytes): its own and the host uplink's alias."""
    gateway6: frozenset[bytes] = frozenset()
    """The gateway's IPv6 addresses (16 bytes): in subnet6 and its link-local."""
    dhcp4: bool = True
    """The network serves DHCP (Rule 2)."""
    subnet6: tuple[bytes, int] | None = None
    """(prefix, length) of the guest network's IPv6 prefix."""
    heard: Callable[[bytes], bytes | None] = lambda address: None
    """The MAC the gateway heard using an IPv6 address in Neighbor Discovery (Rule 6)."""
    ports: dict[int, PortGuard] = field(default_factory=dict)
    #: MAC -> the addresses bound to it (4 or 16 bytes): leases and static hosts (Rules 5-6).
    bindings: dict[bytes, set[bytes]] = field(default_factory=dict)
    #: address -> the MAC it is bound to
    owner: dict[bytes, bytes] = field(default_factory=dict)
    _static: dict[bytes, bytes] = field(default_factory=dict)
    _eui: dict[bytes, bytes] = field(default_factory=dict)  #: MAC -> its EUI-64 (Rule 6)
    _strict: set[int] = field(default_factory=set)  #: the strict ports' ids
    #: subnet6 address -> the MAC whose DAD probe claimed it first (Rule 6), at most CLAIMS
    claimed: dict[bytes, bytes] = field(default_factory=dict)
    check: Callable[[bytes, int], str | None] = field(init=False, repr=False)
    """The check (built once, ``_checker``)."""

    # -- configuration and bindings ------------------------------------------------------

    def add_port(self, port_id: int, strict: bool = False, ra_guard: bool = True,
                 macs: tuple[bytes, ...] = ()) -> None:
        self.ports[port_id] = PortGuard(strict, ra_guard, frozenset(macs))
        if strict:
            self._strict.add(port_id)
        else:
            self._strict.discard(port_id)

    def link_down(self, port_id: int) -> None:
        """A strict port's learned MAC is forgotten when its link goes down (Rule 4): the
        guest behind it may come back with another."""
        port = self.ports.get(port_id)
        if port is not None:
            port.learned = None

    def bind_static(self, address: bytes, mac: bytes) -> None:
        """A static host's address: bound for good (a lease of it that ends gives it back to
        the static host)."""
        self._static[address] = mac
        self.bind(address, mac)

    def bind(self, address: bytes, mac: bytes | None) -> None:
        """``address`` is now held by ``mac`` (a lease bound) or by nobody (None: released,
        expired, declined); a static binding stays."""
        if mac is None:
            mac = self._static.get(address)
        old = self.owner.get(address)
        if old == mac:
            return
        if old is not None:
            held = self.bindings.get(old)
            if held is not None:
                held.discard(address)
                if not held:
                    del self.bindings[old]
            del self.owner[address]
        if mac is not None:
            self.owner[address] = mac
            self.bindings.setdefault(mac, set()).add(address)

    # -- the check (Rule 7: the common case first) -----------------------------------------

    def __post_init__(self) -> None:
        self.check = self._checker()

    def _checker(self) -> Callable[[bytes, int], str | None]:
        """``check``, as a closure over its tables: no attribute lookups per frame (Rule 7)."""
        gateway_mac, gateway4, ports, strict = self.gateway_mac, self.gateway4, self.ports, \
            self._strict
        gateway_last = gateway_mac[5] if gateway_mac else -1
        v6, v6_chain, strict4, strict6, strict_arp, mac = self._v6, self._v6_chain, \
            self._strict4, self._strict6, self._strict_arp, self._mac

        def check(packet: bytes, port_id: int) -> str | None:
            """The reason ``packet`` (vnet header + frame) from ``port_id`` is dropped, or
            None.  ``port_id`` must be a guarded port.  Never raises."""
            try:  # single bytes are compared where a slice would make an object (Rule 7)
                if packet[21] == gateway_last and packet[16:22] == gateway_mac:
                    return "guard-gateway-mac"
                kind = packet[22]
                if kind == 0x08 and packet[23] == 0x00:  # IPv4
                    if packet[33] == 17:  # UDP: a rogue server's ports? (TCP, ICMP: done)
                        at = 24 + ((packet[24] & 15) << 2)
                        if packet[at + 1] == 67 and packet[at:at + 4] == _DHCP_SERVER_TO_CLIENT \
                                and self.dhcp4 and not (packet[30] & 0x1F or packet[31]):
                            return "guard-dhcp-server"  # (a first fragment, or whole)
                    return strict4(packet, ports[port_id]) if port_id in strict else None
                if kind == 0x86 and packet[23] == 0xDD:  # IPv6
                    next_header = packet[30]
                    if next_header == 6 or (next_header == 17 and packet[64] != 0x02):
                        reason = None  # TCP, or UDP from a port that is not 547 (0x0223)
                    elif next_header == 17 or next_header == 58:
                        reason = v6(packet, ports[port_id], next_header, 64)
                    else:  # extension headers: decoded (Rule 7)
                        reason = v6_chain(packet, ports[port_id])
                    if reason is None and port_id in strict:
                        return strict6(packet, ports[port_id])
                    return reason
                if kind == 0x08 and packet[23] == 0x06:  # ARP
                    if packet[38:42] in gateway4:
                        return "guard-gateway-arp"
                    return strict_arp(packet, ports[port_id]) if port_id in strict else None
            except IndexError:  # shorter than its headers: harmless unless strict, which
                return "guard-truncated" if port_id in strict else None  # reads them all
            if port_id in strict:
                return mac(packet, ports[port_id]) or "guard-ethertype"
            return None

        return check

    def _v6(self, packet: bytes, port: PortGuard, proto: int, at: int) -> str | None:
        """Rules 1 and 3 for an IPv6 upper layer at ``at``."""
        if proto == 17:
            if packet[at:at + 2] == _DHCP6_FROM_SERVER and port.ra_guard:
                return "ra-guard"
            return None
        if proto != 58:
            return None
        kind = packet[at]
        if kind == _RA or kind == _REDIRECT:
            return "ra-guard" if port.ra_guard else None
        if _RS <= kind <= _REDIRECT and (packet[32:48] in self.gateway6 or (
                kind == _NA and packet[at + 8:at + 24] in self.gateway6)):
            return "guard-gateway-nd"
        return None

    def _v6_chain(self, packet: bytes, port: PortGuard) -> str | None:
        try:
            ip = decode_ipv6(packet, 24)
        except MalformedPacket:
            return None  # the switch forwards it; nobody decodes it as NDP or DHCPv6 either
        if ip.end - ip.start < 2 or (ip.fragment is not None and ip.fragment[1]):
            return None
        if ip.proto == 58 and ip.end - ip.start < 24 and packet[ip.start] == _NA:
            return None
        return self._v6(packet, port, ip.proto, ip.start)

    # -- strict mode (Rules 4-6) ------------------------------------------------------------

    def _mac(self, packet: bytes, port: PortGuard) -> str | None:
        """Rule 4."""
        src = packet[16:22]
        if port.pinned:
            return None if src in port.pinned else "guard-mac"
        if port.learned is None:
            if src[0] & 1:
                return "guard-mac"
            port.learned = src
        return None if src == port.learned else "guard-mac"

    def _strict4(self, packet: bytes, port: PortGuard) -> str | None:
        """Rules 4-5 for IPv4."""
        reason = self._mac(packet, port)
        if reason is not None:
            return reason
        src = packet[36:40]
        if self.owner.get(src) == packet[16:22]:
            return None
        at = 24 + ((packet[24] & 15) << 2)
        if src == _ZERO4 and packet[33] == 17 and packet[at:at + 4] == _DHCP_CLIENT_TO_SERVER:
            return None
        return "guard-ip-source"

    def _strict_arp(self, packet: bytes, port: PortGuard) -> str | None:
        """Rules 4-5 for ARP."""
        reason = self._mac(packet, port)
        if reason is not None:
            return reason
        mac, claimed = packet[16:22], packet[38:42]
        if packet[32:38] != mac or (claimed != _ZERO4 and self.owner.get(claimed) != mac):
            return "guard-arp-claim"
        return None

    def _may_use6(self, address: bytes, mac: bytes) -> bool:
        """Rule 6: whether ``mac`` may send from (or advertise) ``address``."""
        owner = self.owner.get(address)
        if owner is not None:
            return owner == mac
        if address[0] == 0xFE and address[1] & 0xC0 == 0x80:
            return True
        if not self._in_subnet6(address):
            return False
        eui = self._eui.get(mac)
        if eui is None:
            if len(self._eui) >= 4096:
                self._eui.clear()
            eui = self._eui[mac] = interface_id(mac)
        return address[8:] == eui or self.claimed.get(address) == mac \
            or self.heard(address) == mac

    def _in_subnet6(self, address: bytes) -> bool:
        if self.subnet6 is None:
            return False
        prefix, length = self.subnet6
        if length == 64:  # the usual SLAAC prefix: one compare
            return address[:8] == prefix[:8]
        return in_prefix(address, prefix, length)

    def _claimable6(self, address: bytes, mac: bytes) -> bool:
        """Rule 6: first come, first served for a subnet6 address nobody holds."""
        if self._may_use6(address, mac):
            return True
        return self.owner.get(address) is None and self.claimed.get(address) is None \
            and self.heard(address) is None and self._in_subnet6(address) \
            and address not in self.gateway6

    def _claim6(self, address: bytes, mac: bytes) -> None:
        """Rule 6: a DAD probe's target, claimable by ``mac``, is bound to it (bounded: the
        oldest claim goes first)."""
        if self.owner.get(address) is not None or not self._claimable6(address, mac) \
                or not self._in_subnet6(address) or address in self.claimed:
            return
        if len(self.claimed) >= CLAIMS:
            del self.claimed[next(iter(self.claimed))]
        self.claimed[address] = mac

    def _strict6(self, packet: bytes, port: PortGuard) -> str | None:
        """Rules 4 and 6 for IPv6."""
        reason = self._mac(packet, port)
        if reason is not None:
            return reason
        mac, src = packet[16:22], packet[32:48]
        at = _icmp6_at(packet)  # the ICMPv6 message, behind any extension headers
        kind = packet[at] if at is not None and len(packet) > at else None
        if src == _ZERO16:
            # from ::, only what a node without an address sends: DAD probes, router
            # solicitations, MLD (RFC 4862 5.4.2, RFC 4861 6.3.7, RFC 3810 5.2.13); never an NA
            if kind == _NS and at is not None and len(packet) >= at + 24:
                self._claim6(packet[at + 8:at + 24], mac)  # a DAD probe claims (Rule 6)
            return None if kind in _FROM_UNSPECIFIED else "guard-ip6-source"
        if kind == _NS or kind == _NA:
            assert at is not None
            if not self._claimable6(src, mac):
                return "guard-nd-claim"
            if kind == _NA and (len(packet) < at + 24
                                or not self._claimable6(packet[at + 8:at + 24], mac)):
                return "guard-nd-claim"
            return None
        return None if self._may_use6(src, mac) else "guard-ip6-source"

    # -- in words (trace and explain) --------------------------------------------------------

    def explain(self, packet: bytes, port_id: int) -> list[tuple[str, str]]:
        """What ``check`` decides, as (text, rule) lines; changes nothing (a strict port's
        first MAC is not learned, nor a DAD probe's claim kept, by explaining)."""
        port = self.ports.get(port_id)
        if port is None:
            return []
        learned, claimed = port.learned, dict(self.claimed)
        try:
            reason = self.check(packet, port_id)
        finally:
            port.learned, self.claimed = learned, claimed
        if reason is None:
            mode = "strict" if port.strict else "on"
            return [(f"passed (guard {mode})", "guard Rules 1-6" if port.strict
                     else "guard Rules 1-3")]
        return [describe(reason)]


#: What a guest may send from :: (RS, NS for DAD, MLD queries/reports/done, MLDv2 reports).
_FROM_UNSPECIFIED = frozenset({133, 135, 130, 131, 132, 143})


def _icmp6_at(packet: bytes) -> int | None:
    """Where an IPv6 packet's ICMPv6 message starts, its extension chain walked (None: not
    ICMPv6, a later fragment, or malformed)."""
    if packet[30] == 58:
        return 64
    if packet[30] in (6, 17):
        return None
    try:
        ip = decode_ipv6(packet, 24)
    except MalformedPacket:
        return None
    if ip.proto != 58 or (ip.fragment is not None and ip.fragment[1]):
        return None
    return ip.start


def describe(reason: str) -> tuple[str, str]:
    """The (text, rule) trace prints for a drop reason."""
    text, rule = REASONS.get(reason, (reason, "guard"))
    return f"dropped: {reason} ({text})", rule
