"""The DHCPv4 server core (RFC 2131): a request's bytes in, replies and lease events out.

Rule 1: a client is known by its key: the client identifier (option 61) when it sends one, else
        htype + chaddr, which is the identifier most clients would send (RFC 2131 section 4.2,
        RFC 2132 section 9.14).  A client holds at most one address.
Rule 2: an address is given to a client only if it is usable for that client: in the range (or
        the client's static address), not the server's or router's address, not another host's
        static address, not quarantined after a DECLINE, not offered or bound to someone else.
Rule 3: the table holds at most ``max_leases`` dynamic entries (offers, bindings and quarantined
        addresses); static hosts come on top, so memory is bounded by ``max_leases`` plus the
        static list.  A DISCOVER from a new client when the table is full gets no offer (counted
        as ``pool_exhausted``).  An offer holds its address for ``offer_time`` (60 s) only, so a
        DISCOVER flood with random MACs holds the pool for at most that long (starvation).
Rule 4: a declined address is quarantined for ``decline_time``: 600 s by default, dnsmasq's
        DECLINE_BACKOFF (config.h); ISC Kea's decline-probation-period is 86400 s and busybox
        udhcpd's decline_time 3600 s.  A static host whose address is quarantined gets a pool
        address meanwhile, as with dnsmasq.
Rule 5: ``now`` is wall-clock time (``time.time()``), because lease ends are saved in the lease
        file (``dhcp.leases`` Rule 3).  Expiry that is due runs at the start of every ``handle``.
Rule 6: a request the server does not answer is counted in ``counters`` under its reason and
        changes nothing.  Bytes that are not a DHCP message raise ``MalformedPacket`` (the
        caller counts those).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

from .leases import (
    AddressDeclined,
    Lease,
    LeaseEvent,
    LeaseExpired,
    LeaseGranted,
    LeaseReleased,
    LeaseState,
    LeaseTable,
    hostname_label,
)
from .message import (
    BROADCAST_FLAG,
    ZERO_IP,
    DhcpMessage,
    MessageType,
    Op,
    Option,
    decode_message,
    encode_message,
    encode_u16,
    encode_u32,
)

SERVER_PORT: Final = 67
CLIENT_PORT: Final = 68
BROADCAST_IP: Final = b"\xff\xff\xff\xff"
BROADCAST_MAC: Final = b"\xff" * 6
OFFER_TIME: Final = 60.0
#: dnsmasq's floor for a lease time a client asks for (its minimum lease is 2 minutes).
MIN_LEASE_TIME: Final = 120
#: RFC 2131 4.1: every client takes 576-byte IP datagrams; less IP (20) and UDP (8) headers.
MIN_IP_DATAGRAM: Final = 576
IP_UDP_HEADERS: Final = 28
EVENT_QUEUE: Final = 4096


@dataclass(frozen=True, slots=True)
class StaticHost:
    """A dnsmasq ``dhcp-host``: this MAC always gets this address and name."""

    mac: bytes
    """The host's 6-byte Ethernet address (matched against chaddr)."""
    ip: int
    """Its address, inside the subnet (it need not be in the range)."""
    name: str
    """Its DNS label, "" for none; wins over the name the client sends."""


