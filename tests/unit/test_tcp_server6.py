"""DNS over TCP on the gateway's IPv6 addresses (nat.tcp_server behind nat.gateway6 Rule 9):
frames scapy builds go into ``Gateway6.handle`` and the segments that come out are read back,
their checksums recomputed by scapy over the IPv6 pseudo header."""

from __future__ import annotations

import random
from ipaddress import IPv6Address

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from dhcp.dns import DnsResponder
from dhcp.dns_actions import Answer
from dhcp.dnsmsg import TcpFramer, encode_tcp_frame
from nat.gateway6 import Gateway6
from nat.tcp_server import Key, TcpServer
from wire.ipv6 import link_local

GW_MAC, GUEST_MAC = bytes.fromhex("525400000001"), "52:54:00:00:00:10"
PREFIX = bytes.fromhex("fd42000000000001") + bytes(8)
GW, GW_TEXT = PREFIX[:15] + b"\x01", "fd42:0:0:1::1"
GW_LL = str(IPv6Address(link_local(GW_MAC)))
GUEST, GUEST_LL = "fd42:0:0:1::10", "fe80::5054:ff:fe00:10"
SIX = IPv6Address("fd42:0:0:1::66")


class Dns:
    """The DNS adapter's TCP half (vswitch.dns_service): RFC 7766 framing into the responder."""

    def __init__(self) -> None:
        self.responder = DnsResponder("six.internal", {}, hosts6=lambda: {"six": (SIX,)})
        self.framers: dict[Key, TcpFramer] = {}

    def __call__(self, key: Key, data: bytes, now: float) -> bytes:
        framer = self.framers.setdefault(key, TcpFramer())
        out = b""
        for message in framer.feed(data):
            for action in self.responder.handle_query(message, ("tcp", key), "tcp", now):
                assert isinstance(action, Answer)
                out += encode_tcp_frame(action.payload)
        return out


@pytest.fixture
def gw() -> Gateway6:
    gateway = Gateway6(GW_MAC, GW, PREFIX, 64, domain="six.internal", rng=random.Random(1))
    gateway.tcp[53] = TcpServer(53, Dns())
    return gateway


def send(gw: Gateway6, segment, now: float = 0.0, src: str = GUEST,
         dst: str = GW_TEXT) -> list[Ether]:
    frame = Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / IPv6(src=src, dst=dst) / segment
    return [Ether(f) for f in gw.handle(bytes(frame), now)]


def checksum_right(packet: Ether) -> bool:
    again = packet.copy()
    del again[TCP].chksum
    return Ether(bytes(again))[TCP].chksum == packet[TCP].chksum


def query(name: str, qtype: str = "AAAA", ident: int = 7) -> bytes:
    return encode_tcp_frame(bytes(DNS(id=ident, rd=1, qd=DNSQR(qname=name, qtype=qtype))))


def handshake(gw: Gateway6, sport: int = 40000, src: str = GUEST,
              dst: str = GW_TEXT) -> int:
    """The guest's SYN and its ACK of the SYN-ACK; the gateway's next sequence number."""
    (synack,) = send(gw, TCP(sport=sport, dport=53, flags="S", seq=100,
                             options=[("MSS", 1440)]), src=src, dst=dst)
    assert synack[TCP].flags == "SA" and synack[TCP].ack == 101
    assert send(gw, TCP(sport=sport, dport=53, flags="A", seq=101, ack=synack[TCP].seq + 1),
                src=src, dst=dst) == []
    return int(synack[TCP].seq) + 1


def test_the_handshake_answers_from_the_address_asked_with_the_ipv6_mss(gw):
    (synack,) = send(gw, TCP(sport=40000, dport=53, flags="S", seq=100, options=[("MSS", 1440)]))
    assert synack[Ether].dst == GUEST_MAC and synack[Ether].src == "52:54:00:00:00:01"
    assert (synack[IPv6].src, synack[IPv6].dst) == (GW_TEXT, GUEST)
    assert (synack[TCP].sport, synack[TCP].dport) == (53, 40000)
    assert dict(synack[TCP].options)["MSS"] == 1500 - 60
    assert checksum_right(synack), "the checksum covers the IPv6 pseudo header"
    # the link-local address is the gateway's too: answered from it
    (synack,) = send(gw, TCP(sport=40001, dport=53, flags="S", seq=5), src=GUEST_LL, dst=GW_LL)
    assert synack[TCP].flags == "SA" and synack[IPv6].src == GW_LL
    assert checksum_right(synack)
    assert gw.counters["tcp-connections"] == 2


def test_a_query_split_over_two_segments_is_answered_once_whole(gw):
    nxt = handshake(gw)
    whole = query("six.six.internal")
    (ack,) = send(gw, TCP(sport=40000, dport=53, flags="PA", seq=101, ack=nxt) / whole[:9])
    assert ack[TCP].flags == "A" and ack[TCP].ack == 110 and not bytes(ack[TCP].payload)
    (answer,) = send(gw, TCP(sport=40000, dport=53, flags="PA", seq=110, ack=nxt) / whole[9:])
    assert answer[TCP].flags == "PA" and answer[TCP].seq == nxt
    assert answer[TCP].ack == 101 + len(whole) and checksum_right(answer)
    data = bytes(answer[TCP].payload)
    assert int.from_bytes(data[:2], "big") == len(data) - 2  # RFC 7766 8: length-prefixed
    dns = DNS(data[2:])
    assert dns.id == 7 and dns.ancount == 1 and dns.an[0].rdata == str(SIX)


