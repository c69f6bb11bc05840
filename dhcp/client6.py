"""The DHCPv6 client core (RFC 8415) for the raw uplink's IPv6 station: one IA_NA.

With ``[uplink] address6 = "dhcp"`` the router leases its own IPv6 address on the uplink network,
once a Router Advertisement there says addresses are managed (the M flag, RFC 4861 4.2).  As
``dhcp.client``, this is sans-I/O: payloads received on UDP port 546 and ``now`` go in;
messages to send (``Send6``) and lease events (``Bound6``, ``Lost6``) come out.  The station
(``nat.uplink6``) puts each message in UDP from its link-local address to port 547.

Transitions (RFC 8415 18)::

    state        event                                next        out
    INIT         start()                              SOLICIT     SOLICIT after 0..1 s (Rule 4)
    SOLICIT      ADVERTISE (Rule 4)                   REQUEST     REQUEST to its server
    SOLICIT      REPLY with Rapid Commit              BOUND       Bound6 (Rule 5)
    REQUEST      REPLY with an address                BOUND       Bound6
    REQUEST      REPLY NotOnLink or NoAddrsAvail,     SOLICIT     SOLICIT 1 s later (Rule 6)
                 REQ_MAX_RC transmissions
    BOUND        T1                                   RENEW       RENEW to the server
    RENEW        T2                                   REBIND      REBIND to any server
    RENEW/REBIND REPLY with the address               BOUND       Bound6 (renewed)
    RENEW/REBIND REPLY NoBinding                      REQUEST     REQUEST to that server
    RENEW/REBIND REPLY lifetimes 0, valid lifetime    SOLICIT     Lost6, SOLICIT 1 s later
                 over
    leased       decline() (DAD failed)               DECLINE     Lost6, DECLINE
    DECLINE      REPLY, DEC_MAX_RC transmissions      SOLICIT     SOLICIT 1 s later
    leased       stop()                               RELEASE     RELEASE
    RELEASE      REPLY, REL_MAX_RC transmissions      INIT

Rule 1: every message carries our Client Identifier, a DUID-LL from the MAC (RFC 8415 11.4),
        one IA_NA with our IAID, and an Elapsed Time (21.9).  SOLICIT, REQUEST, RENEW and
        REBIND ask (ORO, 21.7) for DNS servers (RFC 3646), the domain list and SOL_MAX_RT
        (21.24, which 18.2.1 says a client must request).  SOLICIT and REBIND name no server;
        REQUEST, RENEW, RELEASE and DECLINE name the chosen one (18.2).  Addresses sent in an
        IA_NA carry lifetimes 0: the server ignores them (21.6).
Rule 2: one exchange at a time, one 3-byte transaction id per exchange, kept by its
        retransmissions (15, 16.1).  A message is taken only if it is an ADVERTISE or a REPLY
        with the pending transaction id, our Client Identifier and a Server Identifier (16.3,
        16.10); in REQUEST, RENEW, RELEASE and DECLINE only from the chosen server.  Anything
        else, and bytes that do not decode, are counted in ``counters`` and ignored:
        ``receive`` never raises.  RECONFIGURE is not supported (counted, ignored).
Rule 3: retransmission (15): the first timeout RT = IRT + RAND*IRT, then RT = 2*RT + RAND*RT,
        and above MRT RT = MRT + RAND*MRT, RAND uniform in [-0.1, 0.1] from ``rng``; the
        exchange fails after MRC transmissions or MRD seconds.  The parameters are those of
        the table in 7.6: SOLICIT 1 s up to SOL_MAX_RT (3600 s, or the server's option in
        60..86400), no end; REQUEST 1 s up to 30 s, 10 transmissions; RENEW 10 s up to 600 s
        until T2; REBIND 10 s up to 600 s until the valid lifetime ends; RELEASE and DECLINE
        1 s, 4 transmissions.  So every timer is bounded, and so is the rate.
Rule 4: the first SOLICIT waits a random 0..SOL_MAX_DELAY (18.2.1), so routers rebooting
        together do not solicit together.  ADVERTISEs are collected until the first RT is over
        and the highest preference wins, unless one has preference 255, which is taken at once;
        after the first RT the first ADVERTISE is taken (18.2.1, 18.2.9).  An ADVERTISE without
        an address for our IA is ignored, all but its SOL_MAX_RT (18.2.9).
Rule 5: SOLICIT carries Rapid Commit when ``rapid_commit`` (18.2.1): a REPLY to it with Rapid
        Commit binds at once; a REPLY to a SOLICIT without one is ignored (18.2.10).
Rule 6: a REPLY (18.2.10.1): a message status UnspecFail or UseMulticast is ignored and the
        retransmission goes on; NotOnLink starts over with SOLICIT.  In our IA: NoBinding to
        RENEW or REBIND sends a REQUEST to that server; another failure status starts a
        REQUEST over with SOLICIT, and is otherwise ignored (a lease holds until it ends, a
        SOLICIT goes on).  Starting over, the first SOLICIT waits SOL_TIMEOUT, so a server
        that refuses at once cannot speed the client up.  An IA with T1 > T2 is discarded
        (21.4), as is an address whose preferred lifetime exceeds its valid one (21.6).  The
        address bound is the one held, if still valid, else the first valid one; the held
        address with valid lifetime 0 is ``Lost6`` ("withdrawn"), a different one replaces it
        (``Lost6`` "changed", then ``Bound6``).  A handler reads every option before it changes
        anything, so a REPLY with a malformed option is ignored whole.
Rule 7: lease times count from the REPLY.  T1 and T2 of 0 mean the client chooses: 0.5 and 0.8
        of the preferred lifetime (21.4); 0xffffffff is infinity (7.7).  At T1 RENEW, at T2
        REBIND, at the end of the valid lifetime ``Lost6`` ("expired") and SOLICIT again
        (18.2.4, 18.2.5).
Rule 8: ``stop`` gives a held lease back with RELEASE (18.2.7) and ends in INIT; the caller
        stops using the address at once.  ``decline`` reports that duplicate address detection
        found the address in use (18.2.10.1: the client must DECLINE it, 18.2.8), then starts
        over.  No CONFIRM or INFORMATION-REQUEST: nothing survives a restart, so ``start``
        always solicits.
"""

