"""The DHCPv4 client core (RFC 2131 section 4.4) for the router's raw uplink.

With ``[uplink] address = "dhcp"`` the router leases its own external address on the uplink
network, as a host there would.  Bytes received on port 68 and ``now`` go in; datagrams to send
and lease events (``Bound``, ``Lost``) come out.  The adapter owns the socket and the timer.

Transitions (RFC 2131 figure 5, without INIT-REBOOT and REBOOTING, see Rule 4)::

    state                  event              next         out
    INIT                   start()            SELECTING    DISCOVER, broadcast
    SELECTING              OFFER              REQUESTING   REQUEST with options 50, 54, broadcast
    REQUESTING             ACK                BOUND        Bound
    REQUESTING             NAK, last timeout  SELECTING    DISCOVER (new xid)
    BOUND                  T1                 RENEWING     REQUEST with ciaddr, unicast to server
    RENEWING               T2                 REBINDING    REQUEST with ciaddr, broadcast
    RENEWING, REBINDING    ACK                BOUND        Bound (renewed)
    RENEWING, REBINDING    NAK, expiry        SELECTING    Lost, DISCOVER (new xid)
    any                    release()          INIT         RELEASE, unicast to server, if leased

Rule 1: one exchange at a time, one ``xid`` per exchange (RFC 2131 4.4.1, table 5): the DISCOVER
        and the REQUEST answering its OFFER share one; each renewal, rebinding and release draws a
        new one from ``rng``.  A reply is taken only if it is a BOOTREPLY with the pending xid and
        our chaddr.  Anything else, and bytes that do not decode, are counted in ``counters`` and
        ignored: ``handle`` never raises.
Rule 2: one timer.  ``next_deadline()`` is the next retransmission or lease transition (T1, T2,
        expiry), None when nothing is pending (INIT, an infinite lease).  ``now`` is a monotonic
        clock (``loop.time()``): unlike the server (``dhcp.server`` Rule 5) the client keeps
        nothing on disk.  Lease times count from the first REQUEST of the exchange that got the
        ACK (RFC 2131 4.4.1: "the time at which the original request was sent").
Rule 3: retransmission (RFC 2131 4.1): SELECTING and REQUESTING wait 4, 8, 16, 32, 64 s, each
        randomised by +-1 s from ``rng``.  SELECTING goes on every 64 s; REQUESTING gives up after
        the 64 s wait and starts over with a DISCOVER (4.4.1: "reverts to INIT").  RENEWING and
        REBINDING wait half the time left until T2 or expiry, at least 60 s, never past it (4.4.5).
Rule 4: the first acceptable OFFER is taken (4.4.1 lets a client wait for several; an uplink has
        one server).  The offered address is not probed with ARP, so the client never sends a
        DECLINE (4.4.1 says it SHOULD probe; out of scope here).  No INIT-REBOOT: nothing survives
        a restart, so every ``start`` is a DISCOVER, and ``release`` is a RELEASE, unicast.
Rule 5: ``secs`` is 0 in every message (table 5 allows it), which keeps the REQUEST's equal to
        the DISCOVER's (3.1 step 3).  The BROADCAST flag stays clear: the raw uplink reads every
        frame sent to its MAC, so it takes a unicast OFFER or ACK before it has an address (4.1).
Rule 6: every message carries the client identifier 1 + MAC (RFC 2132 9.14; the same one in all
        messages, RFC 2131 4.2); DISCOVER and REQUEST carry the hostname, if configured, and the
        same parameter request list (RFC 2131 3.5).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from wire.errors import MalformedPacket

from .message import (
    ZERO_IP,
    DhcpMessage,
    MessageType,
    Op,
    Option,
    decode_message,
    encode_message,
)
from .server import BROADCAST_IP

BACKOFF: Final = (4.0, 8.0, 16.0, 32.0, 64.0)  # RFC 2131 4.1
JITTER: Final = 1.0  # RFC 2131 4.1: "randomized by ... a uniform random number from -1 to +1"
MIN_RETRY: Final = 60.0  # RFC 2131 4.4.5
INFINITE_LEASE: Final = 0xFFFFFFFF  # RFC 2131 3.3
#: Option 55 (RFC 2132 9.8): what the router needs to run its uplink.
PARAMETERS: Final = bytes((Option.SUBNET_MASK, Option.ROUTER, Option.DNS_SERVERS,
                           Option.DOMAIN_NAME, Option.MTU, Option.LEASE_TIME,
                           Option.RENEWAL_TIME, Option.REBINDING_TIME))


class ClientState(StrEnum):
    """The client's state (RFC 2131 figure 5), as ``vswitch show`` prints it."""

    INIT = "init"
    SELECTING = "selecting"
    REQUESTING = "requesting"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"


