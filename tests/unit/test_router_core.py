"""The router core frame by frame: next-hop ARP with held packets, TTL, DF over the MTU."""

from __future__ import annotations

import socket

from scapy.layers.inet import ICMP, IP, UDP, in4_pseudoheader
from scapy.layers.l2 import ARP, Ether
from scapy.utils import checksum

from nat.conntrack import Conntrack
from nat.gateway import Gateway
from nat.reassembly import Reassembly
from nat.router import Router, UplinkAddress
from wire.vnet import FLAG_NEEDS_CSUM, encode_header, wrap

GW_MAC, UP_MAC, HOP_MAC = "52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:bb:00:01"
GUEST_MAC = "52:54:00:00:00:05"


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def router(mode: str = "nat", mtu: int = 1500) -> Router:
    gateway = Gateway(mac(GW_MAC), bytes([10, 70, 0, 1]), 24)
    uplink = UplinkAddress(bytes([10, 254, 0, 2]), 24, mac(UP_MAC), bytes([10, 254, 0, 1]), mtu)
    conntrack = Conntrack(uplink.ip) if mode == "nat" else None
    return Router(gateway, mode, (0x0A460000, 24), uplink, conntrack)


def from_guest(payload_len: int = 20, ttl: int = 64, df: bool = False) -> bytes:
    return wrap(bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(
        src="10.70.0.5", dst="10.254.0.1", ttl=ttl, flags="DF" if df else 0) / UDP(
        sport=4000, dport=53) / bytes(payload_len)))


def test_packets_wait_for_the_next_hop_arp_and_then_leave_translated():
    r = router()
    out = r.from_guest(from_guest(), now=0.0)
    assert out.switch == [] and len(out.uplink) == 1
    request = Ether(out.uplink[0][10:])
    assert request[ARP].op == 1 and request[ARP].pdst == "10.254.0.1"
    assert request[ARP].psrc == "10.254.0.2" and request[Ether].src == UP_MAC
    reply = wrap(bytes(Ether(src=HOP_MAC, dst=UP_MAC) / ARP(
        op=2, hwsrc=HOP_MAC, psrc="10.254.0.1", hwdst=UP_MAC, pdst="10.254.0.2")))
    released = r.from_uplink(reply, now=0.1).uplink
    assert len(released) == 1
    sent = Ether(released[0][10:])
    assert sent[Ether].dst == HOP_MAC and sent[Ether].src == UP_MAC
    assert sent[IP].src == "10.254.0.2" and sent[IP].ttl == 63, "SNAT and TTL - 1"
    again = r.from_guest(from_guest(), now=0.2).uplink
    assert len(again) == 1 and Ether(again[0][10:])[Ether].dst == HOP_MAC, "cached now"


def test_ttl_1_gets_time_exceeded_from_the_gateway():
    out = router().from_guest(from_guest(ttl=1), now=0.0)
    error = Ether(out.switch[0][10:])
    assert error[IP].src == "10.70.0.1" and error[ICMP].type == 11 and out.uplink == []


def test_df_over_the_uplink_mtu_gets_fragmentation_needed_with_the_mtu():
    out = router(mtu=1280).from_guest(from_guest(payload_len=1300, df=True), now=0.0)
    error = Ether(out.switch[0][10:])
    assert error[ICMP].type == 3 and error[ICMP].code == 4 and error[ICMP].nexthopmtu == 1280
    fits = router(mtu=1280).from_guest(from_guest(payload_len=1200, df=True), now=0.0)
    assert fits.switch == [] and len(fits.uplink) == 1  # the ARP request: it may go


def whole_from(pieces: list[bytes]) -> IP:
    """The datagram the fragments in ``pieces`` (vswitch packets) carry, reassembled."""
    r = Reassembly()
    wholes = [w for w in (r.add(p, 0.0, 24) for p in pieces) if w is not None]
    assert len(wholes) == 1
    return IP(wholes[0][24:])


def test_a_packet_over_the_uplink_mtu_without_df_leaves_in_fragments():
    """Rule 3: cut to the uplink's MTU after translation (the checksum finished first when it
    was left to offload); the far end's reassembly gets the translated datagram."""
    r = router(mtu=1280)
    r.outside.learn(bytes([10, 254, 0, 1]), mac(HOP_MAC), 0.0)
    partial = bytearray(from_guest(payload_len=3000))  # as Linux leaves it to offload:
    partial[:10] = encode_header(FLAG_NEEDS_CSUM, csum_start=34, csum_offset=6)
    pseudo = in4_pseudoheader(17, Ether(bytes(partial[10:]))[IP], 3008)
    partial[50:52] = (~checksum(pseudo) & 0xFFFF).to_bytes(2, "big")  # the pseudo header sum
    for packet in (from_guest(payload_len=3000), bytes(partial)):
        out = r.from_guest(packet, now=0.0)
        assert out.switch == [] and len(out.uplink) == 3
        assert all(len(p) - 24 <= 1280 and p[:10] == bytes(10) for p in out.uplink)
        assert all(Ether(p[10:])[Ether].dst == HOP_MAC for p in out.uplink)
        ip = whole_from(out.uplink)
        assert ip.src == "10.254.0.2" and bytes(ip[UDP].payload) == bytes(3000)
        rebuilt = ip.copy()
        del rebuilt[UDP].chksum
        assert IP(bytes(rebuilt))[UDP].chksum == ip[UDP].chksum, "a valid UDP checksum"


