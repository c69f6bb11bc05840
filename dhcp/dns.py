"""The guests' DNS server: local names, a forwarder to upstream resolvers, and a cache (sans-I/O).

Rule 1 (local names): ``hosts`` maps lower-case names relative to ``domain`` ("web", or "a.b" for
        a.b.DOMAIN) to IPv4 addresses, ``hosts6`` to IPv6 addresses.  ``web.DOMAIN`` and the
        bare ``web`` get A and AAAA records (RFC 3596), ``5.122.168.192.in-addr.arpa`` and the
        ip6.arpa name of each IPv6 address a PTR to ``web.DOMAIN``; these answers are authoritative
        (AA) with TTL ``local_ttl`` (0 by default, as dnsmasq's local-ttl: leases change, so
        guests must not cache them).  Only class IN is answered locally.
Rule 2 (NXDOMAIN): an unknown name inside ``domain`` is NXDOMAIN, never forwarded.  An unknown bare
        single-label name asked for A, AAAA or ANY is NXDOMAIN too (dnsmasq's domain-needed: such
        names mean nothing upstream); a bare label asked for other types (DS, NS, SOA of a TLD) is
        forwarded.  A known name asked for another type is NOERROR with no answer (NODATA).
        With ``subnet`` (``subnet6``), reverse names of its addresses are local too (NXDOMAIN
        if unknown).
Rule 3 (forwarding): everything else goes to an upstream with a fresh random 16-bit ID drawn by
        the core (``rng``); the adapter sends each ``Forward`` from a fresh socket with a random
        source port and reports that port with ``sent_from``.  The core owns IDs, the adapter owns
        ports.
Rule 4 (anti-spoofing, CVE-2020-25684..25686): a reply is accepted only if its ID belongs to a
        pending query AND it came from that query's upstream address and port AND arrived on the
        port the query was sent from AND it is a response with the same question (name compared
        case-insensitively, type, class) whose name keeps the exact case we sent (Rule 11).
        Anything else is counted ``spoofed`` and ignored; the genuine reply is still accepted
        afterwards.
Rule 5 (merging): identical questions (same name, type, class, DNSSEC flags and transport) while one
        is pending are merged: one upstream query, each client answered with its own ID and its
        own spelling of the question.  This removes the birthday attack of CVE-2020-25686.
Rule 6 (bounds): at most ``max_pending`` forwarded questions (each with at most ``MAX_WAITERS``
        clients); beyond that the client gets SERVFAIL.  With the cache (``cache_size``, Rule 7)
        and the memo (``MEMO_SIZE``, Rule 10) every table is bounded: a flood of distinct names
        only churns them.  A pending query times out after ``timeout`` seconds, is re-sent once
        to the next upstream (new ID), and then answered SERVFAIL; new questions go first to the
        upstream that answered last.  Pending queries are kept in deadline order (``now`` never
        decreases and every deadline is ``now + timeout``), so the first is always the next to
        expire.
Rule 7 (cache): whole responses, scrubbed (Rule 12) and with TTLs limited (Rule 13), are cached
        under (lower-case name, type, class, DNSSEC flags), so records of one answer never answer
        another question (RFC 2181 5.4.1: additional and authority data never become answers).
        NOERROR with answers lives for the smallest answer TTL; NXDOMAIN and NODATA for the
        negative TTL of Rule 13, and without an SOA are not cached.  Truncated replies and other
        rcodes are not cached.  TTLs are decremented by the entry's age on every hit.  At most
        ``cache_size`` entries; eviction is least recently used (a hit moves the entry to the
        end; an expired entry is dropped when looked up, or reaches the front and goes first).
Rule 8 (sizes): a UDP answer fits min(client's EDNS0 size, ``MAX_UDP_PAYLOAD``), or 512 without
        EDNS0; a larger one is truncated with TC so the client retries over TCP (RFC 1035 4.2.1,
        RFC 6891 6.2.5), keeping whole RRsets only (RFC 2181 9; ``encode_message`` Rule 6).
        TCP answers are whole; the adapter frames them (``encode_tcp_frame``).
Rule 10 (answer memo): an answer given from local data or the cache is remembered as wire
        bytes under the query's own bytes less its ID (so the question's spelling, flags and
        EDNS options all match) for at most ``MEMO_SECONDS`` and never past the cache entry's
        expiry; a repeat is answered by patching in the new ID, without decoding anything.
        ``hosts_changed()`` forgets every memo.  TTLs served from a memo may be up to
        ``MEMO_SECONDS`` too high: the price of answering a hot name in microseconds.
Rule 9 (bad queries): a datagram shorter than a header, or whose QR bit says it is a response, is
        counted ``malformed`` and dropped; any other undecodable query is answered FORMERR with
        the header alone.  ``handle_query``, ``handle_reply`` and ``expire`` never raise on any
        input bytes.
Rule 11 (DNS 0x20, draft-vixie-dnsext-dns0x20): each attempt sent upstream flips the case of the
        question name's letters at random (``case_rng``, one bit per letter); the reply's question
        must carry exactly that spelling (RFC 4343 2: servers echo the question as sent), else it
        is forged: dropped, counted ``spoofed`` and ``case_mismatch``.  Owner names spelled as we
        sent them are put back into the forwarded query's own spelling, and every client gets its
        own question back.  ``case_rng=None`` turns it off (for an upstream that lowercases).
Rule 12 (bailiwick, RFC 2181 5.4.1, RFC 5452 6): the answer section keeps only records owned by
        the question name and the names of its CNAME chain (and DNAMEs above them); the zone is
        the deepest SOA or NS owner in the authority section above the chain's last name (without
        one, that name's parent); authority records are kept only inside that zone (its SOA and NS
        only for the zone itself), additional records only inside it.  What is removed is counted
        ``scrubbed`` and neither cached nor passed on: the additional section is optional (RFC
        2181 9), and a guest's own caching stub must not be fed what we would not trust.
Rule 13 (TTLs): every forwarded record's TTL is clamped to [``min_ttl``, ``max_ttl``] (defaults 0
        and 1 day, as unbound's cache-min-ttl and cache-max-ttl; a TTL with the top bit set is 0,
        RFC 2181 8); there is no floor by default because a TTL is the zone owner's (RFC 1035
        3.2.1: 0 means "do not cache").  A negative answer's SOA gets the negative TTL
        min(SOA TTL, MINIMUM) (RFC 2308 3, 5), clamped to [``min_ttl``, ``max_negative_ttl``]
        (15 minutes; RFC 2308 5 suggests 1-3 hours at most).  The guest sees the same TTLs the
        cache keeps.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from itertools import count
from typing import Any, Final

from wire.errors import MalformedPacket

from .dns_actions import Action, Address, Answer, DnsStats, Forward, Release, Transport
from .dnsmsg import (
    CLASS_IN,
    HEADER_SIZE,
    OPCODE_QUERY,
    RCODE_FORMERR,
    RCODE_NOERROR,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_ANY,
    TYPE_CNAME,
    TYPE_NS,
    TYPE_OPT,
    TYPE_PTR,
    TYPE_SOA,
    UDP_PAYLOAD_MIN,
    DnsMessage,
    Name,
    Question,
    ResourceRecord,
    a_record,
    aaaa_record,
    check_name,
    decode_message,
    encode_message,
    header_only_response,
    lower_name,
    name_from_text,
    opt_record,
    parse_reverse_name,
    parse_reverse_name6,
    ptr_record,
    read_name,
    soa_minimum,
)

Hosts = Mapping[str, IPv4Address | str]
#: Relative names -> their IPv6 addresses (static hosts, DHCPv6 leases, SLAAC addresses heard).
Hosts6 = Mapping[str, tuple[IPv6Address, ...]]

#: The largest UDP answer sent and the size advertised in our OPT records (DNS flag day 2020).
MAX_UDP_PAYLOAD: Final = 1232
#: The largest message over TCP (RFC 1035 4.2.2: a 2-octet length).
MAX_TCP_PAYLOAD: Final = 0xFFFF
#: Clients waiting on one pending question (Rule 5); more get SERVFAIL.
MAX_WAITERS: Final = 32
_ID_TRIES: Final = 16
MEMO_SECONDS: Final = 1.0
MEMO_SIZE: Final = 4096
_EDNS_BADVERS: Final = 1  # extended RCODE 16 = 1 << 4 | 0 (RFC 6891 6.1.3, 9)
_LOCAL_TYPES: Final = frozenset({TYPE_A, TYPE_AAAA, TYPE_ANY})
TYPE_DNAME: Final = 39
#: CNAMEs followed from the question name when scrubbing a reply (Rule 12).
MAX_CHAIN: Final = 16

# --- internal state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Client:
    """One client waiting for an answer, and what its answer must echo."""

    address: tuple[Any, ...]
    transport: Transport
    query_id: int
    question: Question
    rd: bool
    edns: int | None  # the client's EDNS0 payload size, None without OPT
    dnssec_ok: bool

    @property
    def limit(self) -> int:
        if self.transport == "tcp":
            return MAX_TCP_PAYLOAD
        return min(self.edns or UDP_PAYLOAD_MIN, MAX_UDP_PAYLOAD)


CacheKey = tuple[Name, int, int, bool]


@dataclass(slots=True)
class _Pending:
    key: int
    query_id: int
    upstream_index: int
    deadline: float
    cache_key: CacheKey
    transport: Transport
    query_tail: bytes  # the first client's query after its ID, forwarded as is
    clients: list[_Client]
    local_port: int | None = None
    retried: bool = False
    sent_name: Name = ()  # the question name of this attempt, in its 0x20 spelling (Rule 11)


@dataclass(frozen=True, slots=True)
class _Cached:
    response: DnsMessage
    stored: float
    expires: float


@dataclass(slots=True)
class _Tables:
    pending: dict[int, _Pending] = field(default_factory=dict)  # by key, in deadline order
    by_id: dict[int, _Pending] = field(default_factory=dict)
    by_question: dict[tuple[CacheKey, Transport], _Pending] = field(default_factory=dict)
    cache: dict[CacheKey, _Cached] = field(default_factory=dict)  # least recently used first


def _normal_address(address: tuple[Any, ...]) -> Address | None:
    """(ip, port) with the IP in canonical text, or None if it is not an IP address."""
    try:
        return str(ip_address(address[0])), int(address[1])
    except (ValueError, TypeError, IndexError):
        return None


class DnsResponder:
    """Answers guests' DNS queries: local names, cache, forwarding (see the module rules)."""

    def __init__(
        self,
        domain: str,
        hosts: Hosts | Callable[[], Hosts],
        upstreams: Sequence[Address] = (),
        *,
        subnet: IPv4Network | str | None = None,
        hosts6: Callable[[], Hosts6] | None = None,
        subnet6: IPv6Network | None = None,
        rng: Callable[[int], int] = secrets.randbelow,
        local_ttl: int = 0,
        timeout: float = 5.0,
        max_pending: int = 1024,
        cache_size: int = 10_000,
        max_ttl: int = 86_400,
        max_negative_ttl: int = 900,
        min_ttl: int = 0,
        case_rng: Callable[[int], int] | None = secrets.randbits,
    ) -> None:
        self.domain = lower_name(name_from_text(domain)) if domain.strip(".") else ()
        self._hosts = hosts
        self.upstreams: list[Address] = []
        for upstream in upstreams:
            normal = _normal_address(upstream)
            if normal is None:
                raise ValueError(f"upstream {upstream!r} is not an (ip, port) pair")
            self.upstreams.append(normal)
        self.subnet = None if subnet is None else IPv4Network(subnet)
        self._hosts6 = hosts6
        self.subnet6 = subnet6
        self._rng = rng
        self.local_ttl = local_ttl
        self.timeout = timeout
        self.max_pending = max_pending
        self.cache_size = cache_size
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.min_ttl = min_ttl
        self._case_rng = case_rng
        self.stats = DnsStats()
        self._t = _Tables()
        self._keys = count(1)
        # (transport, query bytes after the ID) -> (valid until, answer bytes after the ID)
        self._memo: dict[tuple[str, bytes], tuple[float, bytes]] = {}
        self._preferred = 0  # the upstream that answered last is asked first

    # --- queries from clients ---------------------------------------------------------------------

    def handle_query(
        self, data: bytes, client: tuple[Any, ...], transport: Transport, now: float
    ) -> list[Action]:
        """Answer one client query, or forward it.

        1. Read the header; drop what has none or is a response; FORMERR what does not decode,
           or has not exactly one question (Rule 9); NOTIMP for opcodes other than QUERY;
           BADVERS for EDNS versions other than 0.
        2. Local names (Rule 1, 2).
        3. The cache (Rule 7).
        4. No upstreams: REFUSED.
        5. Join an identical pending query (Rule 5), or forward a new one (Rule 3, 6).

        Raises ValueError only for a ``transport`` other than "udp" or "tcp".
        """
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
        self.stats.queries += 1
        # Step 1
        if len(data) < HEADER_SIZE or data[2] & 0x80:
            self.stats.malformed += 1
            return []
        memo_key = (transport, bytes(data[2:]))
        memo = self._memo.get(memo_key)
        if memo is not None and now < memo[0]:  # Rule 10
            self.stats.memo_hits += 1
            return [Answer(client, bytes(data[:2]) + memo[1], transport)]
        try:
            query = decode_message(data)
        except MalformedPacket:
            self.stats.malformed += 1
            return [Answer(client, header_only_response(data, RCODE_FORMERR), transport)]
        if query.opcode != OPCODE_QUERY:
            return [Answer(client, header_only_response(data, RCODE_NOTIMP), transport)]
        if len(query.questions) != 1:
            self.stats.malformed += 1
            return [Answer(client, header_only_response(data, RCODE_FORMERR), transport)]
        who = _Client(
            client, transport, query.id, query.questions[0], query.rd, query.edns_payload,
            query.dnssec_ok,
        )
        if query.edns_version not in (None, 0):
            return [self._answer(who, _response(ext_rcode=_EDNS_BADVERS))]
        # Step 2
        local = self._local(who.question)
        if local is not None:
            self.stats.local += 1
            return [self._remember(memo_key, self._answer(who, local), now + MEMO_SECONDS)]
        # Step 3
        key = (lower_name(who.question.name), who.question.qtype, who.question.qclass,
               query.dnssec_ok or query.cd)
        cached = self._cache_get(key, now)
        if cached is not None:
            self.stats.cache_hits += 1
            until = min(now + MEMO_SECONDS, self._t.cache[key].expires)
            return [self._remember(memo_key, self._answer(who, cached), until)]
        # Step 4
        if not self.upstreams:
            return [self._answer(who, _response(RCODE_REFUSED))]
        # Step 5
        pending = self._t.by_question.get((key, transport))
        if pending is not None:
            if any(c.address == client and c.query_id == query.id for c in pending.clients):
                return []  # the client re-sent the same query: it is already waiting
            if len(pending.clients) < MAX_WAITERS:
                pending.clients.append(who)
                self.stats.merged += 1
                return []
        if pending is not None or len(self._t.pending) >= self.max_pending:
            self.stats.pending_full += 1
            return [self._servfail(who)]
        pending = _Pending(key=0, query_id=0, upstream_index=self._preferred, deadline=0.0,
                           cache_key=key, transport=transport, query_tail=bytes(data[2:]),
                           clients=[who])
        forward = self._send(pending, now)
        if forward is None:
            self.stats.pending_full += 1
            return [self._servfail(who)]
        self._t.by_question[key, transport] = pending
        return [forward]

    def _remember(self, memo_key: tuple[str, bytes], answer: Answer, until: float) -> Answer:
        """Rule 10: keep ``answer``'s bytes after the ID for a repeat of the same query."""
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[memo_key] = (until, answer.payload[2:])
        return answer

    def hosts_changed(self) -> None:
        """The local names changed (a lease came or went): forget remembered answers."""
        self._memo.clear()

    def _local(self, question: Question) -> DnsMessage | None:
        """The authoritative answer for a local name (Rule 1, 2), or None to go on.

        1. A name inside the domain, or a bare single label: look up the relative name.
        2. A reverse name of a local address (or of ``subnet``): PTR.
        """
        if question.qclass != CLASS_IN:
            return None
        name = lower_name(question.name)
        # Step 1
        d = len(self.domain)
        in_domain = d > 0 and len(name) >= d and name[len(name) - d :] == self.domain
        if in_domain or len(name) == 1:
            relative = name[: len(name) - d] if in_domain else name
            if not relative:
                return _response(aa=True)  # the domain itself: NODATA
            address = _lookup(self._host_map(), relative)
            six = self._lookup6(relative)
            if address is None and not six:
                if not in_domain and question.qtype not in _LOCAL_TYPES:
                    return None  # a bare TLD question (DS, NS, SOA) goes upstream
                return _response(RCODE_NXDOMAIN, aa=True)
            answers = []
            if address is not None and question.qtype in (TYPE_A, TYPE_ANY):
                answers.append(a_record(question.name, address, self.local_ttl))
            if question.qtype in (TYPE_AAAA, TYPE_ANY):
                answers += [aaaa_record(question.name, a, self.local_ttl) for a in six]
            return _response(aa=True, answers=tuple(answers))  # none: NODATA
        # Step 2
        address = parse_reverse_name(name)
        if address is None:
            return self._reverse6(question, name)
        for host, value in self._host_map().items():
            target = self._fqdn(host) if _address(value) == address else None
            if target is not None:
                return self._ptr(question, target)
        if self.subnet is not None and address in self.subnet:
            return _response(RCODE_NXDOMAIN, aa=True)
        return None

    def _reverse6(self, question: Question, name: Name) -> DnsMessage | None:
        """Step 2 for an ip6.arpa name: a guest's IPv6 address, or NXDOMAIN in ``subnet6``."""
        address = parse_reverse_name6(name)
        if address is None:
            return None
        for host, values in self._host_map6().items():
            target = self._fqdn(host) if address in values else None
            if target is not None:
                return self._ptr(question, target)
        if self.subnet6 is not None and address in self.subnet6:
            return _response(RCODE_NXDOMAIN, aa=True)
        return None

    def _ptr(self, question: Question, target: Name) -> DnsMessage:
        if question.qtype not in (TYPE_PTR, TYPE_ANY):
            return _response(aa=True)
        return _response(aa=True, answers=(ptr_record(question.name, target, self.local_ttl),))

    def _lookup6(self, relative: Name) -> tuple[IPv6Address, ...]:
        if self._hosts6 is None or any(b"." in label for label in relative):
            return ()
        return tuple(self._host_map6().get(b".".join(relative).decode("ascii", "replace"), ()))

    def _host_map6(self) -> Hosts6:
        return {} if self._hosts6 is None else self._hosts6()

    def _host_map(self) -> Hosts:
        return self._hosts() if callable(self._hosts) else self._hosts

    def _fqdn(self, host: str) -> Name | None:
        """``host`` (relative) in the local domain, or None if that is not a valid name."""
        try:
            name = name_from_text(host) + self.domain
            check_name(name)
        except ValueError:
            return None
        return name

    # --- replies from upstream --------------------------------------------------------------------

    def sent_from(self, key: int, local_port: int) -> None:
        """Record the source port the adapter sent attempt ``key`` from (Rule 3, 4).

        Call it right after sending a ``Forward``; replies for an attempt whose port was never
        recorded are all rejected.  Unknown keys (already released) are ignored.
        """
        pending = self._t.pending.get(key)
        if pending is not None:
            pending.local_port = local_port

    def handle_reply(
        self, data: bytes, server: tuple[Any, ...], local_port: int, now: float
    ) -> list[Action]:
        """Take a datagram (or TCP message) from an upstream resolver.

        1. Match the ID, server address and port, and local port (Rule 4), before decoding.
        2. Decode; it must be a response to the same question (Rule 4), in our 0x20 spelling
           (Rule 11).
        3. Release the attempt; restore the spelling (Rule 11), scrub (Rule 12), limit TTLs
           (Rule 13); cache the response (Rule 7), answer every waiting client.
        """
        # Step 1
        if len(data) < HEADER_SIZE:
            self.stats.malformed += 1
            return []
        pending = self._t.by_id.get(int.from_bytes(data[:2], "big"))
        if (
            pending is None
            or _normal_address(server) != self.upstreams[pending.upstream_index]
            or pending.local_port is None
            or local_port != pending.local_port
        ):
            self.stats.spoofed += 1
            return []
        # Step 2
        try:
            reply = decode_message(data)
        except MalformedPacket:
            self.stats.malformed += 1
            return []
        if (
            not reply.qr
            or reply.opcode != OPCODE_QUERY
            or len(reply.questions) != 1
            or _question_key(reply.questions[0]) != pending.cache_key[:3]
        ):
            self.stats.spoofed += 1
            return []
        if self._case_rng is not None and reply.questions[0].name != pending.sent_name:
            self.stats.spoofed += 1
            self.stats.case_mismatch += 1
            return []
        # Step 3
        self._forget(pending)
        self._preferred = pending.upstream_index
        reply = _respell(reply, pending.sent_name, pending.clients[0].question.name)
        reply, removed = _scrub(reply, pending.cache_key[0])
        self.stats.scrubbed += removed
        reply = self._limit_ttls(reply)
        self._cache_put(pending.cache_key, reply, now)
        template = replace(reply, aa=False)
        actions: list[Action] = [Release(pending.key)]
        actions += [self._answer(who, template) for who in pending.clients]
        return actions

    # --- timers -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the oldest pending query times out (Rule 6), or None with nothing pending."""
        first = next(iter(self._t.pending.values()), None)
        return None if first is None else first.deadline

    def expire(self, now: float) -> list[Action]:
        """Retry or fail the pending queries whose deadline has passed (Rule 6).

        1. Release the timed-out attempt.
        2. First timeout: send the question again to the next upstream with a new ID.
        3. Second timeout (or no free ID): answer SERVFAIL to every waiting client.
        """
        actions: list[Action] = []
        while self._t.pending:
            pending = next(iter(self._t.pending.values()))
            if pending.deadline > now:
                break
            # Step 1
            self.stats.timeouts += 1
            self._forget(pending)
            actions.append(Release(pending.key))
            # Step 2
            if not pending.retried:
                pending.retried = True
                pending.upstream_index = (pending.upstream_index + 1) % len(self.upstreams)
                forward = self._send(pending, now)
                if forward is not None:
                    self._t.by_question[pending.cache_key, pending.transport] = pending
                    actions.append(forward)
                    continue
            # Step 3
            actions += [self._servfail(who) for who in pending.clients]
        return actions

    # --- helpers ----------------------------------------------------------------------------------

    def _send(self, pending: _Pending, now: float) -> Forward | None:
        """Give ``pending`` a fresh key and unused random ID and register it; None if no ID."""
        for _ in range(_ID_TRIES):
            query_id = self._rng(0x10000)
            if query_id not in self._t.by_id:
                break
        else:
            return None
        pending.key = next(self._keys)
        pending.query_id = query_id
        pending.deadline = now + self.timeout
        pending.local_port = None
        self._t.pending[pending.key] = pending
        self._t.by_id[query_id] = pending
        self.stats.forwarded += 1
        tail, pending.sent_name = self._mix_case(pending.query_tail,
                                                 pending.clients[0].question.name)
        payload = query_id.to_bytes(2, "big") + tail
        upstream = self.upstreams[pending.upstream_index]
        return Forward(upstream, payload, query_id, pending.key, pending.transport)

    def _mix_case(self, tail: bytes, name: Name) -> tuple[bytes, Name]:
        """``tail`` (a query after its ID) with the question name's letters flipped at random,
        and the name so spelled (Rule 11); unchanged if 0x20 is off or the name is compressed."""
        if self._case_rng is None:
            return tail, name
        letters = sum(_is_letter(c) for label in name for c in label)
        mask = self._case_rng(letters) if letters else 0
        out = bytearray(tail)
        pos = HEADER_SIZE - 2
        labels = []
        for label in name:
            if pos >= len(out) or out[pos] != len(label):
                return tail, name  # a compression pointer: leave the query as it came
            start = pos + 1
            for i in range(start, start + len(label)):
                if _is_letter(out[i]):
                    out[i] ^= 0x20 * (mask & 1)
                    mask >>= 1
            pos = start + len(label)
            labels.append(bytes(out[start:pos]))
        if pos >= len(out) or out[pos] != 0:
            return tail, name
        return bytes(out), tuple(labels)

    def _limit_ttls(self, reply: DnsMessage) -> DnsMessage:
        """``reply`` with every TTL within Rule 13's bounds, a negative answer's SOA at the
        negative TTL."""
        negative = reply.rcode == RCODE_NXDOMAIN or (reply.rcode == RCODE_NOERROR
                                                     and not reply.answers)

        def limit(rr: ResourceRecord, section: str) -> ResourceRecord:
            if rr.rtype == TYPE_OPT:
                return rr
            ttl, ceiling = _ttl(rr), self.max_ttl
            if negative and section == "authority" and rr.rtype == TYPE_SOA:
                ceiling = self.max_negative_ttl
                try:
                    ttl = min(ttl, soa_minimum(rr))
                except ValueError:
                    pass
            ttl = max(min(ttl, ceiling), self.min_ttl)
            return rr if ttl == rr.ttl else replace(rr, ttl=ttl)

        return replace(
            reply,
            answers=tuple(limit(r, "answers") for r in reply.answers),
            authority=tuple(limit(r, "authority") for r in reply.authority),
            additional=tuple(limit(r, "additional") for r in reply.additional),
        )

    def _forget(self, pending: _Pending) -> None:
        del self._t.pending[pending.key]
        del self._t.by_id[pending.query_id]
        self._t.by_question.pop((pending.cache_key, pending.transport), None)

    def _answer(self, who: _Client, template: DnsMessage) -> Answer:
        """``template`` addressed to ``who``: its ID, its question, its RD, our OPT if it sent
        one (RFC 6891 7), truncated to its size (Rule 8)."""
        ext_rcode = 0 if template.opt is None else template.opt.ttl >> 24
        additional = tuple(r for r in template.additional if r.rtype != TYPE_OPT)
        if who.edns is not None:
            additional += (opt_record(MAX_UDP_PAYLOAD, who.dnssec_ok, ext_rcode),)
        message = replace(template, id=who.query_id, qr=True, rd=who.rd, ra=bool(self.upstreams),
                          questions=(who.question,), additional=additional)
        return Answer(who.address, encode_message(message, who.limit), who.transport)

    def _servfail(self, who: _Client) -> Answer:
        self.stats.servfail += 1
        return self._answer(who, _response(RCODE_SERVFAIL))

    def _cache_get(self, key: CacheKey, now: float) -> DnsMessage | None:
        """The cached response with TTLs decremented by its age, or None (Rule 7)."""
        entry = self._t.cache.pop(key, None)
        if entry is None or now >= entry.expires:
            return None
        self._t.cache[key] = entry  # most recently used goes last
        age = int(now - entry.stored)

        def aged(records: tuple[ResourceRecord, ...]) -> tuple[ResourceRecord, ...]:
            return tuple(r if r.rtype == TYPE_OPT else replace(r, ttl=max(0, _ttl(r) - age))
                         for r in records)

        r = entry.response
        return replace(r, aa=False, answers=aged(r.answers),
                       authority=aged(r.authority), additional=aged(r.additional))

    def _cache_put(self, key: CacheKey, reply: DnsMessage, now: float) -> None:
        """Store ``reply`` for as long as Rule 7 allows."""
        if reply.tc or self.cache_size <= 0:
            return
        if reply.rcode == RCODE_NOERROR and reply.answers:
            ttl = min(min(_ttl(r) for r in reply.answers), self.max_ttl)
        elif reply.rcode in (RCODE_NOERROR, RCODE_NXDOMAIN):
            soa = next((r for r in reply.authority if r.rtype == TYPE_SOA), None)
            if soa is None:
                return
            ttl = min(_ttl(soa), self.max_negative_ttl)  # Rule 13 set it to the negative TTL
        else:
            return
        if ttl <= 0:
            return
        self._t.cache.pop(key, None)
        while len(self._t.cache) >= self.cache_size:
            del self._t.cache[next(iter(self._t.cache))]
        self._t.cache[key] = _Cached(reply, now, now + ttl)

    def cache_size_now(self) -> int:
        """Entries in the cache (some may be expired and not yet dropped)."""
        return len(self._t.cache)

    def pending_count(self) -> int:
        """Questions waiting for an upstream reply."""
        return len(self._t.pending)


