"""A stateful DHCPv6 server for the guest network (RFC 8415), sans-I/O like the DHCPv4 one.

Rule 1: messages are a type, a 3-byte transaction id and options (code, length, data); options
        nest inside IA_NA and IAADDR.  An option overrunning its container, or a message
        without the options its type needs (RFC 8415 16: a client id; a server id only where
        one belongs, and then ours), is counted and dropped; nothing here raises but
        ``MalformedPacket`` from ``decode_message6``, which ``handle`` counts.
Rule 2: a client's binding is one IA_NA address per (DUID, IAID): its static host's ``ip6``
        (the host is matched by the MAC the message came from or the one in a DUID-LL/LLT),
        else the address it already holds, else the address it asks for in its IA_NA when
        that is free in ``range6``, else a pool address found from a hash of the DUID and
        IAID, so a client tends to get the same address again.
Rule 3: SOLICIT is answered with ADVERTISE holding the address for ``offer_time``, or, with
        Rapid Commit (RFC 8415 18.3.1), with REPLY and a binding.  REQUEST, RENEW and REBIND
        bind or extend; a RENEW or REBIND for an address that is not the client's gets it
        with lifetimes 0 (RFC 8415 18.3.4, 18.3.5).  RELEASE frees, DECLINE quarantines the
        address for ``decline_time`` (as DHCPv4 Rule 4), CONFIRM says whether the addresses
        are on this link, INFORMATION-REQUEST gets only the DNS options.
Rule 4: every REPLY and ADVERTISE carries our server id, the client's id, the DNS server (the
        gateway's address, RFC 3646) and the search domain.
Rule 5: leases live in a ``dhcp.leases.LeaseTable`` of their own (the IPv6 address as the
        integer key, the client key b"6" + DUID + IAID), so they share the lease journal with
        the DHCPv4 leases; at most ``max_leases`` dynamic ones (default the range's size,
        capped at 65536).
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from wire.errors import MalformedPacket
from wire.ipv6 import DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT, in_prefix, search_domain

from .leases import Lease, LeaseState, LeaseTable, hostname_label

SERVER_PORT6: Final = DHCP6_SERVER_PORT
CLIENT_PORT6: Final = DHCP6_CLIENT_PORT

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
INFORMATION_REQUEST: Final = 11
NAMES: Final = {SOLICIT: "SOLICIT", ADVERTISE: "ADVERTISE", REQUEST: "REQUEST",
                CONFIRM: "CONFIRM", RENEW: "RENEW", REBIND: "REBIND", REPLY: "REPLY",
                RELEASE: "RELEASE", DECLINE: "DECLINE", INFORMATION_REQUEST: "INFORMATION-REQUEST"}

OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ORO = 1, 2, 3, 5, 6
OPT_ELAPSED, OPT_STATUS, OPT_RAPID_COMMIT, OPT_DNS, OPT_DOMAINS = 8, 13, 14, 23, 24
OPT_FQDN: Final = 39
SUCCESS, UNSPEC_FAIL, NO_ADDRS, NO_BINDING, NOT_ON_LINK = 0, 1, 2, 3, 4

_OPTION: Final = struct.Struct("!HH")
_IA: Final = struct.Struct("!III")
_IAADDR: Final = struct.Struct("!16sII")
MAX_DYNAMIC: Final = 65536


def read_options(data: bytes) -> list[tuple[int, bytes]]:
    """Rule 1: the (code, data) of each option in ``data``."""
    options, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise MalformedPacket("DHCPv6 option header truncated")
        code, length = _OPTION.unpack_from(data, at)
        if at + 4 + length > len(data):
            raise MalformedPacket(f"DHCPv6 option {code} overruns its container")
        options.append((code, data[at + 4:at + 4 + length]))
        at += 4 + length
    return options


def option(code: int, data: bytes) -> bytes:
    return _OPTION.pack(code, len(data)) + data


@dataclass(frozen=True)
class Message6:
    kind: int
    transaction: bytes
    options: list[tuple[int, bytes]]

    def get(self, code: int) -> bytes | None:
        found = [d for c, d in self.options if c == code]
        if len(found) > 1 and code in (OPT_CLIENTID, OPT_SERVERID):
            raise MalformedPacket(f"DHCPv6 option {code} repeated")
        return found[0] if found else None

    def ia_nas(self) -> list[tuple[int, list[bytes]]]:
        """(IAID, addresses asked for) of each IA_NA."""
        out = []
        for code, data in self.options:
            if code != OPT_IA_NA:
                continue
            if len(data) < 12:
                raise MalformedPacket("IA_NA shorter than 12 bytes")
            iaid = _IA.unpack_from(data)[0]
            asked = [d[:16] for c, d in read_options(data[12:]) if c == OPT_IAADDR]
            if any(len(a) < 16 for a in asked):
                raise MalformedPacket("IAADDR shorter than an address")
            out.append((iaid, asked))
        return out


def decode_message6(data: bytes) -> Message6:
    if len(data) < 4:
        raise MalformedPacket("DHCPv6 message shorter than its header")
    return Message6(data[0], data[1:4], read_options(data[4:]))


class IaNa(NamedTuple):
    """An IA_NA option as read (RFC 8415 21.4), for the client (``dhcp.client6``)."""

    iaid: int
    t1: int
    t2: int
    addresses: list[tuple[bytes, int, int]]
    """(address, preferred lifetime, valid lifetime) of each IAADDR (RFC 8415 21.6)."""
    status: int | None
    """The IA's own status code (RFC 8415 21.13), None without one."""


