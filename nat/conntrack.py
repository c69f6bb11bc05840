"""Connection tracking and port mappings for the NAT router (sans-I/O: tuples and ``now`` in).

Rule 1: a flow is known by two 5-tuples ``(proto, src, sport, dst, dport)``: its *original*
        tuple (its first packet) and its *reply* tuple (what the answers carry on the wire), as
        ``conntrack -L`` shows them.  Each tuple is a key in the table of the side its packets
        arrive from (``inside``: guests, ``outside``: the external network), both keys point at
        one ``Entry``, so a packet of a known flow costs one dict lookup.  ICMP echo uses its
        identifier as both ports, and so does ICMPv6 echo (protocol 58, ``nat.translate6``).
        Addresses are ``bytes`` (4, or 16 for NAT66).
Rule 2: mappings are endpoint-independent: a guest endpoint (proto, ip, port) gets one external
        port whatever the destination (RFC 4787 REQ-1, RFC 5382 REQ-1; ICMP identifiers too,
        RFC 7857 section 5).  The guest's own port is kept when it lies in the range and is free;
        otherwise the next free port of the range is taken.  A port is never lent to two
        endpoints (no port overloading: RFC 4787 REQ-3, RFC 5382 REQ-7).  A mapping lives while
        a flow uses it or a port forward holds it.
Rule 3: a packet from outside that matches no flow opens one only through a mapping: a port
        forward admits anyone; a guest's mapping admits anyone under endpoint-independent
        filtering, and only addresses the mapping has a live flow to under address-dependent
        filtering (RFC 4787 section 5 and REQ-8, RFC 5382 REQ-3).  Only a TCP SYN or a UDP
        datagram opens a flow from outside; other unsolicited packets are dropped silently
        (RFC 5382 REQ-4a: answering would disclose the guests), ICMP never opens one.
        The default is address-dependent: RFC 4787 REQ-8 recommends it when "a more stringent
        filtering behavior is most important".  A guest behind libvirt's MASQUERADE cannot be
        reached from hosts it never talked to, and a drop-in replacement should not widen that;
        peer-to-peer hole punching (both sides send first) still works.
        ``filtering="endpoint-independent"`` is the application-transparent choice.
Rule 4: hairpinning: a guest sending to the external address and a mapped port reaches the guest
        owning the port, from the sender's own mapping on the external address (RFC 4787 REQ-9
        and 9a, RFC 5382 REQ-8).  Hairpinned packets are not filtered: they come from us.
Rule 5: flows expire when idle (any packet, either way, refreshes: RFC 4787 REQ-6).  TCP follows
        RFC 7857 section 2, Figure 1 (from RFC 6146 3.5.2.2): a SYN each way is established
        (>= 2 h 4 min, RFC 5382 REQ-5), and so is a half-closed flow (one FIN); a SYN one way,
        FINs both ways or a RST are transitory (>= 4 min; RFC 7857 section 2.2 keeps a RST flow
        4 minutes, and any later segment other than a RST brings it back).  UDP >= 2 min
        (RFC 4787 REQ-5; 5 min by default as REQ-5c recommends), ICMP echo >= 60 s
        (RFC 5508 REQ-2).
Rule 6: no ICMP message refreshes, changes or deletes a flow (RFC 4787 REQ-12, RFC 5382 REQ-10,
        RFC 5508 REQ-6, RFC 7857 section 7): ``lookup`` for ICMP errors has no side effects.
Rule 7: at most ``max_entries`` flows.  A new flow in a full table first early-drops the oldest
        flow that never saw a reply (Linux's ``early_drop``); when every flow has had replies the
        new one is refused with ICMP 3/13 (RFC 5508 REQ-8).  Existing flows never suffer.
        Unlike Linux, the victim must be the new flow's guest's own or belong to a guest holding
        at least as many flows (among the ``EARLY_DROP_SCAN`` oldest unreplied): a guest
        flooding the table never makes room by evicting a lighter guest's flows, while a light
        guest may take the room of a heavy one's unanswered attempts (Rule 9).
Rule 8: a port forward (DNAT) is a static mapping of its ports: it admits anyone and is also the
        guest endpoint's mapping for its own outbound flows.  Removing it stops new flows through
        it; flows already open keep their entries until they expire.
Rule 9: at most ``max_per_guest`` flows per guest address (a connlimit; IPv4 and IPv6
        addresses each have their own): a flow counts for the guest that opened it (snat,
        hairpin).  A flow opened from outside (dnat) counts for nobody: else whoever floods a
        guest's forward, another guest through the host included, would spend that guest's
        quota and cut it off; such flows are bounded by Rule 7, whose early drop takes them
        first when they go unanswered (they weigh as much as any guest).  A new flow over the
        quota is refused with the answer a full table gets (ICMP 3/13; ICMPv6 1/1 through
        ``nat.translate6``), counted ``drop:guest-quota``, unless it can take the place of one
        of the guest's own unreplied flows (Rule 7's early drop, among its own flows only):
        other guests' flows are never touched for it.  ``[nat] max_per_guest`` defaults to a
        quarter of ``max_entries`` (``vswitch.config``): one guest can never take the table
        from the others, and at the default size (65536) it is above what one guest's ports
        can hold toward one destination (Linux's 28232 ephemeral ports), so no ordinary guest
        meets it.

Memory: an entry is a slotted object whose two keys are the table keys themselves, plus a heap
timer; a mapping is shared by its flows.  A flow with a mapping of its own, counters past the
small-int cache and address-dependent filtering costs 0.78 KiB unreplied and 0.85 KiB replied
(tracemalloc; ``memory_per_entry`` reports 0.82 and 0.87 KiB): 1 M flows fit in 1 GiB.

``Fragments``, at the end, remembers the verdict of fragmented datagrams' first fragments for
their later fragments (virtual reassembly); ``nat.translate`` does the packet rewriting.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from nat.fragments import Fragments
from nat.mappings import Mapping, Mappings
from nat.verdicts import (
    FILTERED,
    GUEST_QUOTA,
    NO_MAPPING,
    NOT_SYN,
    PORTS_EXHAUSTED,
    TABLE_FULL,
    TUPLE_CLASH,
    Drop,
    Translation,
)
from wire.ipv6 import PROTO_ICMPV6
from wire.packets import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from wire.tcp import ACK, FIN, RST, SYN

#: (proto, source address, source port, destination address, destination port).
FlowKey = tuple[int, bytes, int, bytes, int]
Filtering = Literal["endpoint-independent", "address-dependent"]
#: The echo protocols, whose identifier is both ports (Rule 1): ICMP and ICMPv6.
_ECHO: Final = (PROTO_ICMP, PROTO_ICMPV6)

# What a TCP flow has seen, as bits of Entry.state (Rule 5).
_SYN_ORIGINAL: Final = 1
_SYN_REPLY: Final = 2
_FIN_ORIGINAL: Final = 4
_FIN_REPLY: Final = 8
_RST_SEEN: Final = 16

# Entry.kind: which table holds each key (Rule 1).
SNAT: Final = 0  # opened by a guest: original inside, reply outside
DNAT: Final = 1  # opened from outside: original outside, reply inside
HAIRPIN: Final = 2  # guest to guest through the external address: both inside
_KIND_NAMES: Final = ("snat", "dnat", "hairpin")

#: A dead entry's timer: no heap item has this time, so every item left for it is stale.
_DEAD: Final = -math.inf
#: How many of the oldest unreplied flows Rule 7 looks at for a victim (Linux looks at a
#: bounded number of entries too: NF_CT_EVICTION_RANGE).
EARLY_DROP_SCAN: Final = 64


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Idle timeouts in seconds (Rule 5); each may be configured."""

    tcp_established: float = 7440.0
    """Both SYNs seen, at most one FIN (RFC 5382 REQ-5: at least 2 h 4 min)."""
    tcp_transitory: float = 240.0
    """Opening, closed both ways, or reset (RFC 5382 REQ-5, RFC 7857 2.1: at least 4 min)."""
    udp: float = 300.0
    """UDP (RFC 4787 REQ-5: at least 2 min; 5 min recommended)."""
    icmp: float = 60.0
    """ICMP echo (RFC 5508 REQ-2: at least 60 s)."""
    fragments: float = 30.0
    """A fragmented datagram, from its first fragment seen (Linux's ipfrag_time)."""

    def __post_init__(self) -> None:
        if min(self.tcp_established, self.tcp_transitory, self.udp, self.icmp,
               self.fragments) <= 0:
            raise ValueError("every timeout must be > 0 seconds")