def _is_letter(c: int) -> bool:
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _under(name: Name, zone: Name) -> bool:
    """``name`` (lower case) is ``zone`` or below it."""
    return len(name) >= len(zone) and name[len(name) - len(zone) :] == zone


def _respell(reply: DnsMessage, sent: Name, original: Name) -> DnsMessage:
    """Owner names spelled as our 0x20 question go back to the forwarded query's spelling."""
    if sent == original:
        return reply

    def fix(records: tuple[ResourceRecord, ...]) -> tuple[ResourceRecord, ...]:
        return tuple(replace(r, name=original) if r.name == sent else r for r in records)

    return replace(reply, answers=fix(reply.answers), authority=fix(reply.authority),
                   additional=fix(reply.additional))


def _scrub(reply: DnsMessage, qname: Name) -> tuple[DnsMessage, int]:
    """``reply`` with only the in-bailiwick records of Rule 12, and how many were removed.

    1. Follow the CNAME chain from ``qname`` (lower case) through the answer section.
    2. Keep answer records owned by a chain name, and DNAMEs owned above one.
    3. The zone: the deepest SOA or NS owner at or above the chain's last name, else its parent.
    4. Keep authority records inside the zone (SOA and NS only at or above the last name), and
       additional records inside the zone; the OPT record always.
    """
    # Step 1
    chain = [qname]
    while len(chain) <= MAX_CHAIN:
        target = None
        for r in reply.answers:
            if r.rtype == TYPE_CNAME and lower_name(r.name) == chain[-1]:
                try:
                    target = lower_name(read_name(r.rdata))
                except MalformedPacket:
                    pass
                break
        if target is None or target in chain:
            break
        chain.append(target)
    # Step 2
    names = set(chain)
    answers = tuple(
        r for r in reply.answers
        if lower_name(r.name) in names
        or (r.rtype == TYPE_DNAME and any(_under(c, lower_name(r.name)) for c in chain))
    )
    # Step 3
    last = chain[-1]
    apexes = [lower_name(r.name) for r in reply.authority
              if r.rtype in (TYPE_SOA, TYPE_NS) and _under(last, lower_name(r.name))]
    zone = max(apexes, key=len) if apexes else last[1:]
    # Step 4
    authority = tuple(
        r for r in reply.authority
        if _under(lower_name(r.name), zone)
        and (r.rtype not in (TYPE_SOA, TYPE_NS) or _under(last, lower_name(r.name)))
    )
    additional = tuple(r for r in reply.additional
                       if r.rtype == TYPE_OPT or _under(lower_name(r.name), zone))
    removed = (len(reply.answers) - len(answers) + len(reply.authority) - len(authority)
               + len(reply.additional) - len(additional))
    if not removed:
        return reply, 0
    return replace(reply, answers=answers, authority=authority, additional=additional), removed


