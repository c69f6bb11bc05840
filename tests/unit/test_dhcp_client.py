"""The DHCP client core driven by hand: against the server core, against scapy-built replies,
and through its timers with a hand-advanced clock."""

import ipaddress
import math
import random
from dataclasses import replace

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from dhcp.client import (
    PARAMETERS,
    Bound,
    ClientState,
    DhcpClient,
    InvalidTransition,
    Lost,
    Send,
)
from dhcp.leases import LeaseReleased, LeaseState
from dhcp.message import ZERO_IP, DhcpMessage, MessageType, decode_message, encode_message
from dhcp.server import DhcpConfig, DhcpServer

from .test_dhcp_message import BAD

T0 = 1000.0  # the adapter's loop.time()
MAC = bytes.fromhex("525400aabbcc")
BCAST = b"\xff" * 4


def b(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


SERVER = b("10.0.2.2")


def uplink_server(**overrides: object) -> DhcpServer:
    """The uplink network's DHCP server, as the ISP's or the lab's would be."""
    settings: dict[str, object] = dict(
        server_ip=ip("10.0.2.2"), network=ip("10.0.2.0"), prefix=24,
        range_first=ip("10.0.2.15"), range_last=ip("10.0.2.99"), router=ip("10.0.2.2"),
        dns_servers=(ip("10.0.2.3"),), domain="uplink.test", mtu=1400, lease_time=3600)
    settings.update(overrides)
    return DhcpServer(DhcpConfig(**settings))  # type: ignore[arg-type]


def to_server(server: DhcpServer, send: Send, now: float) -> list[bytes]:
    """Deliver what the client sends; return the payloads of the server's replies."""
    return [r.payload for r in server.handle(send.payload, MAC, send.src_ip, now)]


def bound_pair(now: float = T0) -> tuple[DhcpClient, DhcpServer, Bound]:
    """A client bound by the server core at ``now``."""
    client, server = DhcpClient(MAC, "edge", rng=random.Random(1)), uplink_server()
    [discover] = client.start(now)
    [offer] = to_server(server, discover, now)
    [request] = client.handle(offer, now)
    [ack] = to_server(server, request, now)
    [bound] = client.handle(ack, now)
    assert isinstance(bound, Bound)
    return client, server, bound


def run_clock(client: DhcpClient, until: float) -> list[tuple[float, Send | Lost]]:
    """Fire every deadline up to ``until`` with nobody answering: (seconds after T0, action)."""
    out: list[tuple[float, Send | Lost]] = []
    deadline = client.next_deadline()
    while deadline is not None and deadline <= until:
        out += [(deadline - T0, action) for action in client.expire(deadline)]
        deadline = client.next_deadline()
    return out


def reply(mtype: str, xid: int, yiaddr: str = "0.0.0.0", chaddr: bytes = MAC,
          options: tuple[object, ...] = (("server_id", "10.0.2.2"),), op: int = 2) -> bytes:
    """A reply built by scapy, the independent implementation."""
    return bytes(BOOTP(op=op, xid=xid, yiaddr=yiaddr, chaddr=chaddr)
                 / DHCP(options=[("message-type", mtype), *options, "end"]))


def xid_of(send: Send) -> int:
    return decode_message(send.payload).xid


class FixedJitter(random.Random):
    """An rng whose +-1 s retransmission jitter is fixed; xids stay random."""

    def __init__(self, jitter: float) -> None:
        super().__init__(7)
        self.jitter = jitter

    def uniform(self, a: float, b: float) -> float:
        assert (a, b) == (-1.0, 1.0)
        return self.jitter


def requesting(rng: random.Random | None = None, now: float = T0) -> tuple[DhcpClient, int]:
    """A client that took a scapy OFFER of 192.0.2.9 from 10.0.2.2 at ``now``; and the xid."""
    client = DhcpClient(MAC, rng=rng or random.Random(3))
    xid = xid_of(client.start(now)[0])
    [request] = client.handle(reply("offer", xid, "192.0.2.9"), now)
    assert client.state is ClientState.REQUESTING
    return client, xid


# -- against the server core ----------------------------------------------------------------


def test_dora_against_the_server_core():
    """DISCOVER, OFFER, REQUEST, ACK between the two cores: the client ends BOUND with the
    server's configuration, the server holds a bound lease named after the client."""
    client, server = DhcpClient(MAC, "edge", rng=random.Random(1)), uplink_server()
    [discover] = client.start(T0)
    msg = decode_message(discover.payload)
    assert (discover.dst_ip, discover.broadcast, discover.src_ip) == (BCAST, True, ZERO_IP)
    assert msg.message_type() == MessageType.DISCOVER and msg.ciaddr == ZERO_IP
    assert msg.client_id() == b"\x01" + MAC and msg.hostname() == b"edge"
    assert msg.parameter_request_list() == bytes([1, 3, 6, 15, 26, 51, 58, 59]) == PARAMETERS
    assert client.state is ClientState.SELECTING

    [offer] = to_server(server, discover, T0)
    [request] = client.handle(offer, T0 + 0.5)
    req = decode_message(request.payload)
    assert (request.dst_ip, request.broadcast, request.src_ip) == (BCAST, True, ZERO_IP)
    assert req.message_type() == MessageType.REQUEST and req.xid == msg.xid
    assert req.server_id() == SERVER and req.requested_ip() == decode_message(offer).yiaddr
    assert req.ciaddr == ZERO_IP and req.client_id() == msg.client_id()
    assert req.parameter_request_list() == PARAMETERS
    assert client.state is ClientState.REQUESTING

    [ack] = to_server(server, request, T0 + 0.5)
    [bound] = client.handle(ack, T0 + 0.6)
    assert bound == Bound(address=req.requested_ip(), prefix=24, router=SERVER,
                          dns=(b("10.0.2.3"),), lease_time=3600, server=SERVER, mtu=1400,
                          domain="uplink.test", renewed=False)
    assert client.state is ClientState.BOUND and client.lease == bound
    # T1/T2 from options 58/59 (1800, 3150), counted from when the REQUEST was sent.
    assert client.lease_timers == (T0 + 1800.5, T0 + 3150.5, T0 + 3600.5)
    assert client.next_deadline() == T0 + 1800.5
    [lease] = server.leases()
    assert (lease.ip, lease.mac, lease.hostname, lease.state) == (
        ip("10.0.2.0") + bound.address[3], MAC, "edge", LeaseState.BOUND)
    assert client.counters == {"sent_discover": 1, "sent_request": 1, "received_offer": 1,
                               "received_ack": 1}


def test_renewal_at_t1_is_unicast_to_the_server_with_ciaddr():
    """At T1 the client asks its server, unicast from its address, with a new xid, ciaddr set
    and neither option 50 nor 54 (RFC 2131 4.3.2); the ACK renews for another 3600 s."""
    client, server, bound = bound_pair()
    assert client.expire(T0 + 1799.9) == []
    [renew] = client.expire(T0 + 1800)
    msg = decode_message(renew.payload)
    assert client.state is ClientState.RENEWING
    assert (renew.dst_ip, renew.broadcast, renew.src_ip) == (SERVER, False, bound.address)
    assert msg.message_type() == MessageType.REQUEST and msg.ciaddr == bound.address
    assert msg.requested_ip() is None and msg.server_id() is None
    assert client.next_deadline() == T0 + 1800 + 675  # half the 1350 s left to T2

    [ack] = to_server(server, renew, T0 + 1800)
    assert client.handle(ack, T0 + 1801) == [replace(bound, renewed=True)]
    assert client.state is ClientState.BOUND
    assert client.lease_timers == (T0 + 3600, T0 + 4950, T0 + 5400)


def test_unanswered_renewal_retries_at_half_the_time_left_then_rebinds_at_t2():
    """RENEWING retries at half the time left to T2 (at least 60 s, not past T2); at T2 the
    client broadcasts to any server (REBINDING), and the server's ACK rebinds it."""
    client, server, bound = bound_pair()
    sent = run_clock(client, T0 + 3149)
    assert [t for t, _ in sent] == [1800, 2475, 2812.5, 2981.25, 3065.625, 3125.625]
    assert all(s.dst_ip == SERVER and not s.broadcast for _, s in sent if isinstance(s, Send))
    assert len({xid_of(s) for _, s in sent if isinstance(s, Send)}) == 1

    [rebind] = client.expire(T0 + 3150)
    msg = decode_message(rebind.payload)
    assert client.state is ClientState.REBINDING
    assert (rebind.dst_ip, rebind.broadcast, rebind.src_ip) == (BCAST, True, bound.address)
    assert msg.ciaddr == bound.address and msg.server_id() is None and msg.requested_ip() is None
    assert msg.xid != xid_of(sent[0][1])  # type: ignore[arg-type]
    assert client.next_deadline() == T0 + 3150 + 225  # half the 450 s left of the lease

    [ack] = to_server(server, rebind, T0 + 3150)
    assert client.handle(ack, T0 + 3150) == [replace(bound, renewed=True)]
    assert client.next_deadline() == T0 + 3150 + 1800


def test_expiry_loses_the_address_and_starts_over():
    """Nobody answers RENEWING or REBINDING: at the lease's end the address is Lost and the
    client is back to a DISCOVER with a new xid, which the server answers again."""
    client, server, bound = bound_pair()
    sent = run_clock(client, T0 + 3600)
    assert [t for t, _ in sent if t > 3150] == [3375, 3487.5, 3547.5, 3600, 3600]
    lost, discover = sent[-2][1], sent[-1][1]
    assert lost == Lost(bound.address, "expired")
    assert isinstance(discover, Send) and discover.src_ip == ZERO_IP and discover.broadcast
    assert decode_message(discover.payload).message_type() == MessageType.DISCOVER
    assert client.state is ClientState.SELECTING and client.lease is None
    assert client.counters["lease_expired"] == 1

    [offer] = to_server(server, discover, T0 + 3600)
    [request] = client.handle(offer, T0 + 3600)
    [ack] = to_server(server, request, T0 + 3600)
    assert client.handle(ack, T0 + 3600) == [bound]


def test_nak_while_rebinding_loses_the_address():
    """The old server is gone and the network renumbered: at T2 a new authoritative server
    NAKs the rebinding; the address is Lost and the client starts over with a DISCOVER."""
    client, _, bound = bound_pair()
    run_clock(client, T0 + 3149)
    [rebind] = client.expire(T0 + 3150)
    new = uplink_server(server_ip=ip("10.0.3.1"), network=ip("10.0.3.0"), router=ip("10.0.3.1"),
                        range_first=ip("10.0.3.10"), range_last=ip("10.0.3.20"),
                        authoritative=True)
    [nak] = to_server(new, rebind, T0 + 3150)
    lost, discover = client.handle(nak, T0 + 3150)
    assert lost == Lost(bound.address, "nak")
    assert isinstance(discover, Send) and decode_message(discover.payload).message_type() == 1
    assert client.state is ClientState.SELECTING

    [offer] = to_server(new, discover, T0 + 3150)
    [request] = client.handle(offer, T0 + 3150)
    [ack] = to_server(new, request, T0 + 3150)
    [rebound] = client.handle(ack, T0 + 3150)
    assert isinstance(rebound, Bound) and rebound.server == b("10.0.3.1")


def test_release_gives_the_lease_back():
    """release() unicasts a RELEASE (ciaddr, server id, client id) to the server, which frees
    the lease; the client is in INIT with no timer and ignores late replies."""
    client, server, bound = bound_pair()
    server.pop_events()
    [release] = client.release(T0 + 10)
    msg = decode_message(release.payload)
    assert (release.dst_ip, release.broadcast, release.src_ip) == (SERVER, False, bound.address)
    assert msg.message_type() == MessageType.RELEASE and msg.ciaddr == bound.address
    assert msg.server_id() == SERVER and msg.client_id() == b"\x01" + MAC
    assert msg.parameter_request_list() is None
    assert to_server(server, release, T0 + 10) == []
    assert [type(e) for e in server.pop_events()] == [LeaseReleased] and server.leases() == []
    assert client.state is ClientState.INIT and client.next_deadline() is None
    assert client.lease is None and client.lease_timers is None
    assert client.handle(reply("nak", msg.xid), T0 + 11) == []
    assert client.release(T0 + 12) == []
    assert len(client.start(T0 + 13)) == 1  # it can start again


# -- against scapy-built replies --------------------------------------------------------------


def test_dora_against_scapy_replies():
    """scapy reads the client's messages and builds the OFFER and ACK; no T1/T2 options, so
    they default to 0.5 and 0.875 of the lease (RFC 2131 4.4.5)."""
    client = DhcpClient(MAC, "edge", rng=random.Random(5))
    [discover] = client.start(T0)
    seen = BOOTP(discover.payload)
    options = dict(o for o in seen[DHCP].options if isinstance(o, tuple))
    assert options["message-type"] == 1 and options["client_id"] == b"\x01" + MAC
    assert options["hostname"] == b"edge" and options["param_req_list"] == list(PARAMETERS)
    assert seen.chaddr[:6] == MAC and seen.flags == 0

    offer = reply("offer", seen.xid, "192.0.2.9", options=(("server_id", "192.0.2.1"),
                                                          ("lease_time", 300)))
    [request] = client.handle(offer, T0 + 1)
    options = dict(o for o in BOOTP(request.payload)[DHCP].options if isinstance(o, tuple))
    assert options["requested_addr"] == "192.0.2.9" and options["server_id"] == "192.0.2.1"

    ack = reply("ack", seen.xid, "192.0.2.9", options=(
        ("server_id", "192.0.2.1"), ("lease_time", 300), ("subnet_mask", "255.255.254.0"),
        ("router", "192.0.2.1", "192.0.2.2"), ("name_server", "1.1.1.1", "9.9.9.9"),
        ("domain", b"example.net"), ("interface-mtu", 1492)))
    assert client.handle(ack, T0 + 2) == [Bound(
        address=b("192.0.2.9"), prefix=23, router=b("192.0.2.1"),
        dns=(b("1.1.1.1"), b("9.9.9.9")), lease_time=300, server=b("192.0.2.1"), mtu=1492,
        domain="example.net")]
    assert client.lease_timers == (T0 + 1 + 150, T0 + 1 + 262.5, T0 + 1 + 300)


@pytest.mark.parametrize(("t1", "t2", "expected"), [
    (100, 200, (100, 200)),  # the server's values
    (250, 200, (150, 200)),  # T1 after T2: T1 defaults (0.5), kept below T2
    (100, 300, (100, 262.5)),  # T2 not before the lease's end: T2 defaults (0.875)
    (200, 100, (100, 100)),  # T2 below the default T1: T1 is T2, rebinding straight away
])
def test_renewal_times_from_options_58_and_59(t1, t2, expected):
    client, xid = requesting()
    ack = reply("ack", xid, "192.0.2.9", options=(
        ("server_id", "10.0.2.2"), ("lease_time", 300), ("renewal_time", t1),
        ("rebinding_time", t2)))
    client.handle(ack, T0 + 5)
    assert client.lease_timers == (T0 + expected[0], T0 + expected[1], T0 + 300)


def test_infinite_lease_sets_no_timer():
    """Lease time 0xffffffff is infinite (RFC 2131 3.3): no renewal, nothing to wait for."""
    client, xid = requesting()
    [bound] = client.handle(reply("ack", xid, "192.0.2.9", options=(
        ("server_id", "10.0.2.2"), ("lease_time", 0xFFFFFFFF))), T0)
    assert isinstance(bound, Bound) and bound.prefix == 24  # no mask: class C
    assert client.next_deadline() is None and client.lease_timers == (math.inf,) * 3


def test_nak_while_requesting_starts_over_without_a_loss():
    client, xid = requesting()
    [discover] = client.handle(reply("nak", xid), T0 + 1)
    assert decode_message(discover.payload).message_type() == MessageType.DISCOVER
    assert xid_of(discover) != xid and client.state is ClientState.SELECTING


def test_nak_while_renewing_loses_the_address():
    client, xid = requesting()
    client.handle(reply("ack", xid, "192.0.2.9", options=(
        ("server_id", "10.0.2.2"), ("lease_time", 300))), T0)
    [renew] = client.expire(T0 + 150)
    lost, discover = client.handle(reply("nak", xid_of(renew)), T0 + 151)
    assert lost == Lost(b("192.0.2.9"), "nak") and isinstance(discover, Send)
    assert client.state is ClientState.SELECTING and client.lease is None


def test_renewal_ack_with_another_address_replaces_the_lease():
    """RFC 2131 4.4.5: a client given a new address must stop using the old one."""
    client, xid = requesting()
    client.handle(reply("ack", xid, "192.0.2.9", options=(
        ("server_id", "10.0.2.2"), ("lease_time", 300))), T0)
    [renew] = client.expire(T0 + 150)
    lost, bound = client.handle(reply("ack", xid_of(renew), "192.0.2.10", options=(
        ("server_id", "10.0.2.2"), ("lease_time", 300))), T0 + 151)
    assert lost == Lost(b("192.0.2.9"), "changed")
    assert isinstance(bound, Bound) and bound.address == b("192.0.2.10") and not bound.renewed


# -- retransmission -------------------------------------------------------------------------


@pytest.mark.parametrize(("jitter", "times"), [
    (0.0, [0, 4, 12, 28, 60, 124, 188, 252]),
    (1.0, [0, 5, 14, 31, 64, 129, 194]),
    (-1.0, [0, 3, 10, 25, 56, 119, 182, 245]),
])
def test_discover_backoff_4_8_16_32_64_then_every_64(jitter, times):
    """RFC 2131 4.1: waits of 4, 8, 16, 32, 64 s, +-1 s, same xid; SELECTING never gives up."""
    client = DhcpClient(MAC, rng=FixedJitter(jitter))
    [first] = client.start(T0)
    sent = [(0.0, first), *run_clock(client, T0 + 255)]
    assert [t for t, _ in sent] == times
    assert {xid_of(s) for _, s in sent if isinstance(s, Send)} == {xid_of(first)}


def test_backoff_jitter_from_a_seeded_rng_stays_within_one_second():
    client = DhcpClient(MAC, rng=random.Random(42))
    client.start(T0)
    times = [0.0] + [t for t, _ in run_clock(client, T0 + 1000)]
    waits = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    nominal = [4, 8, 16, 32] + [64] * (len(waits) - 4)
    assert all(abs(w - n) <= 1 for w, n in zip(waits, nominal, strict=True))
    assert len(set(waits)) > 5  # randomised, not fixed


def test_unanswered_request_gives_up_after_the_64_s_wait():
    """REQUESTING retransmits at 4, 8, 16, 32 s, waits 64 s more, then reverts to INIT and
    sends a DISCOVER with a new xid (RFC 2131 4.4.1)."""
    client, xid = requesting(FixedJitter(0.0))
    sent = run_clock(client, T0 + 124)
    assert [t for t, _ in sent] == [4, 12, 28, 60, 124]
    kinds = [decode_message(s.payload).message_type() for _, s in sent if isinstance(s, Send)]
    assert kinds == [MessageType.REQUEST] * 4 + [MessageType.DISCOVER]
    assert xid_of(sent[-1][1]) != xid  # type: ignore[arg-type]
    assert client.state is ClientState.SELECTING and client.counters["request_timeout"] == 1


# -- replies that are not for us ------------------------------------------------------------


def test_replies_for_other_exchanges_are_counted_and_ignored():
    """Only a BOOTREPLY with the pending xid and our chaddr, of a type the state expects, from
    the chosen server, changes anything."""
    client = DhcpClient(MAC, rng=random.Random(9))
    xid = xid_of(client.start(T0)[0])
    deadline = client.next_deadline()
    ignored = {
        "wrong_xid": reply("offer", xid ^ 1, "192.0.2.9"),
        "wrong_chaddr": reply("offer", xid, "192.0.2.9", chaddr=bytes.fromhex("525400000001")),
        "not_a_reply": reply("offer", xid, "192.0.2.9", op=1),
        "ack_ignored": reply("ack", xid, "192.0.2.9", options=(("server_id", "10.0.2.2"),
                                                               ("lease_time", 60))),
        "unexpected_type": reply("inform", xid),
        "bad_offer": reply("offer", xid, "192.0.2.9", options=()),  # no server id
    }
    for reason, data in ignored.items():
        assert client.handle(data, T0 + 1) == [], reason
        assert client.counters[reason] == 1, reason
    assert client.state is ClientState.SELECTING and client.next_deadline() == deadline

    client.handle(reply("offer", xid, "192.0.2.9"), T0 + 1)
    other = reply("ack", xid, "192.0.2.9", options=(("server_id", "10.9.9.9"),
                                                    ("lease_time", 60)))
    assert client.handle(other, T0 + 2) == [] and client.counters["other_server"] == 1
    assert client.handle(reply("offer", xid, "192.0.2.7"), T0 + 2) == []  # a second OFFER
    assert client.counters["offer_ignored"] == 1 and client.state is ClientState.REQUESTING


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_undecodable_datagrams_are_counted(data):
    client = DhcpClient(MAC, rng=random.Random(9))
    client.start(T0)
    assert client.handle(data, T0 + 1) == []
    assert client.counters["malformed"] == 1 and client.state is ClientState.SELECTING


@pytest.mark.parametrize(("code", "value"), [
    (3, bytes(5)),  # router list not a multiple of 4
    (6, bytes(3)),  # DNS list not a multiple of 4
    (1, b("255.0.255.0")),  # subnet mask not contiguous
    (1, bytes(3)),  # subnet mask of 3 bytes
    (26, b"\x05"),  # MTU of 1 byte
    (26, (60).to_bytes(2, "big")),  # MTU below 68
    (58, bytes(2)),  # T1 of 2 bytes
])
def test_ack_with_a_malformed_option_is_counted_and_changes_nothing(code, value):
    client, xid = requesting()
    ack = encode_message(DhcpMessage(op=2, xid=xid, chaddr=MAC, yiaddr=b("192.0.2.9"), options={
        53: bytes([MessageType.ACK]), 54: SERVER, 51: (300).to_bytes(4, "big"), code: value}))
    assert client.handle(ack, T0 + 1) == []
    assert client.counters["malformed"] == 1 and client.state is ClientState.REQUESTING


def test_ack_without_lease_time_is_refused():
    client, xid = requesting()
    assert client.handle(reply("ack", xid, "192.0.2.9"), T0 + 1) == []
    assert client.counters["bad_ack"] == 1 and client.state is ClientState.REQUESTING


def test_start_twice_and_bad_arguments_raise():
    client = DhcpClient(MAC)
    client.start(T0)
    with pytest.raises(InvalidTransition):
        client.start(T0)
    with pytest.raises(ValueError):
        DhcpClient(MAC[:5])
    with pytest.raises(ValueError):
        DhcpClient(MAC, hostname="")