def test_a_packet_to_cut_whose_partial_checksum_points_outside_it_is_counted():
    r = router("route", mtu=1280)
    r.outside.learn(bytes([10, 254, 0, 1]), mac(HOP_MAC), 0.0)
    bad = bytearray(from_guest(payload_len=3000))
    bad[:10] = encode_header(FLAG_NEEDS_CSUM, csum_start=34, csum_offset=5000)
    assert r.from_guest(bytes(bad), now=0.0) == ([], []) and r.counters["malformed"] == 1


def test_from_the_uplink_df_over_the_guest_mtu_gets_frag_needed_and_no_df_is_cut():
    """Rule 3 toward guests, whose link MTU is the gateway's: an uplink with jumbo frames."""
    r = router("route", mtu=9000)
    r.guests.learn(bytes([10, 70, 0, 5]), mac(GUEST_MAC), 0.0)

    def big(df: bool) -> bytes:
        return wrap(bytes(Ether(src=HOP_MAC, dst=UP_MAC) / IP(
            src="10.254.0.1", dst="10.70.0.5", flags="DF" if df else 0) / UDP(
            sport=53, dport=4000) / bytes(4000)))
    refused = r.from_uplink(big(df=True), now=0.0)
    error = Ether(refused.uplink[0][10:])
    assert refused.switch == [] and error[IP].src == "10.254.0.2"
    assert error[ICMP].type == 3 and error[ICMP].code == 4 and error[ICMP].nexthopmtu == 1500
    cut = r.from_uplink(big(df=False), now=0.0)
    assert cut.uplink == [] and len(cut.switch) == 3
    assert all(len(p) - 24 <= 1500 for p in cut.switch)
    assert len(whole_from(cut.switch)[UDP].payload) == 4000


def test_isolated_mode_refuses_with_admin_prohibited():
    out = router("isolated").from_guest(from_guest(), now=0.0)
    error = Ether(out.switch[0][10:])
    assert error[ICMP].type == 3 and error[ICMP].code == 13 and out.uplink == []


def test_route_mode_forwards_without_translation():
    r = router("route")
    r.outside.learn(bytes([10, 254, 0, 1]), mac(HOP_MAC), 0.0)
    sent = Ether(r.from_guest(from_guest(), now=0.0).uplink[0][10:])
    assert sent[IP].src == "10.70.0.5" and sent[IP].ttl == 63
    rebuilt = sent.copy()
    del rebuilt[IP].chksum
    assert Ether(bytes(rebuilt))[IP].chksum == sent[IP].chksum, "incremental checksum is right"


def test_the_uplink_address_answers_arp_and_ping():
    r = router()
    who = wrap(bytes(Ether(src=HOP_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=HOP_MAC, psrc="10.254.0.1", pdst="10.254.0.2")))
    answer = Ether(r.from_uplink(who, now=0.0).uplink[0][10:])
    assert answer[ARP].op == 2 and answer[ARP].hwsrc == UP_MAC
    ping = wrap(bytes(Ether(src=HOP_MAC, dst=UP_MAC) / IP(src="10.254.0.1", dst="10.254.0.2")
                      / ICMP(type=8, id=9, seq=1)))
    pong = Ether(r.from_uplink(ping, now=0.0).uplink[0][10:])
    assert pong[ICMP].type == 0 and pong[IP].src == "10.254.0.2" and pong[ICMP].id == 9


def test_a_source_outside_the_guest_network_is_dropped():
    """BCP 38: a guest cannot send as someone else's address, in any mode."""
    spoofed = wrap(bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="192.0.2.9", dst="10.254.0.1")
                         / UDP(sport=4000, dport=53)))
    for mode in ("nat", "route"):
        r = router(mode)
        assert r.from_guest(spoofed, now=0.0) == ([], [])
        assert r.counters["drop-source-not-in-subnet"] == 1