@dataclass(frozen=True, slots=True)
class Forward:
    """A port forward: ``ext_ports[i]`` on the external address goes to ``guest_port + i``."""

    proto: int
    """6 (TCP) or 17 (UDP)."""
    ext_ports: range
    """External ports, consecutive (one port is ``range(p, p + 1)``)."""
    guest_ip: bytes
    """The guest's address."""
    guest_port: int
    """Guest port of ``ext_ports[0]``."""


@dataclass(frozen=True, slots=True)
class ConntrackRow:
    """One flow as ``vswitch show conntrack`` prints it (like ``conntrack -L``)."""

    original: FlowKey
    """The tuple of the flow's first packet."""
    reply: FlowKey
    """The tuple its answers carry."""
    kind: str
    """"snat" (opened by a guest), "dnat" (opened from outside) or "hairpin"."""
    state: str
    """TCP: SYN_SENT, ESTABLISHED, FIN_WAIT, TIME_WAIT, CLOSE; others: UNREPLIED, REPLIED."""
    seconds_left: float
    """Idle time left before the flow expires."""
    packets_original: int
    """Packets seen in the original direction."""
    bytes_original: int
    """IP bytes seen in the original direction."""
    packets_reply: int
    """Packets seen in the reply direction."""
    bytes_reply: int
    """IP bytes seen in the reply direction."""