from __future__ import annotations

import math
import random
import struct
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from wire.errors import MalformedPacket
from wire.ipv6 import ALL_SERVERS

from .dhcp6 import (
    ADVERTISE,
    DECLINE,
    NO_BINDING,
    NOT_ON_LINK,
    OPT_CLIENTID,
    OPT_DNS,
    OPT_DOMAINS,
    OPT_ELAPSED,
    OPT_IA_NA,
    OPT_ORO,
    OPT_RAPID_COMMIT,
    OPT_SERVERID,
    OPT_STATUS,
    REBIND,
    RELEASE,
    RENEW,
    REPLY,
    REQUEST,
    SOLICIT,
    SUCCESS,
    UNSPEC_FAIL,
    IaNa,
    Message6,
    decode_ia_na,
    decode_message6,
    ia_na_option,
    option,
    status_code,
)

RECONFIGURE: Final = 10
OPT_PREFERENCE: Final = 7
OPT_SOL_MAX_RT: Final = 82
USE_MULTICAST: Final = 5
NO_PREFIX_AVAIL: Final = 6  # the last status code RFC 8415 21.13 defines
INFINITY: Final = 0xFFFFFFFF  # RFC 8415 7.7

# RFC 8415 7.6, Rule 3.
SOL_MAX_DELAY, SOL_TIMEOUT, SOL_MAX_RT = 1.0, 1.0, 3600.0
REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC = 1.0, 30.0, 10
REN_TIMEOUT, REN_MAX_RT = 10.0, 600.0
REB_TIMEOUT, REB_MAX_RT = 10.0, 600.0
REL_TIMEOUT, REL_MAX_RC = 1.0, 4
DEC_TIMEOUT, DEC_MAX_RC = 1.0, 4
#: The bounds a server's SOL_MAX_RT option must keep to be used (RFC 8415 21.24).
SOL_MAX_RT_RANGE: Final = (60, 86400)
#: ORO (Rule 1): DNS servers, domain list, SOL_MAX_RT.
REQUESTED: Final = struct.pack("!HHH", OPT_DNS, OPT_DOMAINS, OPT_SOL_MAX_RT)
MAX_DOMAINS: Final = 8