def decode_ia_na(data: bytes) -> IaNa:
    """Rule 1: the body of an IA_NA option, with its IAADDR and status code options."""
    if len(data) < 12:
        raise MalformedPacket("IA_NA shorter than 12 bytes")
    iaid, t1, t2 = _IA.unpack_from(data)
    addresses, status = [], None
    for code, body in read_options(data[12:]):
        if code == OPT_IAADDR:
            if len(body) < _IAADDR.size:
                raise MalformedPacket("IAADDR shorter than 24 bytes")
            addresses.append(_IAADDR.unpack_from(body))
        elif code == OPT_STATUS:
            status = status_code(body)
    return IaNa(iaid, t1, t2, addresses, status)


def status_code(data: bytes) -> int:
    """The code of a Status Code option (RFC 8415 21.13); its message is for people."""
    if len(data) < 2:
        raise MalformedPacket("status code option shorter than 2 bytes")
    return int.from_bytes(data[:2], "big")


def ia_na_option(iaid: int, addresses: list[tuple[bytes, int, int]], status: bytes = b"",
                 t1: int = 0, t2: int = 0) -> bytes:
    """An IA_NA option: (address, preferred, valid) for each IAADDR, then ``status``."""
    inner = b"".join(option(OPT_IAADDR, _IAADDR.pack(a, preferred, valid))
                     for a, preferred, valid in addresses)
    return option(OPT_IA_NA, _IA.pack(iaid, t1, t2) + inner + status)


def duid_mac(duid: bytes) -> bytes | None:
    """The link-layer address in a DUID-LLT (type 1) or DUID-LL (type 3) for Ethernet."""
    if len(duid) == 14 and duid[:4] == b"\x00\x01\x00\x01":
        return duid[8:14]
    if len(duid) == 10 and duid[:4] == b"\x00\x03\x00\x01":
        return duid[4:10]
    return None


@dataclass(frozen=True)
class Dhcp6Config:
    server_mac: bytes
    dns_server: bytes
    """The gateway's IPv6 address: the DNS server guests are given."""
    first: int
    last: int
    """The range, as integers."""
    prefix: int
    prefix_len: int
    static: dict[bytes, int]
    """MAC -> static address."""
    domain: str = ""
    lease_time: int = 3600
    offer_time: float = 60.0
    decline_time: float = 600.0
    max_leases: int = 0


