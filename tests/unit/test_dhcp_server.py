"""The DHCP server core driven by hand: bytes in, replies and events out, a hand-advanced clock."""

import ipaddress
import random
import re

import pytest

from dhcp.leases import (
    AddressDeclined,
    LeaseExpired,
    LeaseGranted,
    LeaseReleased,
    LeaseState,
    load_leases,
    save_leases,
)
from dhcp.message import (
    BROADCAST_FLAG,
    ZERO_IP,
    DhcpMessage,
    MessageType,
    Option,
    decode_message,
    encode_message,
)
from dhcp.server import DhcpConfig, DhcpServer, Reply, StaticHost
from wire.errors import MalformedPacket

from .test_dhcp_message import BAD

T0 = 1_700_000_000.0  # wall clock (dhcp.server Rule 5)
BCAST_IP, BCAST_MAC = b"\xff" * 4, b"\xff" * 6


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def b(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0, 0, n >> 8, n & 0xFF])


SERVER = b("192.168.122.1")


def config(**overrides) -> DhcpConfig:
    settings = dict(server_ip=ip("192.168.122.1"), network=ip("192.168.122.0"), prefix=24,
                    range_first=ip("192.168.122.2"), range_last=ip("192.168.122.254"),
                    router=ip("192.168.122.1"), dns_servers=(ip("192.168.122.1"),),
                    domain="vm.internal", mtu=1400)
    settings.update(overrides)
    return DhcpConfig(**settings)


def packet(mtype: int, chaddr: bytes, *, xid: int = 7, ciaddr: bytes = ZERO_IP,
           giaddr: bytes = ZERO_IP, flags: int = 0, **options: bytes) -> bytes:
    opts = {int(Option.MESSAGE_TYPE): bytes([mtype])}
    opts.update({int(Option[name.upper()]): value for name, value in options.items()})
    return encode_message(DhcpMessage(op=1, xid=xid, chaddr=chaddr, flags=flags,
                                      ciaddr=ciaddr, giaddr=giaddr, options=opts))


def one(server: DhcpServer, data: bytes, now: float, src_mac: bytes = b"",
        src_ip: bytes = ZERO_IP) -> tuple[Reply, DhcpMessage]:
    replies = server.handle(data, src_mac or decode_message(data).chaddr, src_ip, now)
    assert len(replies) == 1, f"expected one reply, got {replies}"
    return replies[0], decode_message(replies[0].payload)


def silent(server: DhcpServer, data: bytes, now: float) -> None:
    assert server.handle(data, decode_message(data).chaddr, ZERO_IP, now) == []


def dora(server: DhcpServer, chaddr: bytes, now: float, **options: bytes) -> bytes:
    """DISCOVER, OFFER, REQUEST, ACK: returns the bound address."""
    _, offer = one(server, packet(MessageType.DISCOVER, chaddr, **options), now)
    assert offer.message_type() == MessageType.OFFER
    _, ack = one(server, packet(MessageType.REQUEST, chaddr, server_id=SERVER,
                                requested_ip=offer.yiaddr, **options), now)
    assert ack.message_type() == MessageType.ACK and ack.yiaddr == offer.yiaddr
    return ack.yiaddr