class Client6State(StrEnum):
    """The client's state, as ``vswitch show`` prints it."""

    INIT = "init"
    SOLICIT = "soliciting"
    REQUEST = "requesting"
    BOUND = "bound"
    RENEW = "renewing"
    REBIND = "rebinding"
    RELEASE = "releasing"
    DECLINE = "declining"


LEASED: Final = frozenset({Client6State.BOUND, Client6State.RENEW, Client6State.REBIND})
#: The message each state sends and its retransmission parameters (IRT, MRT, MRC; Rule 3).
#: SOLICIT's MRT is ``sol_max_rt``, which a server may change.
MESSAGES: Final[dict[Client6State, tuple[int, float, float, int]]] = {
    Client6State.SOLICIT: (SOLICIT, SOL_TIMEOUT, SOL_MAX_RT, 0),
    Client6State.REQUEST: (REQUEST, REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC),
    Client6State.RENEW: (RENEW, REN_TIMEOUT, REN_MAX_RT, 0),
    Client6State.REBIND: (REBIND, REB_TIMEOUT, REB_MAX_RT, 0),
    Client6State.RELEASE: (RELEASE, REL_TIMEOUT, 0.0, REL_MAX_RC),
    Client6State.DECLINE: (DECLINE, DEC_TIMEOUT, 0.0, DEC_MAX_RC),
}


class InvalidTransition(RuntimeError):
    """A call the current state does not allow (``start`` on a running client)."""


@dataclass(frozen=True, slots=True)
class Send6:
    """One DHCPv6 message for the station to send from its link-local address, port 546, to
    ``dst`` port 547."""

    payload: bytes
    """The encoded DHCPv6 message (the UDP payload)."""
    dst: bytes = ALL_SERVERS
    """All_DHCP_Relay_Agents_and_Servers, ff02::1:2 (RFC 8415 18: always, here)."""


@dataclass(frozen=True, slots=True)
class Bound6:
    """A REPLY (re)bound the lease: the address may be used once DAD has passed."""

    address: bytes
    """The leased address, 16 bytes."""
    valid: int
    """Valid lifetime in seconds from the REPLY; 0xffffffff is infinity."""
    preferred: int
    """Preferred lifetime in seconds; 0xffffffff is infinity."""
    dns: tuple[bytes, ...] = ()
    """DNS recursive name servers (RFC 3646), in the server's order."""
    prefix_len: int = 128
    """An IA_NA address says nothing of the link's prefix: that is the RA's (RFC 8415 21.6)."""
    domains: tuple[str, ...] = ()
    """The domain search list (RFC 3646)."""
    server: bytes = b""
    """The server's DUID: where renewals and the release go."""
    t1: float = math.inf
    """Seconds after the REPLY to renew."""
    t2: float = math.inf
    """Seconds after the REPLY to rebind."""
    renewed: bool = False
    """A RENEW, REBIND or REQUEST extended the address already held."""


@dataclass(frozen=True, slots=True)
class Lost6:
    """The address may no longer be used: take it off the uplink."""

    address: bytes
    """The address that was leased, 16 bytes."""
    reason: str
    """"expired", "withdrawn" (lifetimes 0), "changed" (another address replaced it),
    "declined" (DAD found it in use), "not-on-link", or "request-failed" (a REQUEST after
    NoBinding went unanswered)."""


Event6 = Send6 | Bound6 | Lost6