LEASED: Final = frozenset({ClientState.BOUND, ClientState.RENEWING, ClientState.REBINDING})
#: Which states take which reply (RFC 2131 figure 5); others are counted as ``<type>_ignored``.
ACCEPTS: Final[dict[int, frozenset[ClientState]]] = {
    MessageType.OFFER: frozenset({ClientState.SELECTING}),
    MessageType.ACK: frozenset({ClientState.REQUESTING, ClientState.RENEWING,
                                ClientState.REBINDING}),
    MessageType.NAK: frozenset({ClientState.REQUESTING, ClientState.RENEWING,
                                ClientState.REBINDING}),
}


class InvalidTransition(RuntimeError):
    """A call the current state does not allow (``start`` on a running client)."""


@dataclass(frozen=True, slots=True)
class Send:
    """One DHCP message for the adapter to send from ``src_ip``:68 to ``dst_ip``:67."""

    payload: bytes
    """The encoded DHCP message (the UDP payload)."""
    dst_ip: bytes
    """255.255.255.255, or the server's address for a renewal or a release (4 bytes)."""
    broadcast: bool
    """Send to the Ethernet broadcast address; else to the MAC of ``dst_ip`` (or its gateway)."""
    src_ip: bytes = ZERO_IP
    """0.0.0.0 until the client holds an address, then that address (the message's ciaddr)."""


@dataclass(frozen=True, slots=True)
class Bound:
    """An ACK (re)bound the lease: configure the uplink with it."""

    address: bytes
    """The leased address (yiaddr), 4 bytes."""
    prefix: int
    """Prefix length from the subnet mask (option 1); the address's classful one without it."""
    router: bytes | None
    """The first router of option 3, None if the server sent none."""
    dns: tuple[bytes, ...]
    """Option 6, name servers in the server's order."""
    lease_time: int
    """Seconds granted (option 51); 0xFFFFFFFF is an infinite lease (RFC 2131 3.3)."""
    server: bytes
    """The server identifier (option 54): where renewals and the release go."""
    mtu: int | None
    """Option 26, the uplink's MTU, None if the server sent none."""
    domain: str | None = None
    """Option 15, the uplink network's domain name, None if the server sent none."""
    renewed: bool = False
    """An ACK in RENEWING or REBINDING extended the address already held."""


@dataclass(frozen=True, slots=True)
class Lost:
    """The address may no longer be used: take it off the uplink."""

    address: bytes
    """The address that was leased, 4 bytes."""
    reason: str
    """Why: "expired", "nak" (the server took it back) or "changed" (an ACK gave another)."""