def test_full_dora_with_every_option():
    server = DhcpServer(config())
    c = mac(1)
    reply, offer = one(server, packet(MessageType.DISCOVER, c, hostname=b"Guest-1"), T0)
    assert offer.op == 2 and offer.xid == 7 and offer.chaddr == c
    assert ip("192.168.122.2") <= int.from_bytes(offer.yiaddr, "big") <= ip("192.168.122.254")
    assert offer.options[Option.MESSAGE_TYPE] == bytes([MessageType.OFFER])
    assert offer.server_id() == SERVER and offer.lease_time() == 3600
    assert offer.options[Option.RENEWAL_TIME] == (1800).to_bytes(4, "big"), "T1 = 0.5"
    assert offer.options[Option.REBINDING_TIME] == (3150).to_bytes(4, "big"), "T2 = 0.875"
    assert offer.options[Option.SUBNET_MASK] == b("255.255.255.0")
    assert offer.options[Option.ROUTER] == SERVER
    assert offer.options[Option.DNS_SERVERS] == SERVER
    assert offer.options[Option.DOMAIN_NAME] == b"vm.internal"
    assert offer.options[Option.BROADCAST] == b("192.168.122.255")
    assert offer.options[Option.MTU] == (1400).to_bytes(2, "big")
    assert server.table.by_ip(int.from_bytes(offer.yiaddr, "big")).state is LeaseState.OFFERED
    assert server.next_deadline() == T0 + 60, "an offer holds the address for 60 s"
    assert server.pop_events() == [], "an offer is not an event"

    _, ack = one(server, packet(MessageType.REQUEST, c, server_id=SERVER,
                                requested_ip=offer.yiaddr), T0 + 1)
    assert ack.message_type() == MessageType.ACK and ack.yiaddr == offer.yiaddr
    leased = int.from_bytes(ack.yiaddr, "big")
    assert server.pop_events() == [LeaseGranted(c, leased, "guest-1", T0 + 3601, False)]
    [lease] = server.leases()
    assert (lease.ip, lease.mac, lease.hostname, lease.state) == (
        leased, c, "guest-1", LeaseState.BOUND)
    assert server.names() == {"guest-1": leased}
    assert server.next_deadline() == T0 + 3601


def test_lease_expires_on_the_hand_advanced_clock():
    server = DhcpServer(config())
    now = T0
    leased = int.from_bytes(dora(server, mac(1), now), "big")
    server.pop_events()
    assert server.expire(now + 3599) == []
    now += 3601
    assert server.next_deadline() <= now
    assert server.expire(now) == [LeaseExpired(mac(1), leased, "")]
    assert server.leases() == [] and server.next_deadline() is None


def test_unanswered_offer_frees_its_address_after_60_seconds():
    server = DhcpServer(config(max_leases=1))
    one(server, packet(MessageType.DISCOVER, mac(1)), T0)
    silent(server, packet(MessageType.DISCOVER, mac(2)), T0 + 59)
    assert server.counters["pool_exhausted"] == 1
    one(server, packet(MessageType.DISCOVER, mac(2)), T0 + 61)  # handle runs due expiry
    assert [x.mac for x in server.leases()] == [mac(2)]
    assert server.pop_events() == [], "offers end silently"


def test_discover_from_a_bound_client_offers_its_lease_and_keeps_it_bound():
    server = DhcpServer(config())
    leased = dora(server, mac(1), T0)
    _, offer = one(server, packet(MessageType.DISCOVER, mac(1)), T0 + 10)
    assert offer.yiaddr == leased
    assert server.leases()[0].state is LeaseState.BOUND
    assert server.leases()[0].expires == T0 + 3600


def test_renew_and_rebind_after_restart_from_the_lease_file(tmp_path):
    path = tmp_path / "leases.jsonl"
    first = DhcpServer(config())
    leased = dora(first, mac(1), T0, hostname=b"web")
    save_leases(path, first.leases())
    restarted = DhcpServer(config(), load_leases(path, T0 + 1800))
    # RENEWING: unicast from the client, ciaddr set, no server id or requested address.
    reply, ack = one(restarted, packet(MessageType.REQUEST, mac(1), ciaddr=leased), T0 + 1800)
    assert ack.message_type() == MessageType.ACK and ack.yiaddr == leased
    assert ack.ciaddr == leased
    assert (reply.dst_ip, reply.dst_mac, reply.broadcast) == (leased, mac(1), False)
    [event] = restarted.pop_events()
    assert event == LeaseGranted(mac(1), int.from_bytes(leased, "big"), "web", T0 + 5400, True)
    assert restarted.names() == {"web": int.from_bytes(leased, "big")}
    # REBINDING: the same but broadcast; the reply still goes to ciaddr (RFC 2131 4.1).
    reply, ack = one(restarted, packet(MessageType.REQUEST, mac(1), ciaddr=leased,
                                       flags=BROADCAST_FLAG), T0 + 3000)
    assert ack.message_type() == MessageType.ACK and reply.dst_ip == leased
    assert restarted.next_deadline() == T0 + 6600


