"""The DHCPv6 client core (dhcp.client6) against our own server (dhcp.dhcp6) in memory, and
against replies scapy builds: lease, renew, rebind, release, lost, and the RFC 8415 timers."""

import math
import random
from ipaddress import IPv6Address

import pytest
from scapy.layers.dhcp6 import (
    DHCP6,
    DUID_LL,
    DHCP6_Advertise,
    DHCP6_Reconf,
    DHCP6_Reply,
    DHCP6OptClientId,
    DHCP6OptElapsedTime,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptOptReq,
    DHCP6OptPref,
    DHCP6OptRapidCommit,
    DHCP6OptServerId,
    DHCP6OptStatusCode,
)

from dhcp.client6 import (
    REL_MAX_RC,
    REQ_MAX_RC,
    Bound6,
    Client6State,
    Dhcp6Client,
    InvalidTransition,
    Lost6,
    Send6,
)
from dhcp.dhcp6 import Dhcp6Config, Dhcp6Server

MAC = bytes.fromhex("525400aabbcc")
FIRST, LAST = int(IPv6Address("2001:db8:1::100")), int(IPv6Address("2001:db8:1::1ff"))
DNS = IPv6Address("2001:db8:1::53").packed
T0 = 1000.0  # the adapter's loop.time()
SERVER_DUID = DUID_LL(lladdr="52:54:00:00:00:02")


def uplink_server(**kw) -> Dhcp6Server:
    """The uplink network's DHCPv6 server, as the ISP's or the lab's would be."""
    return Dhcp6Server(Dhcp6Config(bytes.fromhex("525400000002"), DNS, FIRST, LAST,
                                   int(IPv6Address("2001:db8:1::")), 64, {},
                                   domain="uplink.test", lease_time=3600, **kw))


def client(**kw) -> Dhcp6Client:
    return Dhcp6Client(MAC, rng=random.Random(7), **kw)


def sends(events) -> list[Send6]:
    return [e for e in events if isinstance(e, Send6)]


def exchange(c: Dhcp6Client, srv: Dhcp6Server, events, now: float) -> list:
    """Deliver the client's messages to the server and its answers back; the client's events."""
    out = []
    for send in sends(events):
        assert send.dst == IPv6Address("ff02::1:2").packed
        answer = srv.handle(send.payload, MAC, now)
        if answer is not None:
            out += c.receive(answer, now)
    return out


def first_solicit(c: Dhcp6Client, now: float = T0) -> tuple[float, list]:
    assert c.start(now) == []
    deadline = c.next_deadline()
    assert deadline is not None and now <= deadline <= now + 1.0  # SOL_MAX_DELAY (18.2.1)
    return deadline, c.tick(deadline)


def leased(c: Dhcp6Client, srv: Dhcp6Server) -> tuple[float, Bound6]:
    now, events = first_solicit(c)
    (bound,) = exchange(c, srv, events, now)
    assert isinstance(bound, Bound6)
    return now, bound


def test_rapid_commit_leases_at_once_with_the_options_a_client_must_send():
    srv, c = uplink_server(), client()
    now, events = first_solicit(c)
    (solicit,) = sends(events)
    msg = DHCP6(solicit.payload)
    assert msg.msgtype == 1 and DHCP6OptRapidCommit in msg
    assert msg[DHCP6OptClientId].duid.lladdr == "52:54:00:aa:bb:cc"
    assert msg[DHCP6OptClientId].duid.type == 3  # DUID-LL (RFC 8415 11.4)
    assert msg[DHCP6OptIA_NA].iaid == c.iaid and msg[DHCP6OptElapsedTime].elapsedtime == 0
    assert set(msg[DHCP6OptOptReq].reqopts) == {23, 24, 82}
    assert DHCP6OptServerId not in msg
    (bound,) = exchange(c, srv, events, now)
    assert FIRST <= int(IPv6Address(bound.address)) <= LAST and bound.prefix_len == 128
    assert (bound.valid, bound.preferred, bound.t1, bound.t2) == (3600, 3600, 1800.0, 2880.0)
    assert bound.dns == (DNS,) and bound.domains == ("uplink.test",) and not bound.renewed
    assert c.state is Client6State.BOUND and c.next_deadline() == now + 1800.0
    assert [lease.ip for lease in srv.leases()] == [int(IPv6Address(bound.address))]


