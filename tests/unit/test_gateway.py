"""The gateway's own stack, frame by frame (scapy builds the input and checks the output)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror
from scapy.layers.l2 import ARP, Ether

from nat.gateway import Gateway
from nat.tcp_server import TcpServer
from wire.tcp import ACK, FIN, PSH

GW_MAC, GW_IP = "52:54:00:aa:bb:01", "192.168.122.1"
GUEST_MAC, GUEST_IP = "52:54:00:00:00:05", "192.168.122.5"


@pytest.fixture
def gw() -> Gateway:
    return Gateway(bytes.fromhex(GW_MAC.replace(":", "")), bytes([192, 168, 122, 1]), 24)


def one(frames: list[bytes]) -> Ether:
    assert len(frames) == 1, frames
    return Ether(frames[0])


def test_arp_request_for_the_gateway_is_answered(gw):
    request = Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=GUEST_MAC, psrc=GUEST_IP, pdst=GW_IP)
    reply = one(gw.handle(bytes(request), 0.0))
    assert reply[Ether].dst == GUEST_MAC and reply[ARP].op == 2
    assert reply[ARP].hwsrc == GW_MAC and reply[ARP].psrc == GW_IP
    assert reply[ARP].pdst == GUEST_IP


def test_arp_for_others_and_claims_of_the_gateway_ip_are_not_answered(gw):
    other = Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=GUEST_MAC, psrc=GUEST_IP, pdst="192.168.122.9")
    assert gw.handle(bytes(other), 0.0) == []
    claim = Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=GUEST_MAC, psrc=GW_IP, pdst=GW_IP)
    assert gw.handle(bytes(claim), 0.0) == []
    assert gw.counters["arp-claims-gateway-ip"] == 1


def test_bad_arp_is_counted_not_raised(gw):
    bad = Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwlen=8, pdst=GW_IP)
    assert gw.handle(bytes(bad), 0.0) == []
    assert any(k.startswith("malformed") for k in gw.counters)


def test_ping_to_the_gateway(gw):
    echo = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST_IP, dst=GW_IP) / ICMP(
        type=8, id=7, seq=3) / b"payload"
    reply = one(gw.handle(bytes(echo), 0.0))
    assert reply[IP].src == GW_IP and reply[IP].dst == GUEST_IP
    assert reply[ICMP].type == 0 and reply[ICMP].id == 7 and reply[ICMP].seq == 3
    assert bytes(reply[ICMP].payload) == b"payload"
    rebuilt = Ether(bytes(reply))
    del rebuilt[IP].chksum, rebuilt[ICMP].chksum
    assert bytes(Ether(bytes(rebuilt))) == bytes(reply), "checksums are right"


def test_an_echo_answer_larger_than_the_link_mtu_goes_without_df(gw):
    """Rule 2: the router port fragments it; a packet that fits keeps DF."""
    def answer(size: int) -> Ether:
        echo = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST_IP, dst=GW_IP) / ICMP(
            type=8, id=7, seq=3) / bytes(size)
        return one(gw.handle(bytes(echo), 0.0))
    assert answer(1472)[IP].flags == "DF" and answer(1473)[IP].flags == 0
    assert len(answer(4000)[IP]) == 4028


def test_udp_to_a_closed_port_gets_port_unreachable_but_broadcast_does_not(gw):
    probe = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST_IP, dst=GW_IP) / UDP(
        sport=4000, dport=9999) / b"x"
    err = one(gw.handle(bytes(probe), 0.0))
    assert err[ICMP].type == 3 and err[ICMP].code == 3
    assert err[UDPerror].dport == 9999
    bcast = Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / IP(
        src=GUEST_IP, dst="255.255.255.255") / UDP(sport=4000, dport=9999)
    assert gw.handle(bytes(bcast), 0.0) == []


def test_udp_service_gets_the_datagram(gw):
    seen = []

    def service(mac, ip, port, dst, payload, now):
        seen.append((mac, ip, port, dst, payload))
        return [gw.udp_frame(mac, ip, 53, port, b"answer")]

    gw.udp[53] = service
    query = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST_IP, dst=GW_IP) / UDP(
        sport=5000, dport=53) / b"question"
    reply = one(gw.handle(bytes(query), 1.0))
    assert seen == [(bytes.fromhex("525400000005"), bytes([192, 168, 122, 5]), 5000,
                     bytes([192, 168, 122, 1]), b"question")]
    assert reply[UDP].sport == 53 and reply[UDP].dport == 5000
    assert bytes(reply[UDP].payload) == b"answer"


def test_tcp_to_a_closed_port_is_reset(gw):
    syn = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST_IP, dst=GW_IP) / TCP(
        sport=40000, dport=22, flags="S", seq=1000)
    rst = one(gw.handle(bytes(syn), 0.0))
    assert rst[TCP].flags == "RA" and rst[TCP].ack == 1001


def test_tcp_service_handshake_request_answer_and_close(gw):
    server = TcpServer(53, lambda key, data, now: data.upper())
    gw.tcp[53] = server
    base = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST_IP, dst=GW_IP)
    synack = one(gw.handle(bytes(base / TCP(sport=40000, dport=53, flags="S", seq=10)), 0.0))
    assert synack[TCP].flags == "SA" and synack[TCP].ack == 11
    iss = synack[TCP].seq
    data = base / TCP(sport=40000, dport=53, flags="PA", seq=11, ack=iss + 1) / b"hello"
    answer = one(gw.handle(bytes(data), 0.1))
    assert answer[TCP].flags == PSH | ACK and bytes(answer[TCP].payload) == b"HELLO"
    assert answer[TCP].ack == 16
    fin = base / TCP(sport=40000, dport=53, flags="FA", seq=16, ack=iss + 6)
    out = [Ether(f) for f in gw.handle(bytes(fin), 0.2)]
    assert out[-1][TCP].flags & FIN
    last_ack = base / TCP(sport=40000, dport=53, flags="A", seq=17, ack=iss + 7)
    gw.handle(bytes(last_ack), 0.3)
    assert server.conns == {}, "closed after both FINs were acknowledged"


def test_tcp_service_retransmits_unacked_data_then_gives_up(gw):
    server = TcpServer(53, lambda key, data, now: b"reply")
    gw.tcp[53] = server
    base = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST_IP, dst=GW_IP)
    iss = one(gw.handle(bytes(base / TCP(sport=1, dport=53, flags="S", seq=0)), 0.0))[TCP].seq
    gw.handle(bytes(base / TCP(sport=1, dport=53, flags="PA", seq=1, ack=iss + 1) / b"q"), 0.0)
    deadline = server.next_deadline()
    assert deadline == pytest.approx(1.0)
    again = [Ether(f) for f in server.expire(deadline)]
    assert bytes(again[0][TCP].payload) == b"reply", "retransmitted after RTO"
    now = deadline
    for _ in range(10):
        now += 60
        server.expire(now)
    assert server.conns == {}