class DhcpClient:
    def __init__(self, mac: bytes, hostname: str | None = None,
                 rng: random.Random | None = None) -> None:
        if len(mac) != 6:
            raise ValueError(f"mac: {mac.hex(':')} is not a 6-byte Ethernet address")
        if hostname is not None and not (hostname.isascii() and 0 < len(hostname) < 256):
            raise ValueError(f"hostname: {hostname!r} is not 1..255 ASCII characters")
        self.mac = mac
        self.hostname = hostname
        self.counters: Counter[str] = Counter()
        self._rng = rng if rng is not None else random.SystemRandom()
        self._client_id = b"\x01" + mac  # Rule 6
        self._state = ClientState.INIT
        self._xid: int | None = None  # of the pending exchange (Rule 1)
        self._attempt = 0  # transmissions so far in this exchange, less one
        self._started = 0.0  # first transmission of this exchange (Rule 2)
        self._deadline: float | None = None
        self._address = ZERO_IP  # offered in REQUESTING, leased in BOUND..REBINDING
        self._server = ZERO_IP
        self._lease: Bound | None = None
        self._t1 = self._t2 = self._expiry = math.inf
        self._handlers: dict[int, Callable[[DhcpMessage, float], list[Send | Bound | Lost]]] = {
            MessageType.OFFER: self.handle_offer,
            MessageType.ACK: self.handle_ack,
            MessageType.NAK: self.handle_nak,
        }

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def lease(self) -> Bound | None:
        """The binding in force (BOUND, RENEWING, REBINDING), else None."""
        return self._lease

    @property
    def lease_timers(self) -> tuple[float, float, float] | None:
        """T1, T2 and the expiry of the binding in force (``inf`` for an infinite lease)."""
        return None if self._lease is None else (self._t1, self._t2, self._expiry)

    # -- the entry points ---------------------------------------------------------------------

    def start(self, now: float) -> list[Send]:
        """Leave INIT: broadcast the first DISCOVER (RFC 2131 4.4.1)."""
        if self._state is not ClientState.INIT:
            raise InvalidTransition(f"start() in state {self._state}: the client is running")
        return self._restart(now)

    def handle(self, data: bytes, now: float) -> list[Send | Bound | Lost]:
        """Take one datagram received on port 68.

        1. Decode it; junk is counted as ``malformed`` and ignored (Rule 1).
        2. Take only a BOOTREPLY to the pending exchange: its xid and our chaddr (Rule 1).
        3. Take only a reply the state expects (``ACCEPTS``).
        4. In REQUESTING and RENEWING only the chosen server may answer; in REBINDING any
           server may (RFC 2131 4.4.5).
        5. Dispatch by message type.  A handler reads every option before it changes anything,
           so a reply with a malformed option is ignored as a whole.
        """
        try:
            msg = decode_message(data)  # Step 1
            reason = self._screen(msg)  # Steps 2 to 4
            if reason is not None:
                self.counters[reason] += 1
                return []
            return self._handlers[msg.message_type() or 0](msg, now)  # Step 5
        except MalformedPacket:
            self.counters["malformed"] += 1
            return []

    def _screen(self, msg: DhcpMessage) -> str | None:
        """Steps 2 to 4 of ``handle``: why this reply is not for us now, or None."""
        if msg.op != Op.BOOTREPLY:
            return "not_a_reply"
        if self._xid is None or msg.xid != self._xid:
            return "wrong_xid"
        if msg.htype != 1 or msg.chaddr != self.mac:
            return "wrong_chaddr"
        mtype = msg.message_type() or 0
        if mtype not in ACCEPTS:
            return "unexpected_type"
        if self._state not in ACCEPTS[mtype]:
            return f"{MessageType(mtype).name.lower()}_ignored"
        server = msg.server_id()
        if self._state in (ClientState.REQUESTING, ClientState.RENEWING) \
                and server is not None and server != self._server:
            return "other_server"
        return None

    def next_deadline(self) -> float | None:
        """When ``expire`` has work: a retransmission, T1, T2 or expiry (Rule 2)."""
        return self._deadline

    def expire(self, now: float) -> list[Send | Lost]:
        """Run the timer if it is due.

        1. SELECTING: send the DISCOVER again, the wait growing to 64 s (Rule 3).
        2. REQUESTING: send the REQUEST again; after the last wait start over (RFC 2131 4.4.1).
        3. Leased: the clock says where the lease is.  Past expiry: Lost, start over with a
           DISCOVER (4.4.5).  Past T2: REBINDING, a new exchange broadcast to any server.
           Past T1: RENEWING, a new exchange unicast to the leasing server.  A phase that is
           already running sends its REQUEST again.
        """
        if self._deadline is None or now < self._deadline:
            return []
        self._attempt += 1
        if self._state is ClientState.SELECTING:  # Step 1
            return [self._transmit(now)]
        if self._state is ClientState.REQUESTING:  # Step 2
            if self._attempt < len(BACKOFF):
                return [self._transmit(now)]
            self.counters["request_timeout"] += 1
            return [*self._restart(now)]
        if now >= self._expiry:  # Step 3
            self.counters["lease_expired"] += 1
            return [Lost(self._address, "expired"), *self._restart(now)]
        phase = ClientState.REBINDING if now >= self._t2 else ClientState.RENEWING
        if phase is not self._state:
            self._begin(phase, now)
        return [self._transmit(now)]

    def release(self, now: float) -> list[Send]:
        """Stop: give the lease back with a RELEASE unicast to its server (RFC 2131 4.4.6), if
        one is held, and go to INIT with no timer.  The caller stops using the address."""
        sends = []
        if self._state in LEASED:
            self._xid = self._rng.getrandbits(32)
            payload = self._encode(MessageType.RELEASE, ciaddr=self._address,
                                   options={Option.SERVER_ID: self._server})
            sends.append(Send(payload, self._server, False, self._address))
        self._state, self._xid, self._deadline, self._lease = ClientState.INIT, None, None, None
        return sends

    # -- reply handlers ---------------------------------------------------------------------

    def handle_offer(self, msg: DhcpMessage, now: float) -> list[Send | Bound | Lost]:
        """SELECTING (RFC 2131 4.4.1): take the first OFFER that names an address and its
        server, and broadcast a REQUEST for it, same xid, with options 50 and 54."""
        server = msg.server_id()
        if msg.yiaddr == ZERO_IP or server is None:
            self.counters["bad_offer"] += 1
            return []
        self.counters["received_offer"] += 1
        self._address, self._server = msg.yiaddr, server
        self._begin(ClientState.REQUESTING, now, new_xid=False)
        return [self._transmit(now)]

    def handle_ack(self, msg: DhcpMessage, now: float) -> list[Send | Bound | Lost]:
        """REQUESTING, RENEWING, REBINDING (RFC 2131 4.4.1, 4.4.5).

        1. Read the lease: an address, a lease time (table 3: MUST) and the configuration.
        2. T2 and T1 from options 59 and 58 if T1 < T2 < lease, else 0.875 and 0.5 of the
           lease (4.4.5), counted from the first REQUEST of the exchange (Rule 2).
        3. A different address from the one held: the old one is Lost (4.4.5).
        4. BOUND until T1.
        """
        lease_time = msg.lease_time()  # Step 1
        if msg.yiaddr == ZERO_IP or not lease_time:
            self.counters["bad_ack"] += 1
            return []
        renewed = self._state is not ClientState.REQUESTING and msg.yiaddr == self._address
        bound = _binding(msg, lease_time, msg.server_id() or self._server, renewed)
        t1, t2 = _renewal_times(msg, lease_time)  # Step 2
        events: list[Send | Bound | Lost] = []
        if self._state is not ClientState.REQUESTING and not renewed:  # Step 3
            events.append(Lost(self._address, "changed"))
        self.counters["received_ack"] += 1  # Step 4
        self._t1, self._t2 = self._started + t1, self._started + t2
        self._expiry = self._started + lease_time if lease_time != INFINITE_LEASE else math.inf
        self._address, self._server, self._lease = bound.address, bound.server, bound
        self._state, self._xid = ClientState.BOUND, None
        self._deadline = self._t1 if self._t1 != math.inf else None
        return [*events, bound]

    def handle_nak(self, msg: DhcpMessage, now: float) -> list[Send | Bound | Lost]:
        """REQUESTING, RENEWING, REBINDING: the server refuses; a held address is Lost and the
        client starts over with a DISCOVER (RFC 2131 4.4.1, 4.4.5)."""
        self.counters["received_nak"] += 1
        lost = [Lost(self._address, "nak")] if self._state in LEASED else []
        return [*lost, *self._restart(now)]

    # -- sending ---------------------------------------------------------------------------------

    def _restart(self, now: float) -> list[Send]:
        """INIT, and straight on to SELECTING with a new exchange."""
        self._lease, self._address, self._server = None, ZERO_IP, ZERO_IP
        self._t1 = self._t2 = self._expiry = math.inf
        self._begin(ClientState.SELECTING, now)
        return [self._transmit(now)]

    def _begin(self, state: ClientState, now: float, new_xid: bool = True) -> None:
        """Enter ``state`` and start its exchange (Rule 1)."""
        self._state, self._attempt, self._started = state, 0, now
        if new_xid:
            self._xid = self._rng.getrandbits(32)

    def _transmit(self, now: float) -> Send:
        """Send the state's message (RFC 2131 4.3.2, table 5) and arm the retry (Rule 3)."""
        state, address, server = self._state, self._address, self._server
        if state is ClientState.SELECTING:
            send = Send(self._encode(MessageType.DISCOVER), BROADCAST_IP, True)
        elif state is ClientState.REQUESTING:
            options: dict[int, bytes] = {Option.REQUESTED_IP: address, Option.SERVER_ID: server}
            send = Send(self._encode(MessageType.REQUEST, options=options), BROADCAST_IP, True)
        elif state is ClientState.RENEWING:
            send = Send(self._encode(MessageType.REQUEST, ciaddr=address), server, False, address)
        else:
            send = Send(self._encode(MessageType.REQUEST, ciaddr=address), BROADCAST_IP, True,
                        address)
        self._deadline = self._retry_at(now)
        return send

    def _retry_at(self, now: float) -> float:
        """Rule 3."""
        if self._state in (ClientState.SELECTING, ClientState.REQUESTING):
            wait = BACKOFF[min(self._attempt, len(BACKOFF) - 1)]
            return now + wait + self._rng.uniform(-JITTER, JITTER)
        end = self._t2 if self._state is ClientState.RENEWING else self._expiry
        return min(now + max(MIN_RETRY, (end - now) / 2), end)

    def _encode(self, mtype: MessageType, ciaddr: bytes = ZERO_IP,
                options: dict[int, bytes] | None = None) -> bytes:
        """A client message: options 53 and 61 always, 12 and 55 except in a RELEASE (Rule 6)."""
        assert self._xid is not None
        opts: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes((mtype,)),
                                  Option.CLIENT_ID: self._client_id}
        if mtype is not MessageType.RELEASE:
            if self.hostname:
                opts[Option.HOSTNAME] = self.hostname.encode("ascii")
            opts[Option.PARAMETER_REQUEST_LIST] = PARAMETERS
        opts.update(options or {})
        self.counters[f"sent_{mtype.name.lower()}"] += 1
        return encode_message(DhcpMessage(op=Op.BOOTREQUEST, xid=self._xid, chaddr=self.mac,
                                          ciaddr=ciaddr, options=opts))