def test_init_reboot():
    server = DhcpServer(config())
    mine = dora(server, mac(1), T0)
    theirs = dora(server, mac(2), T0)
    # The client's own lease: ACK, no server id needed.
    _, ack = one(server, packet(MessageType.REQUEST, mac(1), requested_ip=mine), T0 + 5)
    assert ack.message_type() == MessageType.ACK and ack.yiaddr == mine
    # Someone else's address: NAK, broadcast.
    reply, nak = one(server, packet(MessageType.REQUEST, mac(1), requested_ip=theirs), T0 + 6)
    assert nak.message_type() == MessageType.NAK and reply.broadcast
    assert nak.yiaddr == ZERO_IP and Option.LEASE_TIME not in nak.options
    # Another network (a laptop moved here): NAK so it starts over at once.
    _, nak = one(server, packet(MessageType.REQUEST, mac(3), requested_ip=b("10.0.0.5")), T0)
    assert nak.message_type() == MessageType.NAK
    assert nak.options[Option.MESSAGE] == b"wrong network"
    # An unknown client asking for a free address of ours: a non-authoritative server is silent.
    free = next(a for a in (b("192.168.122.150"), b("192.168.122.151")) if a not in (mine, theirs))
    silent(server, packet(MessageType.REQUEST, mac(4), requested_ip=free), T0)
    assert server.counters["unknown_client"] == 1
    # ... and it NAKs an address it knows belongs to another client.
    _, nak = one(server, packet(MessageType.REQUEST, mac(4), requested_ip=theirs), T0)
    assert nak.message_type() == MessageType.NAK
    assert server.table.by_ip(int.from_bytes(theirs, "big")).mac == mac(2), "state intact"


def test_init_reboot_unknown_client_gets_nak_from_an_authoritative_server():
    server = DhcpServer(config(authoritative=True))
    reply, nak = one(server, packet(MessageType.REQUEST, mac(4),
                                    requested_ip=b("192.168.122.200")), T0)
    assert nak.message_type() == MessageType.NAK and reply.broadcast
    assert server.leases() == []


def test_renewing_unknown_client():
    # Not authoritative: silent (another server may own the lease).
    server = DhcpServer(config())
    silent(server, packet(MessageType.REQUEST, mac(4), ciaddr=b("192.168.122.200")), T0)
    # Authoritative: the binding is recovered (the lease file was lost), but never an
    # address that is not ours to give.
    server = DhcpServer(config(authoritative=True))
    _, ack = one(server, packet(MessageType.REQUEST, mac(4), ciaddr=b("192.168.122.200")), T0)
    assert ack.message_type() == MessageType.ACK
    assert server.leases()[0].ip == ip("192.168.122.200")
    _, nak = one(server, packet(MessageType.REQUEST, mac(5), ciaddr=b("192.168.122.1")), T0)
    assert nak.message_type() == MessageType.NAK, "the server's own address"


def test_selecting_another_server_forgets_our_offer_silently():
    server = DhcpServer(config())
    one(server, packet(MessageType.DISCOVER, mac(1)), T0)
    silent(server, packet(MessageType.REQUEST, mac(1), server_id=b("192.168.122.254"),
                          requested_ip=b("192.168.122.77")), T0 + 1)
    assert server.leases() == [] and server.counters["other_server"] == 1


def test_selecting_a_different_address_than_offered_is_nakked():
    server = DhcpServer(config())
    _, offer = one(server, packet(MessageType.DISCOVER, mac(1)), T0)
    other = b("192.168.122.250") if offer.yiaddr != b("192.168.122.250") else b("192.168.122.251")
    _, nak = one(server, packet(MessageType.REQUEST, mac(1), server_id=SERVER,
                                requested_ip=other), T0)
    assert nak.message_type() == MessageType.NAK


def test_request_after_the_offer_expired_is_still_acked_if_free():
    server = DhcpServer(config())
    _, offer = one(server, packet(MessageType.DISCOVER, mac(1)), T0)
    _, ack = one(server, packet(MessageType.REQUEST, mac(1), server_id=SERVER,
                                requested_ip=offer.yiaddr), T0 + 120)
    assert ack.message_type() == MessageType.ACK