def _question_key(q: Question) -> tuple[Name, int, int]:
    return lower_name(q.name), q.qtype, q.qclass


def _ttl(rr: ResourceRecord) -> int:
    """A record's TTL; one with the top bit set counts as 0 (RFC 2181 8)."""
    return 0 if rr.ttl & 0x80000000 else rr.ttl


def _address(value: IPv4Address | str) -> IPv4Address | None:
    try:
        return IPv4Address(value)
    except ValueError:
        return None


def _lookup(hosts: Hosts, relative: Name) -> IPv4Address | None:
    """The address of a relative name in ``hosts`` (Rule 1), or None."""
    if any(b"." in label for label in relative):
        return None
    value = hosts.get(b".".join(relative).decode("ascii", "replace"))
    return None if value is None else _address(value)


def _response(
    rcode: int = RCODE_NOERROR,
    *,
    aa: bool = False,
    answers: tuple[ResourceRecord, ...] = (),
    ext_rcode: int = 0,
) -> DnsMessage:
    """A response template; ``DnsResponder._answer`` fills in the client's ID and question."""
    additional = (opt_record(MAX_UDP_PAYLOAD, ext_rcode=ext_rcode),) if ext_rcode else ()
    return DnsMessage(id=0, qr=True, aa=aa, rcode=rcode, answers=answers,
                      additional=additional)