# -- reading an ACK ------------------------------------------------------------------------------


def _binding(msg: DhcpMessage, lease_time: int, server: bytes, renewed: bool) -> Bound:
    """The configuration an ACK carries; MalformedPacket for an option of the wrong size."""
    mask = _fixed(msg, Option.SUBNET_MASK, 4)
    mtu_value = _fixed(msg, Option.MTU, 2)
    mtu = None if mtu_value is None else int.from_bytes(mtu_value, "big")
    if mtu is not None and mtu < 68:
        raise MalformedPacket(f"MTU {mtu} is below 68 (RFC 2132 5.1)")
    routers = _addresses(msg, Option.ROUTER)
    domain = msg.options.get(Option.DOMAIN_NAME, b"").rstrip(b"\0")
    return Bound(
        address=msg.yiaddr, prefix=_prefix(mask, msg.yiaddr),
        router=routers[0] if routers else None, dns=_addresses(msg, Option.DNS_SERVERS),
        lease_time=lease_time, server=server, mtu=mtu,
        domain=domain.decode("ascii", "replace") or None, renewed=renewed,
    )


def _renewal_times(msg: DhcpMessage, lease_time: int) -> tuple[float, float]:
    """T1 and T2 in seconds after the request (RFC 2131 4.4.5, RFC 2132 9.11, 9.12)."""
    if lease_time == INFINITE_LEASE:
        return math.inf, math.inf
    t1, t2 = _seconds(msg, Option.RENEWAL_TIME), _seconds(msg, Option.REBINDING_TIME)
    if t2 is None or not 0 < t2 < lease_time:
        t2 = lease_time * 0.875
    if t1 is None or not 0 < t1 < t2:
        t1 = min(lease_time * 0.5, t2)
    return t1, t2