class Entry:
    """One tracked flow.  Mutable and slotted: the per-packet path updates it in place."""

    __slots__ = ("original", "reply", "kind", "mapping", "state", "seen", "timer",
                 "packets_original", "bytes_original", "packets_reply", "bytes_reply")

    def __init__(self, kind: int, original: Translation, reply: Translation, mapping: Mapping,
                 size: int, now: float) -> None:
        self.kind = kind
        self.original = original
        self.reply = reply
        self.mapping = mapping
        self.state = _SYN_ORIGINAL if original[0] == PROTO_TCP else 0
        self.seen = now
        self.timer = _DEAD
        self.packets_original = 1
        self.bytes_original = size
        self.packets_reply = 0
        self.bytes_reply = 0

    def __lt__(self, other: Entry) -> bool:
        return False  # heap items tie on time only; entries have no order of their own

    @property
    def remote(self) -> bytes:
        """The address the flow talks to beyond its mapping (Rule 3)."""
        return self.original[1] if self.kind == DNAT else self.original[3]


class Conntrack:
    def __init__(self, external_ip: bytes, port_range: tuple[int, int] = (1024, 65535),
                 timeouts: Timeouts = Timeouts(), max_entries: int = 262144,
                 filtering: Filtering = "address-dependent",
                 max_per_guest: int | None = None) -> None:
        """``max_per_guest``: Rule 9's quota (None: none but ``max_entries``)."""
        if len(external_ip) not in (4, 16):
            raise ValueError("external_ip must be 4 or 16 bytes")
        if not 1 <= port_range[0] <= port_range[1] <= 65535:
            raise ValueError(f"port_range {port_range} is not within 1-65535")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if filtering not in ("endpoint-independent", "address-dependent"):
            raise ValueError(f"filtering {filtering!r} is not endpoint- or address-dependent")
        self.external_ip = external_ip
        self.port_range = port_range
        self.timeouts = timeouts
        self.max_entries = max_entries
        self.max_per_guest = max_entries if max_per_guest is None else max_per_guest
        if self.max_per_guest < 1:
            raise ValueError("max_per_guest must be >= 1")
        #: Flows per guest address (Rule 9); a guest with none has no key.
        self.per_guest: dict[bytes, int] = {}
        self.filtering = filtering
        self.stats: Counter[str] = Counter()
        self.fragments = Fragments(timeouts.fragments)
        self._inside: dict[FlowKey, Entry] = {}
        self._outside: dict[FlowKey, Entry] = {}
        self._tables = {SNAT: (self._inside, self._outside), DNAT: (self._outside, self._inside),
                        HAIRPIN: (self._inside, self._inside)}
        self._count = 0
        # Mappings (Rule 2), and the forwards' static ones (Rule 8): nat.mappings.
        self.mappings = Mappings(port_range)
        # ICMPv6 echo identifiers are mapped as ICMP ones are: the whole 16 bits (Rule 2).
        self.mappings.by_port[PROTO_ICMPV6] = {}
        self.mappings.by_guest[PROTO_ICMPV6] = {}
        self.mappings.static[PROTO_ICMPV6] = {}
        self.mappings.ranges[PROTO_ICMPV6] = (0, 65535)
        self._address_dependent = filtering == "address-dependent"
        # Flows in the order they were made; the replied and the dead are skipped (Rule 7).
        self._unreplied: deque[Entry] = deque()
        self._timers: list[tuple[float, Entry]] = []  # heap; items go stale (see expire)
        self._forwards: list[Forward] = []
        self._idle = {PROTO_UDP: timeouts.udp, PROTO_ICMP: timeouts.icmp,
                      PROTO_ICMPV6: timeouts.icmp}
        self._tcp_idle = [_tcp_timeout(bits, timeouts) for bits in range(32)]

    def __len__(self) -> int:
        return self._count

    # --- the per-packet API ----------------------------------------------------------------

    def outbound(self, proto: int, src: bytes, sport: int, dst: bytes, dport: int,
                 tcp_flags: int, size: int, now: float) -> Translation | Drop:
        """A packet from a guest: the addresses and ports it leaves with, or why it may not.

        1. A known flow, either direction: count it, track TCP, refresh (the per-packet path).
        2. Only a SYN opens a TCP flow.
        3. To the external address: hairpin (Rule 4), to the mapping that owns ``dport``.
        4. The sender's quota (Rule 9); make room (Rule 7).
        5. Find or make the sender's mapping (Rule 2).
        6. Track the new flow under both tuples.
        """
        key = (proto, src, sport, dst, dport)
        # 1.
        entry = self._inside.get(key)
        if entry is not None:
            return self._seen(entry, key, tcp_flags, size, now)
        # 2.
        if proto == PROTO_TCP and tcp_flags & (SYN | ACK | RST | FIN) != SYN:
            return self._drop(NOT_SYN)
        # 3.
        by_port = self.mappings.by_port.get(proto)
        if by_port is None:
            return self._drop(NO_MAPPING)
        hairpin = dst == self.external_ip
        if hairpin and (proto in _ECHO or dport not in by_port):
            return self._drop(NO_MAPPING)
        # 4.
        refused = self._make_room(src)
        if refused is not None:
            return refused
        target = by_port.get(dport) if hairpin else None
        if hairpin and target is None:  # its last flow was just early-dropped
            return self._drop(NO_MAPPING)
        # 5.
        mapping = self.mappings.for_endpoint(proto, src, sport)
        if mapping is None:
            return self._drop(PORTS_EXHAUSTED)
        # 6.
        port = mapping.port
        if target is not None:
            reply = (proto, target.guest_ip, target.guest_port, self.external_ip, port)
            return self._create(HAIRPIN, key, reply, mapping, size, now)
        reply = (proto, dst, port if proto in _ECHO else dport, self.external_ip, port)
        return self._create(SNAT, key, reply, mapping, size, now)

    def inbound(self, proto: int, src: bytes, sport: int, dst: bytes, dport: int,
                tcp_flags: int, size: int, now: float) -> Translation | Drop:
        """A packet from outside to the external address: where it goes, or why it may not.

        1. A known flow, either direction: as ``outbound`` step 1.
        2. Only a TCP SYN or a UDP datagram opens a flow from outside (Rule 3).
        3. The mapping that owns ``dport``: a forward's or a guest's.
        4. Filtering (Rule 3).
        5. Make room (Rule 7; such a flow counts for no guest, Rule 9).
        6. Track the new flow: its reply tuple is the guest answering ``src``.
        """
        key = (proto, src, sport, dst, dport)
        # 1.
        entry = self._outside.get(key)
        if entry is not None:
            return self._seen(entry, key, tcp_flags, size, now)
        # 2.
        if proto == PROTO_TCP and tcp_flags & (SYN | ACK | RST | FIN) != SYN:
            return self._drop(NOT_SYN)
        if proto not in (PROTO_TCP, PROTO_UDP) or dst != self.external_ip:
            return self._drop(NO_MAPPING)
        # 3.
        by_port = self.mappings.by_port[proto]
        mapping = by_port.get(dport)
        if mapping is None:
            return self._drop(NO_MAPPING)
        # 4.
        if not mapping.static and self._address_dependent and not mapping.has_flow_to(src):
            return self._drop(FILTERED)
        # 5.
        refused = self._make_room(None)  # from outside: no guest's quota (Rule 9)
        if refused is not None:
            return refused
        if by_port.get(dport) is not mapping:  # its last flow was just early-dropped
            return self._drop(NO_MAPPING)
        # 6.
        reply = (proto, mapping.guest_ip, mapping.guest_port, src, sport)
        return self._create(DNAT, key, reply, mapping, size, now)

    def lookup(self, key: FlowKey, from_outside: bool) -> Translation | None:
        """The translation a packet with ``key`` would get, changing nothing (Rule 6)."""
        entry = (self._outside if from_outside else self._inside).get(key)
        if entry is None:
            return None
        return entry.reply if key == entry.original else entry.original

    def room(self, guest: bytes | None = None) -> str:
        """What a new flow (of ``guest``) would find (Rules 7 and 9), changing nothing: "free",
        "over-quota" (the guest holds its quota), "early-drop" (an unreplied flow would make
        room) or "full"."""
        at_quota = guest is not None and self.per_guest.get(guest, 0) >= self.max_per_guest
        if not at_quota and self._count < self.max_entries:
            return "free"
        if self._victim(guest, at_quota) is not None:
            return "early-drop"
        return "over-quota" if at_quota and self.max_per_guest < self.max_entries else "full"

    def _seen(self, entry: Entry, key: FlowKey, tcp_flags: int, size: int,
              now: float) -> Translation:
        if key == entry.original:
            entry.packets_original += 1
            entry.bytes_original += size
            translation = entry.reply
            original = True
        else:
            entry.packets_reply += 1
            entry.bytes_reply += size
            translation = entry.original
            original = False
        if key[0] == PROTO_TCP:
            self._track_tcp(entry, original, tcp_flags, now)
        entry.seen = now
        return translation

    def _track_tcp(self, entry: Entry, original: bool, flags: int, now: float) -> None:
        """RFC 7857 section 2, Figure 1, kept as the bits of what each direction has sent.

        1. A RST: the flow becomes transitory (RFC 7857 2.2).
        2. Any other segment after a RST brings it back (RFC 6146 3.5.2.2, TRANS state).
        3. A SYN marks its direction; a fresh SYN from the originator of a closed flow reopens
           it (the tuple reused after TIME-WAIT, RFC 9293 3.6.1).
        4. A FIN marks its direction.
        5. When the timeout became shorter, arm a timer for it (``expire`` wakes only there).
        """
        old = entry.state
        if flags & RST:  # 1.
            new = old | _RST_SEEN
        else:
            new = old & ~_RST_SEEN  # 2.
            if flags & SYN:  # 3.
                if original and not flags & ACK and old & (_FIN_ORIGINAL | _FIN_REPLY | _RST_SEEN):
                    new = _SYN_ORIGINAL
                else:
                    new |= _SYN_ORIGINAL if original else _SYN_REPLY
            if flags & FIN:  # 4.
                new |= _FIN_ORIGINAL if original else _FIN_REPLY
        if new != old:
            entry.state = new
            deadline = now + self._tcp_idle[new]  # 5.
            if deadline < entry.timer:
                self._arm(entry, deadline)

    # --- making and removing flows -----------------------------------------------------------

    def _make_room(self, guest: bytes | None) -> Drop | None:
        """Rules 7 and 9: below the limit and the guest's quota, nothing to do; else early-drop
        the oldest unreplied flow that ``guest`` may take the place of (its own only, at its
        quota)."""
        at_quota = guest is not None and self.per_guest.get(guest, 0) >= self.max_per_guest
        if not at_quota and self._count < self.max_entries:
            return None
        victim = self._victim(guest, at_quota)
        if victim is None:
            quota = at_quota and self.max_per_guest < self.max_entries
            return self._drop(GUEST_QUOTA if quota else TABLE_FULL)
        self._delete(victim)
        self.stats["early-drop"] += 1
        return None

    def _victim(self, guest: bytes | None, own: bool = False) -> Entry | None:
        """Rule 7's victim for a new flow of ``guest``: among the ``EARLY_DROP_SCAN`` oldest
        unreplied flows, the first that is ``guest``'s own or (unless ``own``) one opened from
        outside or whose guest holds at least as many flows (replied and dead ones at the front
        are dropped from the queue first)."""
        queue = self._unreplied
        while queue and (queue[0].timer == _DEAD or queue[0].packets_reply):
            queue.popleft()
        held = self.per_guest.get(guest, 0) if guest is not None else 0
        for i, entry in enumerate(queue):
            if i >= EARLY_DROP_SCAN:
                break
            if entry.timer == _DEAD or entry.packets_reply:
                continue
            owner = _guest(entry)
            if owner == guest or not own and (owner is None or self.per_guest[owner] >= held):
                return entry
        return None

    def _create(self, kind: int, key: FlowKey, reply_key: FlowKey, mapping: Mapping,
                size: int, now: float) -> Translation | Drop:
        table_original, table_reply = self._tables[kind]
        if key in table_original or reply_key in table_reply or key == reply_key:
            if not mapping.flows and not mapping.static:
                self.mappings.release(mapping)
            return self._drop(TUPLE_CLASH)
        original, reply = Translation(*key), Translation(*reply_key)
        entry = Entry(kind, original, reply, mapping, size, now)
        table_original[original] = entry
        table_reply[reply] = entry
        mapping.flows += 1
        guest = _guest(entry)  # Rule 9
        if guest is not None:
            self.per_guest[guest] = self.per_guest.get(guest, 0) + 1
        if self._address_dependent:
            mapping.count_remote(entry.remote, +1)
        self._unreplied.append(entry)
        if len(self._unreplied) > 2 * self._count + 64:  # mostly replied or dead: sweep
            self._unreplied = deque(e for e in self._unreplied
                                    if e.timer != _DEAD and not e.packets_reply)
        self._count += 1
        self._arm(entry, now + self._timeout(entry))
        self.stats["created"] += 1
        return reply

    def _delete(self, entry: Entry) -> None:
        table_original, table_reply = self._tables[entry.kind]
        del table_original[entry.original]
        del table_reply[entry.reply]
        mapping = entry.mapping
        if self._address_dependent:
            mapping.count_remote(entry.remote, -1)
        mapping.flows -= 1
        if not mapping.flows and not mapping.static:
            self.mappings.release(mapping)
        guest = _guest(entry)  # Rule 9
        if guest is not None:
            left = self.per_guest[guest] - 1
            if left:
                self.per_guest[guest] = left
            else:
                del self.per_guest[guest]
        entry.timer = _DEAD
        self._count -= 1

    def _drop(self, drop: Drop) -> Drop:
        self.stats["drop:" + drop.reason] += 1
        return drop

    # --- port forwards (Rule 8) ----------------------------------------------------------------

    def add_forward(self, proto: int, ext_ports: range, guest_ip: bytes,
                    guest_port: int) -> Forward:
        """Forward ``ext_ports`` of the external address to ``guest_ip``, from ``guest_port``.

        1. Check: TCP or UDP, consecutive ports within 1-65535, no overlap with a forward.
        2. No port may be held by another guest endpoint's mapping (Rule 2).
        3. Each port becomes a static mapping (the endpoint's own mapping when it holds it).
        """
        # 1.
        if proto not in (PROTO_TCP, PROTO_UDP):
            raise ValueError("forwards are for TCP (6) or UDP (17)")
        if ext_ports.step != 1 or not ext_ports or ext_ports[0] < 1 or ext_ports[-1] > 65535:
            raise ValueError(f"external ports {ext_ports} are not consecutive within 1-65535")
        if not 1 <= guest_port <= 65536 - len(ext_ports):
            raise ValueError(f"guest ports from {guest_port} do not fit within 1-65535")
        for other in self._forwards:
            if other.proto == proto and set(other.ext_ports) & set(ext_ports):
                raise ValueError(f"ports {ext_ports} overlap the forward of {other.ext_ports}")
        # 2.
        by_port = self.mappings.by_port[proto]
        for i, port in enumerate(ext_ports):
            held = by_port.get(port)
            if held is not None and (held.guest_ip, held.guest_port) != (guest_ip, guest_port + i):
                raise ValueError(f"port {port} is mapped to another guest endpoint; retry once "
                                 "its flows have ended, or choose another port")
        # 3.
        for i, port in enumerate(ext_ports):
            mapping = by_port.get(port)
            if mapping is None:
                mapping = Mapping(proto, guest_ip, guest_port + i, port, static=True)
                self.mappings.hold(mapping)
            mapping.static = True
            self.mappings.static[proto].setdefault((guest_ip, guest_port + i), mapping)
        forward = Forward(proto, ext_ports, guest_ip, guest_port)
        self._forwards.append(forward)
        return forward

    def remove_forward(self, proto: int, ext_ports: range) -> Forward:
        """Remove the forward of exactly ``ext_ports``; its open flows go on (Rule 8).

        1. Each of its mappings turns dynamic: released now if unused, else kept by its flows.
        2. Another forward to the same guest endpoint becomes that endpoint's static mapping.
        """
        for forward in self._forwards:
            if forward.proto == proto and forward.ext_ports == ext_ports:
                break
        else:
            raise KeyError(f"no forward of {proto}/{ext_ports}")
        self._forwards.remove(forward)
        static = self.mappings.static[proto]
        for port in ext_ports:  # 1.
            mapping = self.mappings.by_port[proto][port]
            mapping.static = False
            endpoint = (mapping.guest_ip, mapping.guest_port)
            if static.get(endpoint) is mapping:
                del static[endpoint]
            if not mapping.flows:
                self.mappings.release(mapping)
            else:
                self.mappings.by_guest[proto].setdefault(endpoint, mapping)
        for other in self._forwards:  # 2.
            for i, port in enumerate(other.ext_ports if other.proto == proto else ()):
                static.setdefault((other.guest_ip, other.guest_port + i),
                                  self.mappings.by_port[proto][port])
        return forward

    def forwards(self) -> list[Forward]:
        return list(self._forwards)

    # --- timers (Rule 5) ---------------------------------------------------------------------

    def _timeout(self, entry: Entry) -> float:
        proto = entry.original[0]
        return self._tcp_idle[entry.state] if proto == PROTO_TCP else self._idle[proto]

    def _arm(self, entry: Entry, deadline: float) -> None:
        entry.timer = deadline
        heapq.heappush(self._timers, (deadline, entry))
        if len(self._timers) > 2 * self._count + 64:  # mostly stale items: rebuild
            self._timers = [(e.timer, e) for e in self._all_entries()]
            heapq.heapify(self._timers)

    def expire(self, now: float) -> int:
        """Remove the flows idle past their timeout; returns how many.

        A timer is a heap item (time, entry) pushed when the entry was made or its timeout got
        shorter; packets only move ``entry.seen``, so the per-packet path never touches the heap.
        1. Pop every item due by ``now``.
        2. Skip a stale one: the entry has been re-armed since, or is gone.
        3. An entry seen since the item was pushed is re-armed at its real deadline; any other
           is removed.
        """
        removed = 0
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, entry = heapq.heappop(timers)  # 1.
            if entry.timer != when:  # 2.
                continue
            deadline = entry.seen + self._timeout(entry)  # 3.
            if deadline > now:
                entry.timer = deadline
                heapq.heappush(timers, (deadline, entry))
            else:
                self._delete(entry)
                removed += 1
        self.stats["expired"] += removed
        self.fragments.expire(now)
        return removed

    def next_deadline(self) -> float | None:
        """When ``expire`` next removes something: stale timers on top of the heap are dropped
        and refreshed flows re-armed first (``expire`` steps 2 and 3), so the time is exact."""
        timers = self._timers
        while timers:
            when, entry = timers[0]
            if entry.timer != when:
                heapq.heappop(timers)
            elif (deadline := entry.seen + self._timeout(entry)) > when:
                entry.timer = deadline
                heapq.heapreplace(timers, (deadline, entry))
            else:
                break
        times = [timers[0][0]] if timers else []
        fragments = self.fragments.next_deadline()
        if fragments is not None:
            times.append(fragments)
        return min(times, default=None)

    # --- observing -----------------------------------------------------------------------------

    def _all_entries(self) -> Iterator[Entry]:
        for table in (self._inside, self._outside):
            for key, entry in table.items():
                if key is entry.original:
                    yield entry

    def entries(self, now: float) -> list[ConntrackRow]:
        """Every flow, for ``vswitch show conntrack``."""
        return [ConntrackRow(_plain(e.original), _plain(e.reply), _KIND_NAMES[e.kind],
                             _state_name(e), e.seen + self._timeout(e) - now,
                             e.packets_original, e.bytes_original, e.packets_reply,
                             e.bytes_reply)
                for e in self._all_entries()]

    def memory_per_entry(self, sample: int = 256) -> int:
        """Bytes one flow costs, measured: the deep ``sys.getsizeof`` of sampled entries (the
        entry, its two keys and their items, its share of its mapping and the mapping's keys)
        plus the size of every index (tables, timers, queue) divided by the number of flows."""
        if not self._count:
            return 0
        entries = [e for _, e in zip(range(sample), self._all_entries(), strict=False)]
        own = sum(_deep_size(e, self.external_ip) for e in entries) / len(entries)
        indexes: list[object] = [self._inside, self._outside, self._unreplied, self._timers]
        for tables in (self.mappings.by_port, self.mappings.by_guest, self.mappings.static):
            indexes.extend(tables.values())
        shared: float = sum(sys.getsizeof(index) for index in indexes)
        shared += sum(sys.getsizeof(item) for item in self._timers)
        return round(own + shared / self._count)