def test_decline_quarantines_the_address():
    server = DhcpServer(config())
    bad = dora(server, mac(1), T0)
    server.pop_events()
    silent(server, packet(MessageType.DECLINE, mac(1), server_id=SERVER, requested_ip=bad), T0)
    assert server.pop_events() == [AddressDeclined(mac(1), int.from_bytes(bad, "big"), T0 + 600)]
    [entry] = server.leases()
    assert entry.state is LeaseState.DECLINED and server.table.by_client(b"\x01" + mac(1)) is None
    # Neither the decliner nor anyone asking for it gets the address while quarantined.
    _, offer = one(server, packet(MessageType.DISCOVER, mac(1)), T0 + 1)
    assert offer.yiaddr != bad
    _, offer2 = one(server, packet(MessageType.DISCOVER, mac(2), requested_ip=bad), T0 + 2)
    assert offer2.yiaddr != bad
    _, nak = one(server, packet(MessageType.REQUEST, mac(3), server_id=SERVER,
                                requested_ip=bad), T0 + 3)
    assert nak.message_type() == MessageType.NAK
    # After decline_time (dnsmasq's 600 s) the address is back in the pool.
    _, offer3 = one(server, packet(MessageType.DISCOVER, mac(3), requested_ip=bad), T0 + 601)
    assert offer3.yiaddr == bad


def test_decline_of_an_address_the_client_does_not_hold_is_ignored():
    server = DhcpServer(config())
    theirs = dora(server, mac(1), T0)
    silent(server, packet(MessageType.DECLINE, mac(2), server_id=SERVER,
                          requested_ip=theirs), T0)
    assert server.counters["decline_not_owner"] == 1
    assert server.leases()[0].state is LeaseState.BOUND


def test_release_frees_the_address():
    server = DhcpServer(config())
    leased = dora(server, mac(1), T0, hostname=b"db")
    server.pop_events()
    silent(server, packet(MessageType.RELEASE, mac(2), server_id=SERVER, ciaddr=leased), T0)
    assert server.counters["release_not_owner"] == 1 and len(server.leases()) == 1
    silent(server, packet(MessageType.RELEASE, mac(1), server_id=SERVER, ciaddr=leased), T0)
    assert server.pop_events() == [LeaseReleased(mac(1), int.from_bytes(leased, "big"), "db")]
    assert server.leases() == [] and server.names() == {}


def test_inform_gets_configuration_but_no_lease():
    server = DhcpServer(config())
    here = b("192.168.122.99")  # configured by hand
    reply, ack = one(server, packet(MessageType.INFORM, mac(1), ciaddr=here), T0)
    assert ack.message_type() == MessageType.ACK
    assert ack.yiaddr == ZERO_IP and ack.ciaddr == here
    for option in (Option.LEASE_TIME, Option.RENEWAL_TIME, Option.REBINDING_TIME):
        assert option not in ack.options, "RFC 2131 3.4: no lease time in reply to INFORM"
    assert ack.options[Option.ROUTER] == SERVER and ack.server_id() == SERVER
    assert (reply.dst_ip, reply.broadcast) == (here, False)
    assert server.leases() == []


def test_static_host_always_gets_its_address():
    static = StaticHost(mac(9), ip("192.168.122.9"), "printer")
    server = DhcpServer(config(static_hosts=(static,)))
    _, offer = one(server, packet(MessageType.DISCOVER, mac(9),
                                  requested_ip=b("192.168.122.100")), T0)
    assert offer.yiaddr == b("192.168.122.9"), "the static address beats the requested one"
    _, ack = one(server, packet(MessageType.REQUEST, mac(9), server_id=SERVER,
                                requested_ip=offer.yiaddr, parameter_request_list=b"\x0c"), T0)
    assert ack.options[Option.HOSTNAME] == b"printer", "the static name wins"
    assert server.names() == {"printer": ip("192.168.122.9")}
    # Nobody else gets it, even asking for it.
    _, other = one(server, packet(MessageType.DISCOVER, mac(1),
                                  requested_ip=b("192.168.122.9")), T0)
    assert other.yiaddr != b("192.168.122.9")
    # Its old dynamic address is refused, so it comes back to the static one.
    _, nak = one(server, packet(MessageType.REQUEST, mac(9),
                                requested_ip=b("192.168.122.100")), T0)
    assert nak.message_type() == MessageType.NAK