class Dhcp6Server:
    def __init__(self, config: Dhcp6Config, leases: Iterable[Lease] = ()) -> None:
        self.config = config
        self.duid = b"\x00\x03\x00\x01" + config.server_mac  # DUID-LL (RFC 8415 11.4)
        self.table = LeaseTable()
        for lease in leases:
            self.table.put(lease)
        self.counters: Counter[str] = Counter()
        size = config.last - config.first + 1
        self.max_leases = config.max_leases or min(size, MAX_DYNAMIC)
        self._static = set(config.static.values())
        #: Addresses whose lease was made, changed or removed since the adapter last looked
        #: (for the lease journal).
        self.dirty: set[int] = set()

    # -- receiving ---------------------------------------------------------------------------

    def handle(self, data: bytes, src_mac: bytes, now: float) -> bytes | None:
        """The answer to one message from a client, or None (Rule 1)."""
        try:
            msg = decode_message6(data)
            self._expire(now)
            client = msg.get(OPT_CLIENTID)
            server = msg.get(OPT_SERVERID)
            if msg.kind not in NAMES or msg.kind in (ADVERTISE, REPLY):
                self.counters["not-a-client-message"] += 1
                return None
            if client is None and msg.kind != INFORMATION_REQUEST:
                self.counters["no-client-id"] += 1
                return None
            if msg.kind in (SOLICIT, REBIND, CONFIRM) and server is not None:
                self.counters["server-id-not-allowed"] += 1
                return None
            if msg.kind in (REQUEST, RENEW, RELEASE, DECLINE) and server != self.duid:
                self.counters["not-our-server-id"] += 1
                return None
            if msg.kind == INFORMATION_REQUEST and server not in (None, self.duid):
                self.counters["not-our-server-id"] += 1
                return None
            self.counters[NAMES[msg.kind].lower()] += 1
            return self._answer(msg, client or b"", src_mac, now)
        except MalformedPacket as exc:
            self.counters[f"malformed: {exc}"] += 1
            return None

    def _answer(self, msg: Message6, client: bytes, mac: bytes, now: float) -> bytes:
        """Rule 3."""
        kind = msg.kind
        if kind == INFORMATION_REQUEST:
            return self._reply(REPLY, msg, b"")
        if kind == CONFIRM:
            prefix = self.config.prefix.to_bytes(16, "big")
            on_link = all(in_prefix(a, prefix, self.config.prefix_len)
                          for _, asked in msg.ia_nas() for a in asked)
            return self._reply(REPLY, msg, self._status(SUCCESS if on_link else NOT_ON_LINK))
        ias = b""
        for iaid, asked in msg.ia_nas():
            ias += self._ia(kind, msg, client, iaid, asked, mac, now)
        if kind in (RELEASE, DECLINE):
            return self._reply(REPLY, msg, ias + self._status(SUCCESS))
        rapid = kind == SOLICIT and msg.get(OPT_RAPID_COMMIT) is not None
        answer = REPLY if kind != SOLICIT or rapid else ADVERTISE
        return self._reply(answer, msg, ias + (option(OPT_RAPID_COMMIT, b"") if rapid else b""))

    def _ia(self, kind: int, msg: Message6, client: bytes, iaid: int, asked: list[bytes],
            mac: bytes, now: float) -> bytes:
        key = b"6" + client + struct.pack("!I", iaid)
        held = self.table.by_client(key)
        if kind == RELEASE:
            if held is not None and any(int.from_bytes(a, "big") == held.ip for a in asked):
                self.table.remove(held.ip)
                self.dirty.add(held.ip)
            return b""
        if kind == DECLINE:
            for declined in asked:
                lease = self.table.by_ip(int.from_bytes(declined, "big"))
                if lease is not None and lease.client == key:
                    self.table.put(Lease(lease.ip, b"", lease.mac, "",
                                         now + self.config.decline_time, LeaseState.DECLINED))
                    self.dirty.add(lease.ip)
            return b""
        if kind in (RENEW, REBIND) and held is not None and asked \
                and all(int.from_bytes(a, "big") != held.ip for a in asked):
            return self._ia_option(iaid, [(a, 0, 0) for a in asked])  # not yours: lifetimes 0
        if kind in (RENEW, REBIND) and held is None:
            if kind == RENEW:
                return self._ia_option(iaid, [], self._status(NO_BINDING))
            return self._ia_option(iaid, [(a, 0, 0) for a in asked])  # RFC 8415 18.3.5
        address = self.choose(key, asked, mac, msg)
        if address is None:
            return self._ia_option(iaid, [], self._status(NO_ADDRS))
        lease_time = self.config.lease_time
        if kind == SOLICIT and msg.get(OPT_RAPID_COMMIT) is None:
            state, until = LeaseState.OFFERED, now + self.config.offer_time
        else:
            state, until = LeaseState.BOUND, now + lease_time
        name = hostname_label(_fqdn_label(msg.get(OPT_FQDN)) or (held.hostname if held else ""))
        self.table.put(Lease(address, key, mac, name, until, state))
        self.dirty.add(address)
        if held is not None and held.ip != address:
            self.dirty.add(held.ip)
        return self._ia_option(iaid, [(address.to_bytes(16, "big"), lease_time, lease_time)],
                               t1=lease_time // 2, t2=lease_time * 4 // 5)

    # -- addresses (Rule 2) --------------------------------------------------------------------

    def choose(self, key: bytes, asked: list[bytes], mac: bytes, msg: Message6) -> int | None:
        """The address for this client's IA (Rule 2), changing nothing."""
        client = msg.get(OPT_CLIENTID) or b""
        static = self.config.static.get(mac) or self.config.static.get(duid_mac(client) or b"")
        if static is not None and self._usable(static, key, static=True):
            return static
        held = self.table.by_client(key)
        if held is not None and held.state is not LeaseState.DECLINED:
            return held.ip
        if not self._has_room():
            return None
        for asked_for in asked:
            wanted = int.from_bytes(asked_for, "big")
            if self.config.first <= wanted <= self.config.last and self._usable(wanted, key):
                return wanted
        size = self.config.last - self.config.first + 1
        start = zlib.crc32(key) % size
        for i in range(min(size, 4096)):  # bounded: a full range answers NoAddrsAvail
            candidate = self.config.first + (start + i) % size
            if self._usable(candidate, key):
                return candidate
        return None

    def _usable(self, ip: int, key: bytes, static: bool = False) -> bool:
        """Free, or this client's own; a static host's address only for that host."""
        held = self.table.by_ip(ip)
        if held is not None:
            return held.client == key
        return static or ip not in self._static

    def _has_room(self) -> bool:
        dynamic = sum(1 for lease in self.table if lease.ip not in self._static)
        return dynamic < self.max_leases

    def _expire(self, now: float) -> None:
        deadline = self.table.next_deadline()
        if deadline is not None and deadline <= now:
            self.expire(now)

    def expire(self, now: float) -> list[Lease]:
        gone = self.table.expire(now)
        self.dirty.update(lease.ip for lease in gone)
        return gone

    def leases(self) -> list[Lease]:
        return [lease for lease in self.table if lease.state is LeaseState.BOUND]

    # -- building (Rule 4) ----------------------------------------------------------------------

    def _reply(self, kind: int, msg: Message6, body: bytes) -> bytes:
        out = bytes([kind]) + msg.transaction + option(OPT_SERVERID, self.duid)
        client = msg.get(OPT_CLIENTID)
        if client is not None:
            out += option(OPT_CLIENTID, client)
        out += body + option(OPT_DNS, self.config.dns_server)
        if self.config.domain:
            out += option(OPT_DOMAINS, search_domain(self.config.domain))
        return out

    @staticmethod
    def _status(code: int) -> bytes:
        text = {SUCCESS: "ok", NO_ADDRS: "no addresses available", NO_BINDING: "no binding",
                NOT_ON_LINK: "not on this link"}.get(code, "")
        return option(OPT_STATUS, struct.pack("!H", code) + text.encode())

    @staticmethod
    def _ia_option(iaid: int, addresses: list[tuple[bytes, int, int]], status: bytes = b"",
                   t1: int = 0, t2: int = 0) -> bytes:
        return ia_na_option(iaid, addresses, status, t1, t2)


def _fqdn_label(data: bytes | None) -> str:
    """The first label of a Client FQDN option (RFC 4704): flags byte, then a DNS name."""
    if not data or len(data) < 3:
        return ""
    length = data[1]
    return data[2:2 + length].decode("ascii", "replace")