class Dhcp6Client:
    def __init__(self, mac: bytes, iaid: int | None = None, rapid_commit: bool = True,
                 rng: random.Random | None = None) -> None:
        if len(mac) != 6:
            raise ValueError(f"mac: {mac.hex(':')} is not a 6-byte Ethernet address")
        self.mac = mac
        self.duid = b"\x00\x03\x00\x01" + mac  # DUID-LL, hardware type 1 (RFC 8415 11.4)
        #: One IA_NA; its IAID is stable across restarts (RFC 8415 12: from the interface).
        self.iaid = int.from_bytes(mac[2:], "big") if iaid is None else iaid
        self.rapid_commit = rapid_commit
        self.counters: Counter[str] = Counter()
        self.sol_max_rt = SOL_MAX_RT
        self._rng = rng if rng is not None else random.SystemRandom()
        self._state = Client6State.INIT
        self._xid: bytes | None = None  # of the pending exchange (Rule 2)
        self._sent = 0  # transmissions in this exchange
        self._first = 0.0  # time of its first transmission (Elapsed Time, MRD)
        self._rt = 0.0
        self._mrd_end = math.inf
        self._deadline: float | None = None
        self._server = b""  # the chosen server's DUID
        self._address = b""  # what the exchange is about: offered, held, released, declined
        self._best: tuple[int, bytes, bytes] | None = None  # (preference, server, address)
        self._lease: Bound6 | None = None
        self._t1 = self._t2 = self._valid_end = math.inf

    @property
    def state(self) -> Client6State:
        return self._state

    @property
    def lease(self) -> Bound6 | None:
        """The binding in force, else None."""
        return self._lease

    @property
    def lease_timers(self) -> tuple[float, float, float] | None:
        """T1, T2 and the end of the valid lifetime, as times (``inf`` for never)."""
        return None if self._lease is None else (self._t1, self._t2, self._valid_end)

    def next_deadline(self) -> float | None:
        """When ``tick`` has work: a (re)transmission, T1, T2 or the end of the lease."""
        return self._deadline

    # -- the entry points ---------------------------------------------------------------------

    def start(self, now: float) -> list[Event6]:
        """Leave INIT: the first SOLICIT goes after a random delay (Rule 4), from ``tick``."""
        if self._state is not Client6State.INIT:
            raise InvalidTransition(f"start() in state {self._state}: the client is running")
        self._begin(Client6State.SOLICIT, now)
        self._deadline = now + self._rng.uniform(0.0, SOL_MAX_DELAY)
        return []

    def receive(self, payload: bytes, now: float) -> list[Event6]:
        """Take one message received on port 546 (Rules 2, 4 to 6); never raises."""
        try:
            msg = decode_message6(payload)
            reason = self._screen(msg)
            if reason is not None:
                self.counters[reason] += 1
                return []
            if msg.kind == ADVERTISE:
                return self._advertise(msg, now)
            return self._reply(msg, now)
        except MalformedPacket:
            self.counters["malformed"] += 1
            return []

    def tick(self, now: float) -> list[Event6]:
        """Run the timer if it is due.

        1. A retransmission is due (Rule 3); an exchange that has used up its MRC or MRD fails:
           REQUEST and DECLINE start over with SOLICIT, RELEASE ends in INIT.
        2. The first RT of a SOLICIT is over: REQUEST the best ADVERTISE collected (Rule 4).
        3. Leased: past the valid lifetime, ``Lost6`` and SOLICIT; past T2 REBIND; past T1
           RENEW; a phase already running sends its message again (Rule 7).
        """
        if self._deadline is None or now < self._deadline:
            return []
        state = self._state
        if state is Client6State.SOLICIT:  # Step 2, then Step 1
            if self._sent == 1 and self._best is not None:
                return self._request_best(now)
            return [self._transmit(now)]
        if state in (Client6State.REQUEST, Client6State.DECLINE, Client6State.RELEASE):
            mrc = MESSAGES[state][3]
            if self._sent < mrc and now < self._mrd_end:
                return [self._transmit(now)]
            self.counters[f"{state.value}-gave-up"] += 1
            if state is Client6State.RELEASE:
                self._to_init()
                return []
            return self._restart(now, "expired" if now >= self._valid_end else "request-failed")
        if state in LEASED:  # Step 3
            if now >= self._valid_end:
                self.counters["lease-expired"] += 1
                return self._restart(now, "expired")
            if now >= self._t2 and state is not Client6State.REBIND:
                self._begin(Client6State.REBIND, now, mrd_end=self._valid_end)
            elif now >= self._t1 and state is Client6State.BOUND:
                self._begin(Client6State.RENEW, now, mrd_end=self._t2)
            return [self._transmit(now)]
        self._deadline = None
        return []

    def stop(self, now: float) -> list[Event6]:
        """Rule 8: RELEASE a held lease (its retransmissions come from ``tick``), else go to
        INIT with no timer."""
        held = self._lease
        self._lease = None
        if held is None:
            self._to_init()
            return []
        self._address = held.address
        self._begin(Client6State.RELEASE, now)
        return [self._transmit(now)]

    def decline(self, now: float) -> list[Event6]:
        """Rule 8: duplicate address detection found the leased address in use."""
        held = self._lease
        if held is None:
            self.counters["decline-without-lease"] += 1
            return []
        self._lease = None
        self._address = held.address
        self._begin(Client6State.DECLINE, now)
        return [Lost6(held.address, "declined"), self._transmit(now)]

    # -- receiving ------------------------------------------------------------------------------

    def _screen(self, msg: Message6) -> str | None:
        """Rule 2: why this message is not for us now, or None."""
        if msg.kind == RECONFIGURE:
            return "reconfigure-ignored"
        if msg.kind not in (ADVERTISE, REPLY):
            return "not-a-server-message"
        if self._xid is None or self._sent == 0 or msg.transaction != self._xid:
            return "wrong-transaction"
        if msg.get(OPT_CLIENTID) != self.duid:
            return "wrong-client-id"
        server = msg.get(OPT_SERVERID)
        if not server:
            return "no-server-id"
        if msg.kind == ADVERTISE and self._state is not Client6State.SOLICIT:
            return "advertise-ignored"
        if self._state in (Client6State.REQUEST, Client6State.RENEW, Client6State.RELEASE,
                           Client6State.DECLINE) and server != self._server:
            return "other-server"
        return None

    def _advertise(self, msg: Message6, now: float) -> list[Event6]:
        """Rule 4."""
        self._take_sol_max_rt(msg)
        server = msg.get(OPT_SERVERID) or b""
        preference = msg.get(OPT_PREFERENCE)
        rank = preference[0] if preference else 0
        ia = self._our_ia(msg)
        offered = [a for a, preferred, valid in (ia.addresses if ia else [])
                   if 0 < valid and preferred <= valid]
        if ia is None or not offered or _status(msg) not in (None, SUCCESS) \
                or ia.status not in (None, SUCCESS):
            self.counters["advertise-without-address"] += 1
            return []
        self.counters["advertise"] += 1
        if self._best is None or rank > self._best[0]:
            self._best = (rank, server, offered[0])
        if self._sent == 1 and rank != 255:
            return []  # still collecting until the first RT is over
        return self._request_best(now)

    def _reply(self, msg: Message6, now: float) -> list[Event6]:
        """Rules 5 to 7."""
        state = self._state
        if state is Client6State.RELEASE:  # whatever its status, the exchange is over
            self.counters["released"] += 1
            self._to_init()
            return []
        if state is Client6State.DECLINE:
            self.counters["declined"] += 1
            return self._restart(now)
        if state is Client6State.SOLICIT and msg.get(OPT_RAPID_COMMIT) is None:
            self.counters["reply-without-rapid-commit"] += 1
            return []
        self._take_sol_max_rt(msg)
        status = _status(msg)
        if status in (UNSPEC_FAIL, USE_MULTICAST):
            self.counters[f"reply-status-{status}"] += 1
            return []  # the retransmission goes on (18.2.10)
        if status == NOT_ON_LINK:
            self.counters["reply-not-on-link"] += 1
            return self._restart(now, "not-on-link")
        ia = self._our_ia(msg)
        if ia is None:
            self.counters["reply-without-our-ia"] += 1
            return []
        if ia.t1 and ia.t2 and ia.t1 > ia.t2:
            self.counters["reply-t1-above-t2"] += 1  # RFC 8415 21.4: discard the IA
            return []
        if ia.status == NO_BINDING and state in (Client6State.RENEW, Client6State.REBIND):
            self.counters["reply-no-binding"] += 1
            self._server = msg.get(OPT_SERVERID) or b""
            self._begin(Client6State.REQUEST, now, mrd_end=self._valid_end)
            return [self._transmit(now)]
        if ia.status not in (None, SUCCESS):
            self.counters[f"reply-ia-status-{_status_name(ia.status)}"] += 1
            if state is not Client6State.REQUEST:
                return []  # the lease holds until it ends; a SOLICIT goes on
            return self._restart(now)
        return self._bind(msg, ia, now)

    def _bind(self, msg: Message6, ia: IaNa, now: float) -> list[Event6]:
        """Rules 6 and 7: read everything first, then change state."""
        dns = _addresses(msg.get(OPT_DNS) or b"")
        domains = _domains(msg.get(OPT_DOMAINS) or b"")
        usable = [(a, p, v) for a, p, v in ia.addresses if p <= v]  # RFC 8415 21.6
        if len(usable) < len(ia.addresses):
            self.counters["address-preferred-above-valid"] += 1
        held = self._lease.address if self._lease is not None else None
        live = [(a, p, v) for a, p, v in usable if v > 0]
        chosen = next((entry for entry in live if entry[0] == held), live[0] if live else None)
        if chosen is None:
            if held is not None and any(a == held for a, _, _ in usable):
                self.counters["address-withdrawn"] += 1
                return self._restart(now, "withdrawn")
            self.counters["reply-without-address"] += 1
            return self._restart(now) if self._state is Client6State.REQUEST else []
        address, preferred, valid = chosen
        t1, t2 = _renewal_times(ia, preferred, valid)
        events: list[Event6] = []
        if held is not None and held != address:
            events.append(Lost6(held, "changed"))
        self.counters["bound"] += 1
        bound = Bound6(address, valid, preferred, dns, 128, domains,
                       msg.get(OPT_SERVERID) or b"", t1, t2, renewed=held == address)
        self._lease, self._address, self._server = bound, address, bound.server
        self._t1, self._t2 = now + t1, now + t2
        self._valid_end = now + _seconds(valid)
        self._state, self._xid, self._best = Client6State.BOUND, None, None
        self._deadline = min(self._t1, self._t2, self._valid_end)
        if self._deadline == math.inf:
            self._deadline = None
        return [*events, bound]

    def _our_ia(self, msg: Message6) -> IaNa | None:
        for code, data in msg.options:
            if code == OPT_IA_NA:
                ia = decode_ia_na(data)
                if ia.iaid == self.iaid:
                    return ia
        return None

    def _take_sol_max_rt(self, msg: Message6) -> None:
        """RFC 8415 21.24: a SOL_MAX_RT option in range replaces SOLICIT's MRT."""
        data = msg.get(OPT_SOL_MAX_RT)
        if data is None:
            return
        value = int.from_bytes(data[:4], "big") if len(data) == 4 else -1
        if SOL_MAX_RT_RANGE[0] <= value <= SOL_MAX_RT_RANGE[1]:
            self.sol_max_rt = float(value)
        else:
            self.counters["sol-max-rt-out-of-range"] += 1

    # -- sending --------------------------------------------------------------------------------

    def _request_best(self, now: float) -> list[Event6]:
        assert self._best is not None
        _, self._server, self._address = self._best
        self._best = None
        self._begin(Client6State.REQUEST, now)
        return [self._transmit(now)]

    def _restart(self, now: float, reason: str = "") -> list[Event6]:
        """The held lease ``Lost6``, and a new SOLICIT exchange whose first message goes
        SOL_TIMEOUT later: a server that refuses at once cannot make the client send
        faster than that."""
        events: list[Event6] = []
        if self._lease is not None:
            events.append(Lost6(self._lease.address, reason or "withdrawn"))
        self._lease, self._address, self._best = None, b"", None
        self._t1 = self._t2 = self._valid_end = math.inf
        self._begin(Client6State.SOLICIT, now)
        self._deadline = now + SOL_TIMEOUT
        return events

    def _to_init(self) -> None:
        self._state, self._xid, self._deadline, self._lease = Client6State.INIT, None, None, None
        self._address, self._best, self._sent = b"", None, 0

    def _begin(self, state: Client6State, now: float, mrd_end: float = math.inf) -> None:
        """Enter ``state`` with a new exchange (Rule 2)."""
        self._state, self._sent, self._first, self._mrd_end = state, 0, now, mrd_end
        self._xid = self._rng.getrandbits(24).to_bytes(3, "big")

    def _transmit(self, now: float) -> Send6:
        """The state's message, and the timeout before it goes again (Rule 3)."""
        kind, irt, mrt, _ = MESSAGES[self._state]
        if self._state is Client6State.SOLICIT:
            mrt = self.sol_max_rt
        if self._sent == 0:
            self._first = now
            if kind == SOLICIT:  # RFC 8415 18.2.1: the first RT strictly above IRT
                rt = irt + max(self._rng.uniform(0.0, 0.1), 0.001) * irt
            else:
                rt = irt + self._rand() * irt
        else:
            rt = 2 * self._rt + self._rand() * self._rt
        if mrt and rt > mrt:
            rt = mrt + self._rand() * mrt
        self._rt = rt
        self._sent += 1
        self._deadline = min(now + rt, self._mrd_end)
        self.counters[f"sent-{self._state.value}"] += 1
        return Send6(self._encode(kind, now))

    def _rand(self) -> float:
        return self._rng.uniform(-0.1, 0.1)

    def _encode(self, kind: int, now: float) -> bytes:
        """Rule 1."""
        assert self._xid is not None
        out = bytes([kind]) + self._xid + option(OPT_CLIENTID, self.duid)
        if kind in (REQUEST, RENEW, RELEASE, DECLINE):
            out += option(OPT_SERVERID, self._server)
        addresses = [(self._address, 0, 0)] if self._address and kind != SOLICIT else []
        out += ia_na_option(self.iaid, addresses)
        if kind not in (RELEASE, DECLINE):
            out += option(OPT_ORO, REQUESTED)
        elapsed = min(0xFFFF, round((now - self._first) * 100))  # hundredths (21.9)
        out += option(OPT_ELAPSED, struct.pack("!H", elapsed))
        if kind == SOLICIT and self.rapid_commit:
            out += option(OPT_RAPID_COMMIT, b"")
        return out