def test_static_host_gets_its_address_even_when_the_pool_is_full():
    static = StaticHost(mac(9), ip("192.168.122.9"), "")
    server = DhcpServer(config(static_hosts=(static,), max_leases=2))
    dora(server, mac(1), T0)
    dora(server, mac(2), T0)
    silent(server, packet(MessageType.DISCOVER, mac(3)), T0)
    assert dora(server, mac(9), T0) == b("192.168.122.9")


def test_client_id_is_preferred_over_chaddr_and_echoed():
    server = DhcpServer(config())
    cid = b"\x00my-vm-uuid"
    first = dora(server, mac(1), T0, client_id=cid)
    # The same client id from another NIC address is the same client (RFC 2131 4.2).
    _, offer = one(server, packet(MessageType.DISCOVER, mac(2), client_id=cid), T0 + 1)
    assert offer.yiaddr == first
    assert offer.client_id() == cid, "RFC 6842: the client identifier is echoed"
    # The same chaddr with another client id is another client.
    _, other = one(server, packet(MessageType.DISCOVER, mac(1), client_id=b"\x00other"), T0)
    assert other.yiaddr != first
    # A client without option 61 is keyed by htype + chaddr, which is what it would send.
    plain = dora(server, mac(5), T0)
    _, again = one(server, packet(MessageType.DISCOVER, mac(5), client_id=b"\x01" + mac(5)), T0)
    assert again.yiaddr == plain


def test_reply_addressing_rfc2131_4_1():
    server = DhcpServer(config())
    relay, relay_mac = b("192.168.122.250"), mac(250)
    # 1. giaddr set: to the relay agent's port 67, whatever else the request says.
    reply, _ = one(server, packet(MessageType.DISCOVER, mac(1), giaddr=relay,
                                  flags=BROADCAST_FLAG), T0, src_mac=relay_mac)
    assert (reply.dst_ip, reply.dst_mac, reply.dst_port) == (relay, relay_mac, 67)
    assert reply.to_relay and not reply.broadcast
    # 2. ciaddr set: unicast to it.
    leased = dora(server, mac(2), T0)
    reply, _ = one(server, packet(MessageType.REQUEST, mac(2), ciaddr=leased), T0)
    assert (reply.dst_ip, reply.dst_mac, reply.dst_port, reply.broadcast) == (
        leased, mac(2), 68, False)
    # 3. broadcast flag: to 255.255.255.255 and ff:ff:ff:ff:ff:ff.
    reply, _ = one(server, packet(MessageType.DISCOVER, mac(3), flags=BROADCAST_FLAG), T0)
    assert (reply.dst_ip, reply.dst_mac, reply.dst_port, reply.broadcast) == (
        BCAST_IP, BCAST_MAC, 68, True)
    # 4. otherwise: unicast to yiaddr at chaddr (the client cannot answer ARP yet).
    reply, offer = one(server, packet(MessageType.DISCOVER, mac(4)), T0)
    assert (reply.dst_ip, reply.dst_mac, reply.broadcast) == (offer.yiaddr, mac(4), False)
    # A NAK is broadcast even to a client that set ciaddr ...
    reply, nak = one(server, packet(MessageType.REQUEST, mac(5), requested_ip=leased), T0)
    assert nak.message_type() == MessageType.NAK and reply.broadcast
    # ... and through a relay it goes to the relay with the broadcast bit set (4.3.2).
    reply, nak = one(server, packet(MessageType.REQUEST, mac(5), requested_ip=leased,
                                    giaddr=relay), T0, src_mac=relay_mac)
    assert reply.to_relay and nak.flags & BROADCAST_FLAG and nak.giaddr == relay


