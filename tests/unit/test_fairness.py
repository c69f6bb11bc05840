"""Fair at the gateway (issue 13): per-guest quotas with a hand-advanced clock.

The conntrack's own quota (``nat.conntrack`` Rule 9) is tested in test_conntrack.py and, for
NAT66, in test_translate6.py; here the host uplink's (``nat.egress`` Rule 6, ``flows`` Rule 4)
and the services' budgets (``nat.ratelimit`` Rule 2 in ``vswitch.dhcp_service`` and
``vswitch.dns_service``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.layers.l2 import Ether

from dhcp.dns import DnsResponder
from dhcp.dnsmsg import (
    RCODE_REFUSED,
    DnsMessage,
    Question,
    decode_message,
    encode_message,
    name_from_text,
)
from dhcp.server import DhcpConfig
from nat.egress import HostEgress
from nat.egress.flows import FlowTable, GuestQuota
from nat.gateway import Gateway
from vswitch.dhcp_service import DhcpService
from vswitch.dns_service import DnsService
from vswitch.ports.router import RouterPort
from wire.ipv6 import decode_ipv6
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN

GW4 = socket.inet_aton("10.0.2.2")
GW6_TEXT = "fd42:0:0:1::1"
GW6 = socket.inet_pton(socket.AF_INET6, GW6_TEXT)
A4, B4 = "10.0.2.15", "10.0.2.16"
A6, B6 = "fd42:0:0:1::15", "fd42:0:0:1::16"
MACS = {"src": "52:54:00:00:00:02", "dst": "52:54:00:00:00:01"}


class Rig:
    def __init__(self, max_per_guest: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.out: list[bytes] = []
        self.egress = HostEgress(self.loop, self.out.extend, self.out.extend, GW4, GW4,
                                 gateway6=GW6, max_flows=1000, max_per_guest=max_per_guest)

    def udp4(self, src: str, sport: int) -> None:
        frame = NO_OFFLOAD + bytes(Ether(**MACS) / IP(src=src, dst="10.0.2.2")
                                   / UDP(sport=sport, dport=9) / b"x")
        self.egress.from_guest(frame, 0.0)

    def udp6(self, src: str, sport: int) -> None:
        frame = NO_OFFLOAD + bytes(Ether(**MACS) / IPv6(src=src, dst=GW6_TEXT)
                                   / UDP(sport=sport, dport=9) / b"x")
        assert self.egress.v6 is not None
        self.egress.v6.from_guest(frame, decode_ipv6(frame, VNET_HDR_LEN + 14), 0.0)

    def close(self) -> None:
        self.egress.close()
        self.loop.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig(max_per_guest=2)
    yield rig
    rig.close()


def test_guest_quota_counts_and_forgets_guests_without_flows():
    quota = GuestQuota(2)
    table = FlowTable(udp_timeout=100, icmp_timeout=10, quota=quota)
    table.add_udp(b"A", 1, None, now=0)
    table.add_echo(b"A", 7, None, None, now=0)
    assert not quota.admits(b"A") and quota.admits(b"B")
    assert len(table.expire(now=10)) == 1  # the echo flow
    assert quota.held == {b"A": 1} and quota.admits(b"A")
    table.clear()
    assert quota.held == {}, "bounded: only guests holding flows have a key"


def test_a_guest_over_its_host_uplink_quota_gets_3_13_and_others_go_on(rig: Rig):
    for port in (40001, 40002):
        rig.udp4(A4, port)
    assert rig.out == []
    rig.udp4(A4, 40003)
    (error,) = rig.out
    got = Ether(error[VNET_HDR_LEN:])
    assert (got[ICMP].type, got[ICMP].code) == (3, 13)
    assert got[IPerror].src == A4
    assert rig.egress.counters["drop-guest-quota"] == 1
    rig.out.clear()
    rig.udp4(B4, 40003)
    rig.udp4(A4, 40001)  # A's own flows go on
    assert rig.out == [] and len(rig.egress.flows.udp) == 3
    assert rig.egress.stats()["max_per_guest"] == 2


def test_an_ipv6_guest_over_its_quota_gets_icmpv6_1_1_and_its_ipv4_address_is_apart(rig: Rig):
    for port in (40001, 40002):
        rig.udp6(A6, port)
    assert rig.out == []
    rig.udp6(A6, 40003)
    (error,) = rig.out
    got = Ether(error[VNET_HDR_LEN:])
    assert (got[ICMPv6DestUnreach].type, got[ICMPv6DestUnreach].code) == (1, 1)
    assert got[IPv6].dst == A6
    rig.out.clear()
    rig.udp6(B6, 40001)
    rig.udp4(A4, 40001)  # each address has its own quota
    assert rig.out == [] and rig.egress.counters["drop-guest-quota"] == 1


def test_tcp_flows_count_too_and_free_their_place_when_closed(rig: Rig):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        for sport in (40001, 40002, 40003):
            frame = NO_OFFLOAD + bytes(Ether(**MACS) / IP(src=A4, dst="10.0.2.2")
                                       / TCP(sport=sport, dport=port, flags="S", seq=1))
            rig.egress.from_guest(frame, 0.0)
        assert len(rig.egress.tcp.flows) == 2
        assert rig.egress.counters["drop-guest-quota"] == 1
        assert rig.egress.side.quota.held == {socket.inet_aton(A4): 2}
        rig.egress.tcp.close()
        assert rig.egress.side.quota.held == {}
    finally:
        listener.close()


def test_a_small_file_limit_caps_the_quota_at_a_quarter_of_the_table(
        monkeypatch: pytest.MonkeyPatch):
    import resource
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1280, 1280))
    loop = asyncio.new_event_loop()
    try:
        egress = HostEgress(loop, list().extend, list().extend, GW4, GW4, max_flows=262144,
                            max_per_guest=65536)
        assert egress.side.max_flows == 1024 and egress.side.quota.limit == 256
        egress.close()
        egress = HostEgress(loop, list().extend, list().extend, GW4, GW4, max_flows=262144,
                            max_per_guest=40)
        assert egress.side.quota.limit == 40, "a quota below a quarter stays as it is"
        egress.close()
    finally:
        loop.close()


# -- the services' budgets (nat.ratelimit Rule 2) ------------------------------------------------

GW_MAC = bytes.fromhex("525400000001")
GW = bytes([10, 0, 2, 2])
A_IP, B_IP = socket.inet_aton(A4), socket.inet_aton(B4)
A_MAC, B_MAC = bytes.fromhex("52540000000a"), bytes.fromhex("52540000000b")


def router_port(loop: asyncio.AbstractEventLoop) -> RouterPort:
    port = RouterPort(Gateway(GW_MAC, GW, 24))
    port.open(loop, lambda *_: None)
    return port


def a_query(name: str, ident: int = 1) -> bytes:
    return encode_message(DnsMessage(id=ident, questions=(Question(name_from_text(name), 1, 1),)))


def test_dns_queries_over_a_guests_budget_are_refused_with_their_question():
    loop = asyncio.new_event_loop()
    try:
        responder = DnsResponder("vsw.internal", {"web": "10.0.2.30"})
        service = DnsService(responder, router_port(loop), loop, queries_per_second=2)

        def ask(ip: bytes, now: float, ident: int = 1) -> DnsMessage:
            (frame,) = service.udp(A_MAC, ip, 5353, GW, a_query("web.vsw.internal", ident), now)
            return decode_message(bytes(Ether(frame)[UDP].payload))

        answers = [ask(A_IP, 0.0, n) for n in range(5)]  # a burst of twice the rate, then no
        assert [a.rcode for a in answers] == [0, 0, 0, 0, RCODE_REFUSED]
        refused = answers[-1]
        assert refused.id == 4 and refused.qr
        assert refused.questions == answers[0].questions
        assert service.rate_limited == 1 and service.stats()["rate_limited"] == 1
        assert ask(B_IP, 0.0).rcode == 0, "another guest's budget is its own"
        assert ask(A_IP, 0.5).rcode == 0, "one more after half a second at 2/s"
        assert ask(A_IP, 0.5).rcode == RCODE_REFUSED
        assert service.udp(A_MAC, A_IP, 5353, GW, b"\x00\x01\x80", 0.5) == [], \
            "no answer to what is no query"
        service.close()
    finally:
        loop.close()


def test_dhcp_messages_over_a_macs_budget_are_dropped_and_counted(tmp_path):
    loop = asyncio.new_event_loop()
    try:
        config = DhcpConfig(server_ip=int.from_bytes(GW, "big"), network=0x0A000200, prefix=24,
                            range_first=0x0A000210, range_last=0x0A000220, lease_time=3600)
        service = DhcpService(config, tmp_path / "leases", router_port(loop), loop,
                              requests_per_second=1)

        def discover(mac: bytes, now: float) -> list[bytes]:
            payload = bytes(BOOTP(chaddr=mac, xid=7)
                            / DHCP(options=[("message-type", "discover"), "end"]))
            return service.udp(mac, bytes(4), 68, b"\xff" * 4, payload, now)

        assert [len(discover(A_MAC, 0.0)) for _ in range(3)] == [1, 1, 0]
        assert service.stats()["rate_limited"] == 1
        assert len(discover(B_MAC, 0.0)) == 1, "another MAC's budget is its own"
        assert len(discover(A_MAC, 1.0)) == 1, "one more a second later"
        service.close()
    finally:
        loop.close()


# -- the keys -----------------------------------------------------------------------------------


def test_the_fairness_keys_and_their_defaults():
    from vswitch.config import parse_config
    config = parse_config({"network": {}})
    assert config.nat.max_per_guest == config.nat.max_entries // 4 == 65536
    assert config.network is not None
    assert config.network.dhcp_requests_per_second == 10
    assert config.network.dns_queries_per_second == 100
    config = parse_config({"network": {}, "nat": {"max_entries": 1000},
                           "dhcp": {"requests_per_second": 0},
                           "dns": {"queries_per_second": 5}})
    assert config.nat.max_per_guest == 250
    assert config.network is not None
    assert (config.network.dhcp_requests_per_second, config.network.dns_queries_per_second) \
        == (0, 5)


@pytest.mark.parametrize("data, key, says", [
    ({"nat": {"max_entries": 100, "max_per_guest": 101}}, "nat.max_per_guest",
     "above nat.max_entries (100); use at most 100"),
    ({"nat": {"max_per_guest": 0}}, "nat.max_per_guest", "out of range; use 1"),
    ({"nat": {"max_per_guest": "all"}}, "nat.max_per_guest", "must be an integer"),
    ({"dhcp": {"requests_per_second": -1}}, "dhcp.requests_per_second", "use 0 to 100000"),
    ({"dhcp": {"requests_per_second": 2.5}}, "dhcp.requests_per_second", "an integer"),
    ({"dns": {"queries_per_second": True}}, "dns.queries_per_second", "an integer"),
])
def test_a_bad_fairness_key_gets_one_error_naming_it(data, key, says):
    from vswitch.config import ConfigError, parse_config
    with pytest.raises(ConfigError) as err:
        parse_config({"network": {}, **data})
    assert err.value.key == key and says in str(err.value), str(err.value)


def test_refused_echoes_the_question_from_the_bytes_and_the_header_alone_otherwise():
    from vswitch.dns_service import refused
    query = a_query("WwW.vsw.internal", 77)
    answer = decode_message(refused(query) or b"")
    assert (answer.id, answer.qr, answer.rd, answer.rcode) == (77, True, True, RCODE_REFUSED)
    assert answer.questions == decode_message(query).questions, "as asked, case and all"
    assert refused(query[:12] + b"\x03www") == query[:2] + b"\x81\x05" + bytes(8)
    two = query[:5] + b"\x02" + query[6:]
    assert refused(two) == query[:2] + b"\x81\x05" + bytes(8)
    assert refused(query[:11]) is None and refused(refused(query) or b"") is None