@dataclass(frozen=True, slots=True)
class DhcpConfig:
    """The server's settings; ``__post_init__`` rejects inconsistent ones with ValueError."""

    server_ip: int
    """The server's own address (option 54 and the reply source), inside the subnet."""
    network: int
    """The subnet's network address."""
    prefix: int
    """The subnet's prefix length (24 for 255.255.255.0)."""
    range_first: int
    """First address of the dynamic pool."""
    range_last: int
    """Last address of the dynamic pool (inclusive)."""
    lease_time: int = 3600
    """Lease duration in seconds; a client may ask for less, down to ``MIN_LEASE_TIME``."""
    router: int | None = None
    """The default gateway (option 3); None in isolated mode."""
    dns_servers: tuple[int, ...] = ()
    """Option 6, in order of preference."""
    domain: str | None = None
    """Option 15, the domain the guests' names live in."""
    mtu: int | None = None
    """Option 26, the interface MTU, sent when the client asks for it."""
    static_hosts: tuple[StaticHost, ...] = ()
    """Fixed MAC to address bindings."""
    authoritative: bool = False
    """NAK requests for addresses this server has no record of instead of staying silent."""
    max_leases: int | None = None
    """Cap on dynamic entries in the table (Rule 3); None means the pool size."""
    decline_time: float = 600.0
    """Seconds a declined address stays quarantined (Rule 4)."""
    offer_time: float = OFFER_TIME
    """Seconds an OFFER holds its address for the client's REQUEST."""

    def __post_init__(self) -> None:
        if not 0 <= self.prefix <= 30:
            raise ValueError(f"dhcp.prefix: {self.prefix} leaves no room for hosts")
        if self.network & ~self.mask & 0xFFFFFFFF:
            raise ValueError(f"dhcp.network: {_dotted(self.network)} has host bits set")
        named = [("server_ip", self.server_ip), ("range_first", self.range_first),
                 ("range_last", self.range_last)]
        named += [("router", self.router)] if self.router is not None else []
        named += [(f"static_hosts[{i}].ip", h.ip) for i, h in enumerate(self.static_hosts)]
        for key, ip in named:
            if not self.is_host(ip):
                raise ValueError(f"dhcp.{key}: {_dotted(ip)} is not a host address of the subnet")
        if self.range_first > self.range_last:
            raise ValueError("dhcp.range: first address is after the last")
        if not 0 < self.lease_time < 0xFFFFFFFF:
            raise ValueError(f"dhcp.lease_time: {self.lease_time} is not 1..4294967294 seconds")
        if self.max_leases is not None and self.max_leases < 1:
            raise ValueError("dhcp.max_leases: must be at least 1")
        if self.mtu is not None and not 68 <= self.mtu <= 0xFFFF:
            raise ValueError(f"dhcp.mtu: {self.mtu} is not 68..65535 (RFC 2132 5.1)")
        if self.decline_time <= 0 or self.offer_time <= 0:
            raise ValueError("dhcp.decline_time and offer_time must be positive")
        if any(not 0 <= ip <= 0xFFFFFFFF for ip in self.dns_servers):
            raise ValueError("dhcp.dns_servers: not IPv4 addresses")
        if self.domain is not None and not (self.domain.isascii() and len(self.domain) <= 253):
            raise ValueError(f"dhcp.domain: {self.domain!r} is not an ASCII domain name")
        for i, host in enumerate(self.static_hosts):
            if host.name != hostname_label(host.name):
                raise ValueError(f"dhcp.static_hosts[{i}].name: {host.name!r} is not a DNS label")
            if host.ip in (self.server_ip, self.router):
                raise ValueError(f"dhcp.static_hosts[{i}].ip: the server's or router's address")
        macs = [h.mac for h in self.static_hosts]
        ips = [h.ip for h in self.static_hosts]
        if any(len(m) != 6 for m in macs) or len(set(macs)) != len(macs) \
                or len(set(ips)) != len(ips):
            raise ValueError("dhcp.static_hosts: MACs must be 6 bytes and MACs and IPs unique")

    @property
    def mask(self) -> int:
        return (0xFFFFFFFF << (32 - self.prefix)) & 0xFFFFFFFF

    @property
    def broadcast(self) -> int:
        return self.network | (~self.mask & 0xFFFFFFFF)

    def in_subnet(self, ip: int) -> bool:
        return ip & self.mask == self.network

    def is_host(self, ip: int) -> bool:
        return self.in_subnet(ip) and ip not in (self.network, self.broadcast)


@dataclass(frozen=True, slots=True)
class Reply:
    """One datagram to send from the server's port 67."""

    payload: bytes
    """The encoded DHCP message (the UDP payload)."""
    dst_ip: bytes
    """Destination IPv4 address, 4 bytes (255.255.255.255 when broadcast)."""
    dst_mac: bytes
    """Destination Ethernet address, 6 bytes (ff:ff:ff:ff:ff:ff when broadcast)."""
    dst_port: int
    """68 to a client; 67 to a relay agent (RFC 2131 4.1)."""
    broadcast: bool
    """Sent to the limited broadcast address."""

    @property
    def to_relay(self) -> bool:
        """The reply goes to the relay agent in giaddr, which passes it on to the client."""
        return self.dst_port == SERVER_PORT