def _fixed(msg: DhcpMessage, code: int, size: int) -> bytes | None:
    value = msg.options.get(code)
    if value is not None and len(value) != size:
        raise MalformedPacket(f"option {code} has length {len(value)}, want {size}")
    return value


def _seconds(msg: DhcpMessage, code: int) -> float | None:
    value = _fixed(msg, code, 4)
    return None if value is None else float(int.from_bytes(value, "big"))


def _addresses(msg: DhcpMessage, code: int) -> tuple[bytes, ...]:
    """A list-of-addresses option (RFC 2132 3.5, 3.8)."""
    value = msg.options.get(code, b"")
    if len(value) % 4:
        raise MalformedPacket(f"option {code} has length {len(value)}, not a multiple of 4")
    return tuple(value[i:i + 4] for i in range(0, len(value), 4))


def _prefix(mask: bytes | None, address: bytes) -> int:
    """The prefix length of a subnet mask; without one, the address's class (RFC 791 2.3)."""
    if mask is None:
        return 8 if address[0] < 128 else 16 if address[0] < 192 else 24
    host_bits = ~int.from_bytes(mask, "big") & 0xFFFFFFFF
    if host_bits & (host_bits + 1):
        raise MalformedPacket(f"subnet mask {mask.hex()} is not contiguous")
    return 32 - host_bits.bit_length()