def test_parameter_request_list_is_honoured_in_its_order():
    server = DhcpServer(config())
    _, offer = one(server, packet(MessageType.DISCOVER, mac(1),
                                  parameter_request_list=bytes([26, 6, 1, 3, 121])), T0)
    codes = list(offer.options)
    assert Option.MTU in codes and Option.DNS_SERVERS in codes
    assert codes.index(Option.MTU) < codes.index(Option.DNS_SERVERS), "client's order"
    assert Option.DOMAIN_NAME not in codes and Option.BROADCAST not in codes, "not asked for"
    for always in (Option.MESSAGE_TYPE, Option.SERVER_ID, Option.LEASE_TIME, Option.SUBNET_MASK,
                   Option.ROUTER, Option.RENEWAL_TIME, Option.REBINDING_TIME):
        assert always in codes
    # No list at all (plain clients): everything configured.
    _, offer = one(server, packet(MessageType.DISCOVER, mac(2)), T0)
    assert {Option.MTU, Option.DOMAIN_NAME, Option.BROADCAST} <= set(offer.options)


def test_isolated_mode_has_no_router_option():
    server = DhcpServer(config(router=None))
    _, offer = one(server, packet(MessageType.DISCOVER, mac(1)), T0)
    assert Option.ROUTER not in offer.options


def test_reply_respects_the_maximum_message_size():
    many_dns = tuple(ip(f"192.168.122.{n}") for n in range(2, 80))  # 312 bytes of option 6
    server = DhcpServer(config(dns_servers=many_dns, domain="d" * 200))
    reply, offer = one(server, packet(MessageType.DISCOVER, mac(1),
                                      max_message_size=(576).to_bytes(2, "big")), T0)
    assert len(reply.payload) <= 576 - 28
    assert offer.lease_time() == 3600 and offer.server_id() == SERVER, "mandatory ones stay"
    reply, offer = one(server, packet(MessageType.DISCOVER, mac(2),
                                      max_message_size=(1500).to_bytes(2, "big")), T0)
    assert len(offer.options[Option.DNS_SERVERS]) == 4 * len(many_dns)


def test_requested_lease_time_is_honoured_down_to_two_minutes():
    server = DhcpServer(config())
    _, offer = one(server, packet(MessageType.DISCOVER, mac(1),
                                  lease_time=(600).to_bytes(4, "big")), T0)
    assert offer.lease_time() == 600
    _, offer = one(server, packet(MessageType.DISCOVER, mac(2),
                                  lease_time=(5).to_bytes(4, "big")), T0)
    assert offer.lease_time() == 120
    _, offer = one(server, packet(MessageType.DISCOVER, mac(3),
                                  lease_time=(99999).to_bytes(4, "big")), T0)
    assert offer.lease_time() == 3600


def test_hostnames_are_sanitised_and_first_holder_keeps_a_name():
    server = DhcpServer(config())
    a = dora(server, mac(1), T0, hostname=b"My_Laptop.example.com")
    dora(server, mac(2), T0, hostname=b"my-laptop")
    assert server.names() == {"my-laptop": int.from_bytes(a, "big")}


def test_requests_that_are_not_for_us_are_counted():
    server = DhcpServer(config())
    reply = encode_message(DhcpMessage(op=2, xid=1, chaddr=mac(1), options={53: b"\x02"}))
    assert server.handle(reply, mac(1), ZERO_IP, T0) == []
    bootp = encode_message(DhcpMessage(op=1, xid=1, chaddr=mac(1)))
    assert server.handle(bootp, mac(1), ZERO_IP, T0) == []
    silent(server, packet(99, mac(1)), T0)
    silent(server, packet(MessageType.DISCOVER, mac(1), giaddr=b("10.1.1.1")), T0)
    silent(server, packet(MessageType.REQUEST, mac(1)), T0)
    assert {k: server.counters[k] for k in (
        "not_a_request", "bootp_unsupported", "unknown_message_type", "relay_other_subnet",
        "bad_request")} == dict.fromkeys(
        ("not_a_request", "bootp_unsupported", "unknown_message_type", "relay_other_subnet",
         "bad_request"), 1)
    assert server.leases() == []