@dataclass(frozen=True, slots=True)
class _Request:
    msg: DhcpMessage
    client: bytes
    src_mac: bytes
    src_ip: bytes
    now: float


def client_key(msg: DhcpMessage) -> bytes:
    """Rule 1: the client identifier, else htype + chaddr (which is what option 61 would hold)."""
    return msg.client_id() or bytes((msg.htype,)) + msg.chaddr


class DhcpServer:
    def __init__(self, config: DhcpConfig, leases: Iterable[Lease] = ()) -> None:
        self.config = config
        self.table = LeaseTable()
        self.counters: Counter[str] = Counter()
        self._events: deque[LeaseEvent] = deque(maxlen=EVENT_QUEUE)
        self._server_id = _packed(config.server_ip)
        self._static_by_mac = {h.mac: h for h in config.static_hosts}
        self._static_by_ip = {h.ip: h for h in config.static_hosts}
        reserved = {config.server_ip, config.router, *self._static_by_ip}
        self._pool = [ip for ip in range(config.range_first, config.range_last + 1)
                      if ip not in reserved]
        self._pool_set = frozenset(self._pool)
        self.max_leases = config.max_leases or len(self._pool)
        self._dispatch: dict[int, Callable[[_Request], Reply | None]] = {
            MessageType.DISCOVER: self.handle_discover,
            MessageType.REQUEST: self.handle_request,
            MessageType.DECLINE: self.handle_decline,
            MessageType.RELEASE: self.handle_release,
            MessageType.INFORM: self.handle_inform,
        }
        for lease in leases:
            self._restore(lease)

    def _restore(self, lease: Lease) -> None:
        """Take a lease from the file if it still fits the configuration (Rules 2 and 3)."""
        static = self._static_by_ip.get(lease.ip)
        if static is not None:
            fits = static.mac == lease.mac or lease.state is LeaseState.DECLINED
        else:
            fits = lease.ip in self._pool_set and self._dynamic_count() < self.max_leases
        if fits and lease.state is not LeaseState.OFFERED and self.table.by_ip(lease.ip) is None:
            self.table.put(lease)
        else:
            self.counters["restore_dropped"] += 1

    # -- the entry points ---------------------------------------------------------------------

    def handle(self, data: bytes, src_mac: bytes, src_ip: bytes, now: float) -> list[Reply]:
        """Answer one datagram received on port 67.

        1. Decode it (MalformedPacket propagates: the caller counts junk).
        2. Run expiry that is due, so a stale offer never blocks an address (Rule 5).
        3. Drop what is not a DHCP client request for this subnet: op BOOTREPLY, no message
           type (plain BOOTP), no way to identify the client, a relay on another subnet.
        4. Dispatch by message type; unknown types are counted and dropped.
        """
        msg = decode_message(data)  # Step 1
        deadline = self.table.next_deadline()  # Step 2
        if deadline is not None and deadline <= now:
            self._events.extend(self.expire(now))
        reason = self._screen(msg)  # Steps 3 and 4
        handler = self._dispatch.get(msg.message_type() or 0)
        if reason is not None or handler is None:
            self.counters[reason or "unknown_message_type"] += 1
            return []
        reply = handler(_Request(msg, client_key(msg), src_mac, src_ip, now))
        return [] if reply is None else [reply]

    def _screen(self, msg: DhcpMessage) -> str | None:
        """Step 3 of ``handle``: why this message is not for us, or None."""
        if msg.op != Op.BOOTREQUEST:
            return "not_a_request"
        if msg.message_type() is None:
            return "bootp_unsupported"
        if msg.hlen == 0 and msg.client_id() is None:
            return "no_client_identity"
        if msg.giaddr != ZERO_IP and not self.config.in_subnet(_int(msg.giaddr)):
            return "relay_other_subnet"
        return None

    def pop_events(self) -> list[LeaseEvent]:
        """Lease events since the last call (grants, releases, declines, expiry run in handle).

        The daemon logs them and saves the lease file when there are any.
        """
        events = list(self._events)
        self._events.clear()
        return events

    def next_deadline(self) -> float | None:
        """When the next offer, lease or quarantine ends (wall clock), for the adapter's timer."""
        return self.table.next_deadline()

    def expire(self, now: float) -> list[LeaseEvent]:
        """End what is due: bound leases are reported, offers and quarantines end silently."""
        events: list[LeaseEvent] = []
        for lease in self.table.expire(now):
            self.counters[f"{lease.state.value}_expired"] += 1
            if lease.state is LeaseState.BOUND:
                events.append(LeaseExpired(lease.mac, lease.ip, lease.hostname))
        return events

    def leases(self) -> list[Lease]:
        """Every entry by address, like ``virsh net-dhcp-leases`` (filter on ``state``)."""
        return sorted(self.table, key=lambda lease: lease.ip)

    def names(self) -> dict[str, int]:
        """Hostname to address for the DNS responder: static hosts first, then bound leases;
        a name already taken stays with its first holder."""
        names = {h.name: h.ip for h in self.config.static_hosts if h.name}
        for lease in self.table:
            if lease.state is LeaseState.BOUND and lease.hostname:
                names.setdefault(lease.hostname, lease.ip)
        return names

    # -- message handlers (RFC 2131 section 4.3) ---------------------------------------------

    def handle_discover(self, req: _Request) -> Reply | None:
        """RFC 2131 4.3.1.

        1. Choose: the client's static address, else its current lease, else the requested
           address (option 50) if usable, else a free pool address.
        2. Nothing to offer (table at its cap or pool used up): no OFFER (Rule 3).
        3. Hold the address for ``offer_time``; a lease the client holds bound stays as it is.
        """
        ip = self._choose(req)  # Step 1
        if ip is None:
            return self._drop("pool_exhausted")  # Step 2
        held = self.table.by_ip(ip)  # Step 3
        if held is None or held.state is not LeaseState.BOUND:
            self.table.put(Lease(ip, req.client, req.msg.chaddr, self._hostname(req, ip),
                                 req.now + self.config.offer_time, LeaseState.OFFERED))
        return self._reply(req, MessageType.OFFER, ip, self._lease_time(req.msg))

    def handle_request(self, req: _Request) -> Reply | None:
        """RFC 2131 4.3.2: the client's state follows from the fields.

        1. Server id present: SELECTING.  Another server's: the client chose that one, so
           forget our offer, silently.  Ours: the address is the requested one (option 50).
        2. Requested address, no ciaddr: INIT-REBOOT.  An address outside the subnet: NAK.
        3. ciaddr set: RENEWING (unicast) or REBINDING (broadcast); the address is ciaddr.
        4. A client with a record here (it selected us, or holds a lease, restored from the
           lease file or not, or is a static host): ACK if the address is acceptable for it,
           else NAK.  Otherwise see ``_unknown``.
        """
        msg, lease = req.msg, self.table.by_client(req.client)
        requested, server_id = msg.requested_ip(), msg.server_id()
        if server_id is not None:  # Step 1
            if server_id != self._server_id:
                if lease is not None and lease.state is LeaseState.OFFERED:
                    self.table.remove(lease.ip)
                return self._drop("other_server")
            if requested is None:
                return self._drop("bad_request")
            ip = _int(requested)
        elif requested is not None and msg.ciaddr == ZERO_IP:  # Step 2
            ip = _int(requested)
            if not self.config.in_subnet(ip):
                return self._nak(req, "wrong network")
        elif msg.ciaddr != ZERO_IP:  # Step 3
            ip = _int(msg.ciaddr)
        else:
            return self._drop("bad_request")
        known = server_id is not None or lease is not None or self._static_host(req) is not None
        if not known:  # Step 4
            return self._unknown(req, ip)
        if self._acceptable(req, ip, lease):
            return self._bind(req, ip)
        return self._nak(req, "address not available to this client")

    def _unknown(self, req: _Request, ip: int) -> Reply | None:
        """A client this server has no record of asks to keep an address.

        1. The address is someone else's or quarantined: NAK (we know it is wrong).
        2. Not authoritative: silent, another server may know the client (RFC 2131 4.3.2).
        3. Authoritative and RENEWING/REBINDING an address it may have: ACK, recovering a
           binding lost with the lease file; the client uses the address already.
        4. Authoritative otherwise: NAK, so the client starts over with a DISCOVER (ISC
           dhcpd's ``authoritative``).
        """
        held = self.table.by_ip(ip)
        if held is not None and held.client != req.client:  # Step 1
            return self._nak(req, "address belongs to another client")
        if not self.config.authoritative:  # Step 2
            return self._drop("unknown_client")
        if req.msg.ciaddr != ZERO_IP and self._acceptable(req, ip, None):  # Step 3
            return self._bind(req, ip)
        return self._nak(req, "no record of this lease")  # Step 4

    def handle_decline(self, req: _Request) -> Reply | None:
        """RFC 2131 4.3.3.

        1. Only a DECLINE for this server, naming (option 50) an address the client holds.
        2. Quarantine the address for ``decline_time`` (Rule 4); the client's lease is gone.
        """
        requested, server_id = req.msg.requested_ip(), req.msg.server_id()
        if server_id is not None and server_id != self._server_id:  # Step 1
            return self._drop("other_server")
        lease = self.table.by_ip(_int(requested)) if requested is not None else None
        if lease is None or lease.client != req.client:
            return self._drop("decline_not_owner")
        until = req.now + self.config.decline_time  # Step 2
        self.table.put(Lease(lease.ip, b"", lease.mac, "", until, LeaseState.DECLINED))
        self._events.append(AddressDeclined(lease.mac, lease.ip, until))
        self.counters["declined"] += 1
        return None

    def handle_release(self, req: _Request) -> Reply | None:
        """RFC 2131 4.3.4: the address in ciaddr is free again if it is the client's."""
        server_id = req.msg.server_id()
        if server_id is not None and server_id != self._server_id:
            return self._drop("other_server")
        lease = self.table.by_ip(_int(req.msg.ciaddr))
        if lease is None or lease.client != req.client or lease.state is not LeaseState.BOUND:
            return self._drop("release_not_owner")
        self.table.remove(lease.ip)
        self._events.append(LeaseReleased(lease.mac, lease.ip, lease.hostname))
        self.counters["released"] += 1
        return None

    def handle_inform(self, req: _Request) -> Reply | None:
        """RFC 2131 4.3.5: configuration only: ACK without lease time or yiaddr, no lease."""
        return self._reply(req, MessageType.ACK, None, None)

    # -- addresses ------------------------------------------------------------------------------

    def _choose(self, req: _Request) -> int | None:
        """Step 1 of ``handle_discover``, in the order of RFC 2131 4.3.1."""
        static = self._static_ip(req)
        if static is not None:
            return static
        lease = self.table.by_client(req.client)
        if lease is not None and self._usable(lease.ip, req):
            return lease.ip
        if not self._has_room(req.client, None):
            return None
        requested = req.msg.requested_ip()
        if requested is not None and self._usable(_int(requested), req):
            return _int(requested)
        return self._free_address(req)

    def _static_host(self, req: _Request) -> StaticHost | None:
        return self._static_by_mac.get(req.msg.chaddr) if req.msg.hlen == 6 else None

    def _static_ip(self, req: _Request) -> int | None:
        """The client's static address unless it is quarantined (Rule 4)."""
        host = self._static_host(req)
        if host is None or not self._usable(host.ip, req):
            return None
        return host.ip

    def _acceptable(self, req: _Request, ip: int, lease: Lease | None) -> bool:
        """May the client have ``ip`` now?  Its static address if it has one in service, else
        the address of its lease if it holds one, else any usable address while there is room."""
        static = self._static_ip(req)
        if static is not None:
            return ip == static
        if lease is not None:
            return ip == lease.ip and self._usable(ip, req)
        return self._usable(ip, req) and self._has_room(req.client, ip)

    def _usable(self, ip: int, req: _Request) -> bool:
        """Rule 2."""
        held = self.table.by_ip(ip)
        if held is not None:
            return held.client == req.client and held.state is not LeaseState.DECLINED
        static = self._static_by_ip.get(ip)
        if static is not None:
            return static.mac == req.msg.chaddr
        return ip in self._pool_set

    def _has_room(self, client: bytes, ip: int | None) -> bool:
        """Rule 3: a new dynamic entry fits, or the client already has one, or ip is static."""
        if ip in self._static_by_ip or self.table.by_client(client) is not None:
            return True
        return self._dynamic_count() < self.max_leases

    def _dynamic_count(self) -> int:
        return len(self.table) - sum(1 for ip in self._static_by_ip if self.table.by_ip(ip))

    def _free_address(self, req: _Request) -> int | None:
        """A pool address nobody holds, probing from a hash of the client key (as dnsmasq does),
        so a client tends to get the same address again even after its lease is gone."""
        pool = self._pool
        start = zlib.crc32(req.client) % len(pool) if pool else 0
        for i in range(len(pool)):
            ip = pool[(start + i) % len(pool)]
            if self.table.by_ip(ip) is None:
                return ip
        return None

    def _hostname(self, req: _Request, ip: int) -> str:
        """The static host's name, else the name in this message (option 12), else the one
        already on the client's lease of ``ip``."""
        host = self._static_host(req)
        if host is not None and host.name and host.ip == ip:
            return host.name
        raw = req.msg.hostname()
        if raw is not None and hostname_label(raw):
            return hostname_label(raw)
        held = self.table.by_ip(ip)
        return held.hostname if held is not None and held.client == req.client else ""

    def _lease_time(self, msg: DhcpMessage) -> int:
        """The configured time, or less if the client asks (RFC 2131 4.3.1), >= 120 s."""
        asked = msg.lease_time()
        if asked is None:
            return self.config.lease_time
        return max(min(asked, self.config.lease_time), min(MIN_LEASE_TIME, self.config.lease_time))

    def _bind(self, req: _Request, ip: int) -> Reply:
        """ACK ``ip`` to the client: bind or extend the lease and report it."""
        held = self.table.by_ip(ip)
        seconds = self._lease_time(req.msg)
        lease = Lease(ip, req.client, req.msg.chaddr, self._hostname(req, ip),
                      req.now + seconds, LeaseState.BOUND)
        self.table.put(lease)
        renewed = held is not None and held.state is LeaseState.BOUND
        self._events.append(LeaseGranted(lease.mac, ip, lease.hostname, lease.expires, renewed))
        return self._reply(req, MessageType.ACK, ip, seconds)

    # -- replies ----------------------------------------------------------------------------

    def _nak(self, req: _Request, why: str) -> Reply:
        return self._reply(req, MessageType.NAK, None, None, why)

    def _drop(self, reason: str) -> Reply | None:
        """Count a request left unanswered (Rule 6); a handler's way of saying "no reply"."""
        self.counters[reason] += 1
        return None

    def _reply(self, req: _Request, mtype: MessageType, yiaddr: int | None,
               lease_time: int | None, why: str = "") -> Reply:
        """Build the reply (RFC 2131 table 3) and address it (RFC 2131 4.1)."""
        msg = req.msg
        nak = mtype is MessageType.NAK
        relayed = msg.giaddr != ZERO_IP
        header = DhcpMessage(
            op=Op.BOOTREPLY, xid=msg.xid, chaddr=msg.chaddr, htype=msg.htype, hlen=msg.hlen,
            # 4.3.2: a NAK through a relay has the broadcast bit set so the relay broadcasts it.
            flags=msg.flags | (BROADCAST_FLAG if nak and relayed else 0),
            ciaddr=msg.ciaddr if mtype is MessageType.ACK else ZERO_IP,
            yiaddr=ZERO_IP if yiaddr is None else _packed(yiaddr), giaddr=msg.giaddr,
        )
        always, optional = self._options(msg, mtype, yiaddr, lease_time, why)
        payload = _fit(header, always, optional, msg.max_message_size())
        self.counters[f"sent_{mtype.name.lower()}"] += 1
        # RFC 2131 4.1, in its order:
        if relayed:  # 1. to the relay agent's server port
            return Reply(payload, msg.giaddr, req.src_mac, SERVER_PORT, False)
        if nak:  # 2. a NAK is always broadcast
            return Reply(payload, BROADCAST_IP, BROADCAST_MAC, CLIENT_PORT, True)
        if msg.ciaddr != ZERO_IP:  # 3. a configured client: unicast to ciaddr
            return Reply(payload, msg.ciaddr, req.src_mac, CLIENT_PORT, False)
        if mtype is MessageType.ACK and yiaddr is None and req.src_ip != ZERO_IP:
            # 3a. an INFORM that left ciaddr empty: answer its source address (as dnsmasq).
            return Reply(payload, req.src_ip, req.src_mac, CLIENT_PORT, False)
        if msg.broadcast or yiaddr is None or msg.hlen != 6:  # 4. broadcast flag set
            return Reply(payload, BROADCAST_IP, BROADCAST_MAC, CLIENT_PORT, True)
        return Reply(payload, _packed(yiaddr), msg.chaddr, CLIENT_PORT, False)  # 5. to chaddr

    def _options(self, msg: DhcpMessage, mtype: MessageType, yiaddr: int | None,
                 lease_time: int | None, why: str) -> tuple[dict[int, bytes], dict[int, bytes]]:
        """The reply's options: those always sent, and the optional ones best first.

        Always: message type, server id, the client id echoed (RFC 6842 section 3), lease time
        with T1 = 0.5 and T2 = 0.875 of it (RFC 2131 4.4.5), subnet mask and router.  The rest
        (DNS, domain, broadcast, MTU, hostname) go in the order of the parameter request list
        (RFC 2132 9.8), or all of them when the client sent no list.  A NAK carries only the
        first three and a message (option 56) saying why.
        """
        cfg = self.config
        always: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes((mtype,)),
                                    Option.SERVER_ID: self._server_id}
        client_id = msg.client_id()
        if client_id is not None:
            always[Option.CLIENT_ID] = client_id
        if mtype is MessageType.NAK:
            always[Option.MESSAGE] = why.encode()
            return always, {}
        if lease_time is not None:
            always[Option.LEASE_TIME] = encode_u32(lease_time)
            always[Option.RENEWAL_TIME] = encode_u32(lease_time // 2)
            always[Option.REBINDING_TIME] = encode_u32(lease_time * 7 // 8)
        always[Option.SUBNET_MASK] = _packed(cfg.mask)
        if cfg.router is not None:
            always[Option.ROUTER] = _packed(cfg.router)
        extra: dict[int, bytes] = {}
        if cfg.dns_servers:
            extra[Option.DNS_SERVERS] = b"".join(_packed(ip) for ip in cfg.dns_servers)
        if cfg.domain:
            extra[Option.DOMAIN_NAME] = cfg.domain.encode("ascii")
        extra[Option.BROADCAST] = _packed(cfg.broadcast)
        if cfg.mtu is not None:
            extra[Option.MTU] = encode_u16(cfg.mtu)
        held = self.table.by_ip(yiaddr) if yiaddr is not None else None
        if held is not None and held.hostname:
            extra[Option.HOSTNAME] = held.hostname.encode("ascii")
        wanted = msg.parameter_request_list()
        if wanted is None:
            return always, extra
        return always, {code: extra[code] for code in wanted if code in extra}


def _fit(header: DhcpMessage, always: dict[int, bytes], optional: dict[int, bytes],
         max_size: int | None) -> bytes:
    """Encode with as many optional options, best first, as the client takes (RFC 2132 9.10:
    option 57 counts the IP and UDP headers; every client takes 576, RFC 2131 4.1)."""
    limit = max(max_size or 0, MIN_IP_DATAGRAM) - IP_UDP_HEADERS
    codes = list(optional)
    while True:
        options = always | {code: optional[code] for code in codes}
        payload = encode_message(replace(header, options=options))
        if len(payload) <= limit or not codes:
            return payload
        codes.pop()


def _int(ip: bytes) -> int:
    return int.from_bytes(ip, "big")


def _packed(ip: int) -> bytes:
    return ip.to_bytes(4, "big")


def _dotted(ip: int) -> str:
    return str(ipaddress.IPv4Address(ip))