def test_without_rapid_commit_advertise_is_collected_for_the_first_rt_then_requested():
    srv, c = uplink_server(), client(rapid_commit=False)
    now, events = first_solicit(c)
    assert DHCP6OptRapidCommit not in DHCP6(sends(events)[0].payload)
    assert exchange(c, srv, events, now) == [], "ADVERTISE: collect for the first RT"
    retry = c.next_deadline()
    assert retry is not None and now + 1.0 < retry <= now + 1.1  # RFC 8415 18.2.1: RT > IRT
    (request,) = sends(c.tick(retry))
    msg = DHCP6(request.payload)
    assert msg.msgtype == 3 and bytes(msg[DHCP6OptServerId].duid) == srv.duid
    assert msg[DHCP6OptElapsedTime].elapsedtime == 0, "a new exchange"
    (bound,) = exchange(c, srv, [request], retry)
    assert msg[DHCP6OptIAAddress].addr == str(IPv6Address(bound.address))


def test_an_advertise_with_preference_255_is_taken_at_once():
    c = client(rapid_commit=False)
    now, events = first_solicit(c)
    trid = DHCP6(sends(events)[0].payload).trid
    advertise = DHCP6_Advertise(trid=trid) / DHCP6OptServerId(duid=SERVER_DUID) \
        / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:bb:cc")) / DHCP6OptPref(prefval=255) \
        / DHCP6OptIA_NA(iaid=c.iaid, ianaopts=[DHCP6OptIAAddress(addr="2001:db8:1::7",
                                                                 preflft=300, validlft=600)])
    (request,) = sends(c.receive(bytes(advertise), now + 0.1))
    assert DHCP6(request.payload)[DHCP6OptIAAddress].addr == "2001:db8:1::7"


def test_renew_at_t1_extends_the_lease():
    srv, c = uplink_server(), client()
    now, bound = leased(c, srv)
    assert c.tick(now + 1799.0) == []
    (renew,) = sends(c.tick(now + 1800.0))
    msg = DHCP6(renew.payload)
    assert msg.msgtype == 5 and bytes(msg[DHCP6OptServerId].duid) == srv.duid
    assert msg[DHCP6OptIAAddress].addr == str(IPv6Address(bound.address))
    assert (msg[DHCP6OptIAAddress].preflft, msg[DHCP6OptIAAddress].validlft) == (0, 0)
    (again,) = exchange(c, srv, [renew], now + 1800.0)
    assert isinstance(again, Bound6) and again.renewed and again.address == bound.address
    assert c.state is Client6State.BOUND and c.next_deadline() == now + 3600.0


def test_unanswered_renews_back_off_then_rebind_at_t2_to_any_server():
    srv, c = uplink_server(), client()
    now, bound = leased(c, srv)
    t = now + 1800.0
    times, kinds = [], []
    while t < now + 2880.0:
        events = c.tick(t)
        if events:
            times.append(t)
            kinds.append(DHCP6(sends(events)[0].payload).msgtype)
        t = c.next_deadline()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert kinds and set(kinds) == {5}
    assert 9.0 <= gaps[0] <= 11.0 and all(g <= 660.0 for g in gaps), "REN_TIMEOUT, REN_MAX_RT"
    assert t == now + 2880.0, "a retransmission never passes T2 (its MRD)"
    (rebind,) = sends(c.tick(t))
    msg = DHCP6(rebind.payload)
    assert msg.msgtype == 6 and DHCP6OptServerId not in msg
    assert c.state is Client6State.REBIND
    (again,) = exchange(c, srv, [rebind], t)
    assert isinstance(again, Bound6) and again.renewed and c.state is Client6State.BOUND


def test_release_gives_the_lease_back_and_is_retransmitted_at_most_rel_max_rc_times():
    srv, c = uplink_server(), client()
    now, bound = leased(c, srv)
    (release,) = sends(c.stop(now + 10.0))
    msg = DHCP6(release.payload)
    assert msg.msgtype == 8 and msg[DHCP6OptIAAddress].addr == str(IPv6Address(bound.address))
    assert DHCP6OptOptReq not in msg and c.lease is None
    assert exchange(c, srv, [release], now + 10.0) == []
    assert srv.leases() == [] and c.state is Client6State.INIT and c.next_deadline() is None
    # nobody answers: REL_MAX_RC transmissions, then INIT
    c2 = client()
    now, _ = leased(c2, uplink_server())
    count = len(c2.stop(now))
    while (deadline := c2.next_deadline()) is not None:
        count += len(c2.tick(deadline))
    assert count == REL_MAX_RC == 4 and c2.state is Client6State.INIT  # RFC 8415 7.6
    assert c2.start(now + 100.0) == [], "startable again"