def _guest(entry: Entry) -> bytes | None:
    """The guest a flow counts for (Rule 9): the one that opened it; none for a dnat flow."""
    return None if entry.kind == DNAT else entry.original[1]


def _plain(key: Translation) -> FlowKey:
    return key[0], key[1], key[2], key[3], key[4]


def _tcp_timeout(bits: int, timeouts: Timeouts) -> float:
    """Established: a SYN each way, no RST, not FINs both ways (Rule 5); else transitory."""
    both_fins = _FIN_ORIGINAL | _FIN_REPLY
    if bits & _SYN_ORIGINAL and bits & _SYN_REPLY and not bits & _RST_SEEN \
            and bits & both_fins != both_fins:
        return timeouts.tcp_established
    return timeouts.tcp_transitory


def _state_name(entry: Entry) -> str:
    bits = entry.state
    if entry.original[0] != PROTO_TCP:
        return "REPLIED" if entry.packets_reply else "UNREPLIED"
    if bits & _RST_SEEN:
        return "CLOSE"
    if bits & _FIN_ORIGINAL and bits & _FIN_REPLY:
        return "TIME_WAIT"
    if bits & (_FIN_ORIGINAL | _FIN_REPLY):
        return "FIN_WAIT"
    return "ESTABLISHED" if bits & _SYN_REPLY else "SYN_SENT"


def _deep_size(entry: Entry, shared: object) -> float:
    """sys.getsizeof of an entry and what it holds, its mapping counted for its share; objects
    every entry shares (small ints, which CPython caches, and ``shared``) cost nothing."""
    seen = {id(shared)}
    total = 0.0
    stack: list[object] = [entry]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or (type(obj) is int and -5 <= obj <= 256):
            continue
        seen.add(id(obj))
        if isinstance(obj, Mapping):  # with its endpoint key (ip, port) and its port
            parts = sys.getsizeof(obj) + sys.getsizeof((b"", 0)) + sys.getsizeof(obj.port)
            total += parts / max(obj.flows, 1)
            continue
        total += sys.getsizeof(obj)
        if isinstance(obj, tuple):
            stack.extend(obj)
        elif isinstance(obj, Entry):
            stack.extend(getattr(obj, name) for name in obj.__slots__)
    return total