def test_bad_input_raises_only_malformed_packet_and_keeps_state():
    server = DhcpServer(config())
    leased = dora(server, mac(1), T0)
    before = server.leases()
    for data in BAD.values():
        with pytest.raises(MalformedPacket):
            server.handle(data, mac(66), ZERO_IP, T0)
    rng = random.Random(67)
    valid = packet(MessageType.REQUEST, mac(2), server_id=SERVER, requested_ip=leased)
    for _ in range(5000):
        data = bytearray(valid)
        data[rng.randrange(236, len(data))] = rng.randrange(256)
        try:
            server.handle(bytes(data), mac(2), ZERO_IP, T0)
        except MalformedPacket:
            pass
    assert server.table.by_ip(int.from_bytes(leased, "big")) == before[0]


def test_dhcp_starvation_flood_stays_bounded():
    """100k DISCOVERs with random MACs: the table never exceeds its cap, a bound guest keeps
    renewing, and once the flood's offers have expired a new guest is served again."""
    server = DhcpServer(config(max_leases=200))
    guest = dora(server, mac(1), T0)
    rng = random.Random(6842)
    now = T0
    peak = 0
    for i in range(100_000):
        now = T0 + i * 0.002  # 200 s of flooding: the offers expire and are refilled
        server.handle(packet(MessageType.DISCOVER, b"\x02" + rng.randbytes(5), xid=i),
                      mac(7), ZERO_IP, now)
        peak = max(peak, len(server.table))
    assert peak <= 200
    assert server.counters["pool_exhausted"] > 90_000
    assert len(server.pop_events()) <= 4096
    _, ack = one(server, packet(MessageType.REQUEST, mac(1), ciaddr=guest), now)
    assert ack.message_type() == MessageType.ACK, "the bound guest is unharmed"
    _, offer = one(server, packet(MessageType.DISCOVER, mac(2)), now + 61)
    assert offer.message_type() == MessageType.OFFER


def test_pool_exhaustion_without_a_cap_is_the_pool_size():
    server = DhcpServer(config(range_first=ip("192.168.122.10"),
                               range_last=ip("192.168.122.12")))
    assert server.max_leases == 3
    for n in range(3):
        dora(server, mac(n), T0)
    silent(server, packet(MessageType.DISCOVER, mac(50)), T0)
    assert server.counters["pool_exhausted"] == 1


@pytest.mark.parametrize("overrides, key", [
    ({"prefix": 31}, "prefix"),
    ({"network": ip("192.168.122.1")}, "network"),
    ({"server_ip": ip("10.0.0.1")}, "server_ip"),
    ({"range_first": ip("192.168.122.0")}, "range_first"),
    ({"range_last": ip("192.168.122.255")}, "range_last"),
    ({"range_first": ip("192.168.122.200"), "range_last": ip("192.168.122.100")}, "range"),
    ({"lease_time": 0}, "lease_time"),
    ({"max_leases": 0}, "max_leases"),
    ({"router": ip("10.0.0.1")}, "router"),
    ({"static_hosts": (StaticHost(mac(1), ip("10.0.0.9"), ""),)}, "static_hosts[0].ip"),
    ({"static_hosts": (StaticHost(mac(1), ip("192.168.122.9"), ""),
                       StaticHost(mac(1), ip("192.168.122.8"), ""))}, "static_hosts"),
    ({"static_hosts": (StaticHost(mac(1), ip("192.168.122.9"), "Bad Name"),)},
     "static_hosts[0].name"),
    ({"static_hosts": (StaticHost(mac(1), ip("192.168.122.1"), ""),)}, "static_hosts[0].ip"),
    ({"domain": "exämple"}, "domain"),
])
def test_config_errors_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=re.escape(f"dhcp.{key}:")):
        config(**overrides)


def test_scapy_parses_a_server_offer():
    from scapy.layers.dhcp import BOOTP, DHCP

    server = DhcpServer(config())
    reply, offer = one(server, packet(MessageType.DISCOVER, mac(1)), T0)
    pkt = BOOTP(reply.payload)
    options = dict(o for o in pkt[DHCP].options if isinstance(o, tuple))
    assert pkt.op == 2 and pkt.yiaddr == str(ipaddress.IPv4Address(offer.yiaddr))
    assert options["message-type"] == MessageType.OFFER
    assert options["server_id"] == "192.168.122.1" and options["lease_time"] == 3600
    assert options["renewal_time"] == 1800 and options["rebinding_time"] == 3150