def test_a_lease_nobody_renews_is_lost_at_the_end_of_its_valid_lifetime():
    srv, c = uplink_server(), client()
    now, bound = leased(c, srv)
    events, t = [], now
    while (deadline := c.next_deadline()) is not None and deadline <= now + 3600.0:
        t = deadline
        events += c.tick(t)
    lost = [e for e in events if isinstance(e, Lost6)]
    assert lost == [Lost6(bound.address, "expired")] and t == now + 3600.0
    assert c.state is Client6State.SOLICIT and c.lease is None
    (solicit,) = sends(c.tick(c.next_deadline()))
    assert DHCP6(solicit.payload).msgtype == 1


def test_no_binding_to_renew_requests_again_and_lifetimes_0_to_rebind_lose_the_address():
    srv, c = uplink_server(), client()
    now, bound = leased(c, srv)
    srv.table.remove(int(IPv6Address(bound.address)))  # the server forgot it
    (renew,) = sends(c.tick(now + 1800.0))
    (request,) = sends(exchange(c, srv, [renew], now + 1800.0))
    assert DHCP6(request.payload).msgtype == 3 and c.state is Client6State.REQUEST
    (again,) = exchange(c, srv, [request], now + 1800.0)
    assert isinstance(again, Bound6) and again.address == bound.address and again.renewed
    # a rebind the server does not know: the address comes back with lifetimes 0
    srv.table.remove(int(IPv6Address(bound.address)))
    t = now + 1800.0 + 2880.0
    (rebind,) = sends(c.tick(t))
    assert DHCP6(rebind.payload).msgtype == 6
    assert exchange(c, srv, [rebind], t) == [Lost6(bound.address, "withdrawn")]
    assert c.state is Client6State.SOLICIT and c.next_deadline() == t + 1.0


def test_decline_reports_the_loss_and_starts_over():
    srv, c = uplink_server(), client()
    now, bound = leased(c, srv)
    events = c.decline(now + 1.0)
    assert events[0] == Lost6(bound.address, "declined")
    msg = DHCP6(sends(events)[0].payload)
    assert msg.msgtype == 9 and msg[DHCP6OptIAAddress].addr == str(IPv6Address(bound.address))
    assert exchange(c, srv, events, now + 1.0) == []
    assert c.state is Client6State.SOLICIT
    (solicit,) = sends(c.tick(now + 2.0))
    (other,) = exchange(c, srv, [solicit], now + 2.0)
    assert isinstance(other, Bound6) and other.address != bound.address  # quarantined


def test_solicit_backs_off_to_sol_max_rt_and_request_gives_up_after_req_max_rc():
    c = client(rapid_commit=False)
    now, _ = first_solicit(c)
    gaps = []
    for _ in range(16):
        deadline = c.next_deadline()
        gaps.append(deadline - now)
        now = deadline
        c.tick(now)
    assert 1.0 < gaps[0] <= 1.1 and 1.8 <= gaps[1] <= 2.42
    assert max(gaps) <= 3600.0 * 1.1 and gaps[-1] >= 3600.0 * 0.9, "SOL_MAX_RT bounds it"
    # an advertised address whose REQUEST nobody answers: REQ_MAX_RC, then SOLICIT again
    c = client(rapid_commit=False)
    now, events = first_solicit(c)
    trid = DHCP6(sends(events)[0].payload).trid
    advertise = DHCP6_Advertise(trid=trid) / DHCP6OptServerId(duid=SERVER_DUID) \
        / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:bb:cc")) \
        / DHCP6OptIA_NA(iaid=c.iaid, ianaopts=[DHCP6OptIAAddress(addr="2001:db8:1::7",
                                                                 preflft=300, validlft=600)])
    c.receive(bytes(advertise), now)
    kinds = []
    assert REQ_MAX_RC == 10  # RFC 8415 7.6
    for _ in range(REQ_MAX_RC + 2):
        now = c.next_deadline()
        kinds += [DHCP6(s.payload).msgtype for s in sends(c.tick(now))]
    assert kinds[:REQ_MAX_RC] == [3] * REQ_MAX_RC and kinds[REQ_MAX_RC:] == [1]
    assert c.counters["requesting-gave-up"] == 1


def reply_to(c: Dhcp6Client, events, *options, msg=DHCP6_Reply):
    trid = DHCP6(sends(events)[0].payload).trid
    packet = msg(trid=trid)
    for opt in options:
        packet /= opt
    return bytes(packet)


OURS = DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:bb:cc"))


@pytest.mark.parametrize("code, counter", [(2, "reply-ia-status-2"), (6, "reply-ia-status-6"),
                                           (7, "reply-ia-status-other"),
                                           (0xFFFF, "reply-ia-status-other")])