# -- reading a REPLY ---------------------------------------------------------------------------


def _status_name(code: int) -> str:
    """A status code as a counter's name: the codes RFC 8415 21.13 defines (0-6) by number,
    any other a server sends as "other" (the server chooses it: the counters stay bounded)."""
    return str(code) if 0 <= code <= NO_PREFIX_AVAIL else "other"


def _status(msg: Message6) -> int | None:
    data = msg.get(OPT_STATUS)
    return None if data is None else status_code(data)


def _seconds(lifetime: int) -> float:
    return math.inf if lifetime == INFINITY else float(lifetime)


def _renewal_times(ia: IaNa, preferred: int, valid: int) -> tuple[float, float]:
    """Rule 7: T1 and T2 in seconds after the REPLY, within the valid lifetime."""
    if ia.t1 and ia.t2:
        t1, t2 = _seconds(ia.t1), _seconds(ia.t2)
    else:  # the client's choice (RFC 8415 21.4): 0.5 and 0.8 of the preferred lifetime
        t1, t2 = _seconds(preferred) * 0.5, _seconds(preferred) * 0.8
    end = _seconds(valid)
    t2 = min(t2, end)
    return min(t1, t2), t2


def _addresses(data: bytes) -> tuple[bytes, ...]:
    """A list of IPv6 addresses (the DNS servers option, RFC 3646 3)."""
    if len(data) % 16:
        raise MalformedPacket("DNS servers option not a multiple of 16 bytes")
    return tuple(data[i:i + 16] for i in range(0, len(data), 16))


def _domains(data: bytes) -> tuple[str, ...]:
    """The domain search list (RFC 3646 4): uncompressed DNS names, each ending in a root
    label; at most ``MAX_DOMAINS``."""
    names: list[str] = []
    labels: list[str] = []
    at = 0
    while at < len(data) and len(names) < MAX_DOMAINS:
        length = data[at]
        if length == 0:
            if labels:
                names.append(".".join(labels))
            labels, at = [], at + 1
            continue
        if length > 63 or at + 1 + length > len(data):
            raise MalformedPacket("domain list label overruns the option")
        labels.append(data[at + 1:at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    return tuple(names)