def test_two_queries_on_one_connection_and_in_one_segment(gw):
    nxt = handshake(gw)
    first, second = query("six.six.internal", ident=1), query("six.six.internal", "A", 2)
    (one,) = send(gw, TCP(sport=40000, dport=53, flags="PA", seq=101, ack=nxt) / first)
    nxt += len(one[TCP].payload)
    seq = 101 + len(first)
    (two,) = send(gw, TCP(sport=40000, dport=53, flags="PA", seq=seq, ack=nxt) / second)
    assert two[TCP].seq == nxt and DNS(bytes(two[TCP].payload)[2:]).id == 2
    nxt += len(two[TCP].payload)
    seq += len(second)
    both = query("six.six.internal", ident=3) + query("nothing.six.internal", ident=4)
    (out,) = send(gw, TCP(sport=40000, dport=53, flags="PA", seq=seq, ack=nxt) / both)
    stream = TcpFramer().feed(bytes(out[TCP].payload))
    assert [DNS(m).id for m in stream] == [3, 4]
    assert DNS(stream[1]).rcode == 3  # NXDOMAIN, answered on the same connection


def test_a_fin_is_acknowledged_and_answered_with_ours_then_the_connection_is_gone(gw):
    nxt = handshake(gw)
    server = gw.tcp[53]
    fin = send(gw, TCP(sport=40000, dport=53, flags="FA", seq=101, ack=nxt))
    assert fin[-1][TCP].flags == "FA" and fin[-1][TCP].ack == 102 and fin[-1][TCP].seq == nxt
    assert checksum_right(fin[-1])
    assert send(gw, TCP(sport=40000, dport=53, flags="A", seq=102, ack=nxt + 1)) == []
    assert server.conns == {}, "closed once both FINs are acknowledged"


def test_a_rst_forgets_the_connection_at_once(gw):
    nxt = handshake(gw)
    assert send(gw, TCP(sport=40000, dport=53, flags="R", seq=101, ack=nxt)) == []
    assert gw.tcp[53].conns == {}


@pytest.mark.parametrize(("dst", "sport"), [(GW_TEXT, 40000), (GW_LL, 40001)])
def test_a_syn_to_a_port_nobody_serves_gets_rst(gw, dst, sport):
    src = GUEST if dst == GW_TEXT else GUEST_LL
    (rst,) = send(gw, TCP(sport=sport, dport=22, flags="S", seq=1000), src=src, dst=dst)
    assert rst[TCP].flags == "RA" and rst[TCP].ack == 1001 and rst[TCP].seq == 0
    assert (rst[IPv6].src, rst[IPv6].dst) == (dst, src) and checksum_right(rst)
    assert send(gw, TCP(sport=sport, dport=22, flags="R", seq=1), src=src, dst=dst) == []
    assert gw.counters["tcp-resets"] == 1  # never a RST for a RST


def test_with_the_host_uplink_an_unserved_port_goes_to_the_hosts_loopback(gw):
    taken = []
    gw.egress = lambda frame, ip, now: taken.append(ip.dst) or True
    assert send(gw, TCP(sport=40000, dport=22, flags="S")) == []
    assert taken == [GW], "the gateway's address in the prefix stands for ::1"
    (rst,) = send(gw, TCP(sport=40000, dport=22, flags="S"), src=GUEST_LL, dst=GW_LL)
    assert rst[TCP].flags == "RA", "a link-local address is the gateway's own: RST"
    (synack,) = send(gw, TCP(sport=40001, dport=53, flags="S"))
    assert synack[TCP].flags == "SA" and taken == [GW], "a served port is the gateway's"


def test_a_segment_with_a_bad_checksum_is_dropped_and_counted(gw):
    for dport in (53, 22):
        bad = TCP(sport=40000, dport=dport, flags="S", seq=1, chksum=0x1234)
        assert send(gw, bad) == []
    assert gw.tcp[53].conns == {} and gw.counters["tcp-bad-checksum"] == 2
    nxt = handshake(gw)
    bad = TCP(sport=40000, dport=53, flags="PA", seq=101, ack=nxt, chksum=0x1234)
    assert send(gw, bad / query("six.six.internal")) == []
    (answer,) = send(gw, TCP(sport=40000, dport=53, flags="PA", seq=101, ack=nxt)
                     / query("six.six.internal"))
    assert answer[TCP].seq == nxt, "the bad segment's data was never taken"


def test_a_guests_small_mss_caps_the_segments(gw):
    (synack,) = send(gw, TCP(sport=40000, dport=53, flags="S", seq=100, options=[("MSS", 100)]))
    nxt = int(synack[TCP].seq) + 1
    send(gw, TCP(sport=40000, dport=53, flags="A", seq=101, ack=nxt))
    server = gw.tcp[53]
    out = [Ether(f) for f in server.send((bytes.fromhex("fd420000000000010000000000000010"),
                                          40000), bytes(250), 1.0)]
    assert [len(p[TCP].payload) for p in out] == [100, 100, 50]


def test_explain_names_the_tcp_service_and_the_rst(gw):
    def explain(dport: int) -> list[tuple[str, str]]:
        frame = Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / IPv6(src=GUEST, dst=GW_TEXT) \
            / TCP(sport=40000, dport=dport, flags="S")
        return gw.explain(bytes(frame))

    assert explain(53) == [("TCP taken by the DNS service", "gateway6 Rule 9")]
    assert explain(22) == [("TCP to port 22: no service, RST sent", "gateway6 Rule 9")]
    gw.egress = lambda frame, ip, now: True
    assert "::1" in explain(22)[0][0]