def test_an_ia_status_is_counted_by_its_code_or_as_other_when_rfc_8415_defines_none(code,
                                                                                     counter):
    """A server chooses the code (65536 of them): those RFC 8415 21.13 does not define share
    one counter."""
    c = client()
    now, events = first_solicit(c)
    ia = DHCP6OptIA_NA(iaid=c.iaid, ianaopts=[DHCP6OptStatusCode(statuscode=code)])
    answer = reply_to(c, events, OURS, DHCP6OptServerId(duid=SERVER_DUID),
                      DHCP6OptRapidCommit(), ia)
    assert c.receive(answer, now) == [] and c.counters[counter] == 1
    assert [k for k in c.counters if k.startswith("reply-ia-status-")] == [counter]
    assert c.state is Client6State.SOLICIT


@pytest.mark.parametrize("options, counter", [
    ((OURS, DHCP6OptServerId(duid=SERVER_DUID), DHCP6OptRapidCommit()), "reply-without-our-ia"),
    ((DHCP6OptServerId(duid=SERVER_DUID), DHCP6OptRapidCommit()), "wrong-client-id"),
    ((OURS, DHCP6OptRapidCommit()), "no-server-id"),
    ((DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:00:00:77")),
      DHCP6OptServerId(duid=SERVER_DUID), DHCP6OptRapidCommit()), "wrong-client-id"),
    ((OURS, DHCP6OptServerId(duid=SERVER_DUID)), "reply-without-rapid-commit"),
    ((OURS, DHCP6OptServerId(duid=SERVER_DUID), DHCP6OptRapidCommit(),
      DHCP6OptStatusCode(statuscode=1)), "reply-status-1"),
    ((OURS, DHCP6OptServerId(duid=SERVER_DUID), DHCP6OptRapidCommit(),
      DHCP6OptIA_NA(iaid=int.from_bytes(MAC[2:], "big"), T1=500, T2=100,
                    ianaopts=[DHCP6OptIAAddress(addr="2001:db8:1::7")])), "reply-t1-above-t2"),
])
def test_replies_that_are_not_for_us_or_not_usable_are_counted(options, counter):
    c = client()
    now, events = first_solicit(c)
    answer = reply_to(c, events, *options)
    assert c.receive(answer, now) == [] and c.counters[counter] == 1
    assert c.state is Client6State.SOLICIT


def test_bad_transactions_reconfigure_and_junk_are_ignored():
    c = client()
    now, events = first_solicit(c)
    good = DHCP6(reply_to(c, events, OURS, DHCP6OptServerId(duid=SERVER_DUID)))
    good.trid ^= 1
    assert c.receive(bytes(good), now) == [] and c.counters["wrong-transaction"] == 1
    assert c.receive(bytes(DHCP6_Reconf(trid=0) / OURS), now) == []
    assert c.counters["reconfigure-ignored"] == 1
    for junk in (b"", b"\x07", b"\x07abc\x00\x01\xff\xff"):
        assert c.receive(junk, now) == []
    assert c.counters["malformed"] == 3 and c.state is Client6State.SOLICIT


def test_a_reply_gives_infinite_and_zero_t1_t2_their_rfc_meaning():
    c = client()
    now, events = first_solicit(c)
    ia = DHCP6OptIA_NA(iaid=c.iaid, T1=0, T2=0, ianaopts=[
        DHCP6OptIAAddress(addr="2001:db8:1::7", preflft=1000, validlft=2000)])
    (bound,) = c.receive(reply_to(c, events, OURS, DHCP6OptServerId(duid=SERVER_DUID),
                                  DHCP6OptRapidCommit(), ia), now)
    assert (bound.t1, bound.t2) == (500.0, 800.0), "0.5 and 0.8 of preferred (RFC 8415 21.4)"
    c = client()
    now, events = first_solicit(c)
    ia = DHCP6OptIA_NA(iaid=c.iaid, T1=0xFFFFFFFF, T2=0xFFFFFFFF, ianaopts=[
        DHCP6OptIAAddress(addr="2001:db8:1::7", preflft=0xFFFFFFFF, validlft=0xFFFFFFFF)])
    (bound,) = c.receive(reply_to(c, events, OURS, DHCP6OptServerId(duid=SERVER_DUID),
                                  DHCP6OptRapidCommit(), ia), now)
    assert bound.t1 == math.inf and c.next_deadline() is None, "an infinite lease"


def test_start_twice_is_refused():
    c = client()
    c.start(T0)
    with pytest.raises(InvalidTransition):
        c.start(T0)