class FakeEgress:
    """Stands in for nat.egress.HostEgress: records what the router hands it."""

    def __init__(self, host_address: bytes | None) -> None:
        self.host_address = host_address
        self.got: list[bytes] = []

    def from_guest(self, packet: bytes, now: float, ip: object = None) -> None:
        self.got.append(packet)


def test_with_a_host_uplink_routed_packets_and_the_host_address_go_to_the_egress():
    gateway = Gateway(mac(GW_MAC), bytes([10, 70, 0, 1]), 24)
    egress = FakeEgress(bytes([10, 70, 0, 1]))
    r = Router(gateway, "nat", (0x0A460000, 24), None, None, egress)
    assert r.from_guest(from_guest(), now=0.0) == ([], []) and len(egress.got) == 1
    to_host = wrap(bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.70.0.5", dst="10.70.0.1")
                         / UDP(sport=4000, dport=9)))
    r.from_guest(to_host, now=0.0)
    assert egress.got[-1] == to_host, "the host address (the gateway's) is the host's loopback"
    other_guest = wrap(bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.70.0.5",
                                                                   dst="10.70.0.6") / UDP()))
    r.from_guest(other_guest, now=0.0)
    assert len(egress.got) == 2, "on-link traffic is the switch's"
    expired = r.from_guest(from_guest(ttl=1), now=0.0)
    assert Ether(expired.switch[0][10:])[ICMP].type == 11 and len(egress.got) == 2
    back = r.to_guests([wrap(bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                                   / IP(src="10.254.0.1", dst="10.70.0.5") / UDP()))], now=0.0)
    sent = Ether(back.switch[0][10:])
    assert sent.dst == GUEST_MAC and sent.src == GW_MAC, "addressed by the ARP cache"


ONLINK_MAC = "52:54:00:bb:00:07"


def to(dst: str) -> bytes:
    """A guest's datagram to ``dst``."""
    return wrap(bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="10.70.0.5", dst=dst)
                      / UDP(sport=4000, dport=3478) / b"ask"))


def arp_target(out: list) -> str:
    (request,) = out
    return Ether(bytes(request[10:]))[ARP].pdst


def test_an_on_link_destination_is_resolved_itself_and_the_rest_through_the_gateway():
    """Rule 4: 10.254.0.7 is in the uplink's 10.254.0.0/24: ARP for it, not for the gateway
    (which may not even exist); off-link goes to the gateway, in nat and route mode."""
    for mode in ("nat", "route"):
        r = router(mode)
        assert arp_target(r.from_guest(to("10.254.0.7"), now=0.0).uplink) == "10.254.0.7"
        assert arp_target(r.from_guest(to("192.0.2.9"), now=0.0).uplink) == "10.254.0.1"
        reply = wrap(bytes(Ether(src=ONLINK_MAC, dst=UP_MAC) / ARP(
            op=2, hwsrc=ONLINK_MAC, psrc="10.254.0.7", hwdst=UP_MAC, pdst="10.254.0.2")))
        (released,) = r.from_uplink(reply, now=0.1).uplink
        sent = Ether(bytes(released[10:]))
        assert (sent.dst, sent.src, sent[IP].dst) == (ONLINK_MAC, UP_MAC, "10.254.0.7")
        assert sent[IP].src == ("10.254.0.2" if mode == "nat" else "10.70.0.5")
        (again,) = r.from_guest(to("10.254.0.7"), now=0.2).uplink
        assert Ether(bytes(again[10:])).dst == ONLINK_MAC, "cached: no second ARP"
        # the gateway's packet was held, not sent to the on-link host's MAC
        assert r.outside.held[bytes([10, 254, 0, 1])][1], "still waiting for the gateway"


def test_the_uplink_prefix_broadcast_is_not_forwarded_to():
    """Rule 4: a directed broadcast to the uplink's prefix is dropped (RFC 2644); a /31 has no
    broadcast address (RFC 3021), and a /32 puts everything behind the gateway."""
    r = router("route")
    assert r.from_guest(to("10.254.0.255"), now=0.0) == ([], [])
    assert r.counters["drop-directed-broadcast"] == 1
    ip, hop = bytes([10, 254, 0, 2]), bytes([10, 254, 0, 1])

    def hop_for(prefix: int, dst: str) -> bytes | None:
        return UplinkAddress(ip, prefix, mac(UP_MAC), hop).hop_for(socket.inet_aton(dst))

    assert hop_for(31, "10.254.0.3") == bytes([10, 254, 0, 3])
    assert hop_for(32, "10.254.0.3") == hop
    assert hop_for(24, "10.254.0.2") == hop, "our own address is never ARPed for"
    assert hop_for(16, "10.254.7.9") == bytes([10, 254, 7, 9])
    assert hop_for(16, "10.254.255.255") is None
    assert hop_for(24, "10.254.1.9") == hop
