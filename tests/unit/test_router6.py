"""The IPv6 router (nat.router6) against packets scapy builds and reads: BCP 38, hop limit,
isolated and no-route answers, Neighbor Discovery toward guests with held packets, and
fragments reassembled before the host uplink takes them."""

import random

from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.layers.l2 import Ether

from nat.gateway6 import Gateway6
from nat.router6 import L3, Router6
from wire.ipv6 import Ipv6
from wire.vnet import NO_OFFLOAD

GW_MAC, GUEST_MAC = bytes.fromhex("525400000001"), "52:54:00:00:00:10"
PREFIX = bytes.fromhex("fd42000000000001") + bytes(8)
GW = PREFIX[:15] + b"\x01"
GUEST, OUTSIDE = "fd42:0:0:1::10", "2001:db8::80"


class Taker:
    """A host uplink that takes everything and remembers it."""

    def __init__(self) -> None:
        self.taken: list[tuple[bytes, Ipv6]] = []

    def from_guest(self, packet: bytes, ip: Ipv6, now: float) -> bool:
        self.taken.append((packet, ip))
        return True


def router(mode: str = "nat", egress: Taker | None = None) -> Router6:
    gw = Gateway6(GW_MAC, GW, PREFIX, 64, rng=random.Random(1))
    return Router6(gw, mode, egress)


def packet(ip6) -> bytes:
    return NO_OFFLOAD + bytes(Ether(src=GUEST_MAC, dst="52:54:00:00:00:01") / ip6)


def route(r: Router6, ip6, now: float = 0.0):
    p = packet(ip6)
    ip = r.routes(p)
    assert ip is not None
    return r.from_guest(p, ip, now)


def test_only_the_guest_prefix_is_routed_bcp38():
    egress = Taker()
    r = router(egress=egress)
    for src in ("2001:db8::5", "fe80::5"):
        out = route(r, IPv6(src=src, dst=OUTSIDE) / UDP(dport=53))
        assert out.switch == [] and out.uplink == []
    assert egress.taken == [] and r.counters["drop-source-not-in-prefix"] == 2
    route(r, IPv6(src=GUEST, dst=OUTSIDE) / UDP(dport=53))
    assert len(egress.taken) == 1


def test_what_is_the_gateways_or_multicast_is_not_routed():
    r = router(egress=Taker())
    r.gateway.udp[53] = lambda *a: []  # the gateway's DNS
    for dst in ("fd42:0:0:1::1", "ff02::1", str(r.gateway.link_local.hex(":", 2))):
        assert r.routes(packet(IPv6(src=GUEST, dst=dst) / UDP(dport=53))) is None
    on_link = route(r, IPv6(src=GUEST, dst="fd42:0:0:1::20") / UDP())
    assert on_link.switch == []  # the switch delivers it


def test_hop_limit_1_gets_time_exceeded_and_isolated_gets_admin_prohibited():
    egress = Taker()
    r = router(egress=egress)
    [error] = route(r, IPv6(src=GUEST, dst=OUTSIDE, hlim=1) / UDP(dport=53)).switch
    answer = Ether(error[10:])
    assert answer[ICMPv6TimeExceeded].code == 0 and answer[IPv6].dst == GUEST
    assert answer[IPv6].src == "fd42:0:0:1::1" and egress.taken == []
    isolated = router("isolated", egress=Taker())
    [error] = route(isolated, IPv6(src=GUEST, dst=OUTSIDE) / UDP(dport=53)).switch
    assert Ether(error[10:])[ICMPv6DestUnreach].code == 1
    assert isolated.counters["drop-isolated"] == 1


def test_no_uplink_answers_no_route_but_never_for_an_error():
    r = router()
    [error] = route(r, IPv6(src=GUEST, dst=OUTSIDE) / ICMPv6EchoRequest()).switch
    answer = Ether(error[10:])
    assert answer[ICMPv6DestUnreach].code == 0
    # the quoted packet is the one sent, and the checksum verifies
    quoted = answer[ICMPv6DestUnreach].payload
    assert quoted.dst == OUTSIDE and quoted.src == GUEST
    check = answer[ICMPv6DestUnreach].cksum
    del answer[ICMPv6DestUnreach].cksum
    assert Ether(bytes(answer))[ICMPv6DestUnreach].cksum == check
    again = route(r, IPv6(src=GUEST, dst=OUTSIDE) / ICMPv6DestUnreach() / IPv6())
    assert again.switch == []


def test_packets_for_an_unknown_guest_wait_for_its_neighbor_advertisement():
    r = router(egress=Taker())
    released = []
    r.released = released.append
    reply = NO_OFFLOAD + bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                               / IPv6(src=OUTSIDE, dst="fd42:0:0:1::33") / UDP(sport=53))
    out = r.to_guests([reply, reply], 0.0)
    [ns] = [Ether(f[10:]) for f in out.switch]  # one solicitation, the packets held
    assert ns[ICMPv6ND_NS].tgt == "fd42:0:0:1::33" and ns[IPv6].dst == "ff02::1:ff00:33"
    assert ns.dst == "33:33:ff:00:00:33" and ns[IPv6].hlim == 255
    assert ns[ICMPv6NDOptSrcLLAddr].lladdr == "52:54:00:00:00:01"
    advert = (Ether(src="52:54:00:00:00:33", dst="52:54:00:00:00:01")
              / IPv6(src="fd42:0:0:1::33", dst="fd42:0:0:1::1")
              / ICMPv6ND_NA(tgt="fd42:0:0:1::33", S=1)
              / ICMPv6NDOptDstLLAddr(lladdr="52:54:00:00:00:33"))
    assert r.gateway.handle(bytes(advert), 0.5) == []
    [freed] = released
    assert len(freed.switch) == 2
    for frame in freed.switch:
        assert Ether(frame[10:]).dst == "52:54:00:00:00:33"
        assert Ether(frame[10:]).src == "52:54:00:00:00:01"
    # known now: the next packet goes at once
    assert len(r.to_guests([reply], 1.0).switch) == 1


def test_an_advertisement_with_hop_limit_below_255_teaches_nothing():
    r = router(egress=Taker())
    advert = (Ether(src="52:54:00:00:00:33", dst="52:54:00:00:00:01")
              / IPv6(src="fd42:0:0:1::33", dst="fd42:0:0:1::1", hlim=64)
              / ICMPv6ND_NA(tgt="fd42:0:0:1::33")
              / ICMPv6NDOptDstLLAddr(lladdr="52:54:00:00:00:66"))
    r.gateway.handle(bytes(advert), 0.0)
    assert r.guests.lookup(bytes.fromhex("fd420000000000010000000000000033"), 0.0) is None


def test_fragments_are_whole_before_the_host_uplink_takes_them():
    egress = Taker()
    r = router(egress=egress)
    big = IPv6(src=GUEST, dst=OUTSIDE) / IPv6ExtHdrFragment(id=9) / UDP(dport=9) / bytes(3000)
    for piece in fragment6(big, 1280):
        route(r, piece)
    [(whole, ip)] = egress.taken
    assert ip.proto == 17 and ip.end - ip.start == 3008 and ip.start >= L3 + 40
    assert Ether(whole[10:])[UDP].dport == 9
    assert bytes(Ether(whole[10:])[UDP].payload) == bytes(3000)


UPLINK_MAC, NEXT_HOP_MAC = bytes.fromhex("525400000099"), bytes.fromhex("5254000000aa")
UPLINK6 = "2001:db8:9::2"


class Station:
    """The raw uplink's station, reduced to what the router asks of it."""

    mac = UPLINK_MAC
    mtu = 1500

    def __init__(self) -> None:
        self.address: bytes | None = bytes.fromhex("20010db8000900000000000000000002")

    def handle(self, frame: bytes, now: float) -> tuple[list[bytes], bool]:
        return [], False

    def resolve(self, packets, now: float) -> list[bytes]:
        return [bytes(p[:10]) + NEXT_HOP_MAC + UPLINK_MAC + bytes(p[22:]) for p in packets]

    def stats(self) -> dict:
        return {}


def raw_router(mode: str = "nat") -> Router6:
    from nat.conntrack import Conntrack

    r = router(mode)
    r.station = Station()
    if mode == "nat":
        r.conntrack = Conntrack(r.station.address)
    return r


def test_nat66_masquerades_to_the_uplink_address_and_back():
    r = raw_router()
    r.guests.learn(bytes.fromhex("fd420000000000010000000000000010"),
                   bytes.fromhex("525400000010"), 0.0)
    out = route(r, IPv6(src=GUEST, dst=OUTSIDE, hlim=64) / UDP(sport=5353, dport=53) / b"q")
    [sent] = [Ether(p[10:]) for p in out.uplink]
    assert sent[IPv6].src == UPLINK6 and sent[IPv6].hlim == 63
    assert sent.dst == "52:54:00:00:00:aa" and sent.src == "52:54:00:00:00:99"
    check = sent[UDP].chksum
    del sent[UDP].chksum
    assert Ether(bytes(sent))[UDP].chksum == check
    answer = NO_OFFLOAD + bytes(Ether(src="52:54:00:00:00:aa", dst="52:54:00:00:00:99")
                                / IPv6(src=OUTSIDE, dst=UPLINK6)
                                / UDP(sport=53, dport=sent[UDP].sport) / b"a")
    [back] = [Ether(p[10:]) for p in r.from_uplink(answer, 1.0).switch]
    assert back[IPv6].dst == GUEST and back[UDP].dport == 5353 and back.dst == GUEST_MAC
    # nobody asked this one: dropped
    stranger = NO_OFFLOAD + bytes(Ether(src="52:54:00:00:00:aa", dst="52:54:00:00:00:99")
                                  / IPv6(src="2001:db8::99", dst=UPLINK6) / UDP(dport=4000))
    assert r.from_uplink(stranger, 1.0).switch == []


def test_route_mode_forwards_unchanged_and_refuses_what_is_too_big():
    r = raw_router("route")
    out = route(r, IPv6(src=GUEST, dst=OUTSIDE, hlim=9) / UDP(dport=53))
    [sent] = [Ether(p[10:]) for p in out.uplink]
    assert sent[IPv6].src == GUEST and sent[IPv6].hlim == 8
    [error] = route(r, IPv6(src=GUEST, dst=OUTSIDE) / UDP(dport=53) / bytes(1500)).switch
    from scapy.layers.inet6 import ICMPv6PacketTooBig
    assert Ether(error[10:])[ICMPv6PacketTooBig].mtu == 1500
    inbound = NO_OFFLOAD + bytes(Ether(src="52:54:00:00:00:aa", dst="52:54:00:00:00:99")
                                 / IPv6(src=OUTSIDE, dst=GUEST, hlim=5) / UDP(dport=7))
    r.guests.learn(bytes.fromhex("fd420000000000010000000000000010"),
                   bytes.fromhex("525400000010"), 0.0)
    [delivered] = [Ether(p[10:]) for p in r.from_uplink(inbound, 0.0).switch]
    assert delivered[IPv6].hlim == 4 and delivered.dst == GUEST_MAC


def test_nat_without_an_uplink_address_answers_no_route():
    r = raw_router()
    r.conntrack = None
    [error] = route(r, IPv6(src=GUEST, dst=OUTSIDE) / UDP(dport=53)).switch
    assert Ether(error[10:])[ICMPv6DestUnreach].code == 0
    assert r.counters["drop-no-uplink-address"] == 1


def test_a_datagram_larger_than_the_guest_link_leaves_in_fragments_that_reassemble():
    from scapy.layers.inet6 import defragment6

    r = router(egress=Taker())
    r.guests.learn(bytes.fromhex("fd420000000000010000000000000010"),
                   bytes.fromhex("525400000010"), 0.0)
    big = IPv6(src=OUTSIDE, dst=GUEST) / UDP(sport=7, dport=5000) / (bytes(range(256)) * 12)
    whole = Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / big
    routed = r.to_guests([NO_OFFLOAD + bytes(whole)], 0.0)  # a router does not fragment
    assert routed.switch == [] and r.counters["drop-too-big-for-guests"] == 1
    made = r.to_guests([NO_OFFLOAD + bytes(whole)], 0.0, fragment=True)  # the host uplink's
    pieces = [Ether(p[10:]) for p in made.switch]
    assert len(pieces) == 3 and all(len(p[IPv6]) <= 1500 for p in pieces)
    assert all(p.dst == GUEST_MAC and IPv6ExtHdrFragment in p for p in pieces)
    again = IPv6(bytes(defragment6([p[IPv6] for p in pieces])))
    assert bytes(again[UDP].payload) == bytes(range(256)) * 12
    check = again[UDP].chksum
    del again[UDP].chksum
    assert IPv6(bytes(again))[UDP].chksum == check


def test_idle_nat66_flows_expire_with_the_router():
    r = raw_router()
    route(r, IPv6(src=GUEST, dst=OUTSIDE) / UDP(sport=5353, dport=53))
    assert len(r.conntrack) == 1
    r.expire(10_000.0)  # past the UDP timeout
    assert len(r.conntrack) == 0


def test_the_gateways_addresses_are_never_a_guests_or_an_outsiders():
    r = raw_router("route")
    spoofed = route(r, IPv6(src="fd42:0:0:1::1", dst=OUTSIDE) / UDP(dport=53))
    assert spoofed.uplink == [] and r.counters["drop-source-is-the-gateway"] == 1
    assert r.guests.lookup(bytes.fromhex("fd420000000000010000000000000001"), 0.0) is None
    inbound = NO_OFFLOAD + bytes(Ether(src="52:54:00:00:00:aa", dst="52:54:00:00:00:99")
                                 / IPv6(src=OUTSIDE, dst="fd42:0:0:1::1") / UDP(dport=7))
    out = r.from_uplink(inbound, 0.0)
    assert out.switch == [] and not r.guests.held  # no solicitation for the gateway itself
    assert r.counters["drop-to-the-gateway-from-outside"] == 1


def test_packets_held_for_a_guest_go_when_it_speaks_first():
    r = router(egress=Taker())
    reply = NO_OFFLOAD + bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                               / IPv6(src=OUTSIDE, dst=GUEST) / UDP(sport=53))
    assert len(r.to_guests([reply], 0.0).switch) == 1  # the solicitation; the reply held
    out = route(r, IPv6(src=GUEST, dst=OUTSIDE) / UDP(dport=53), now=0.2)
    [released] = [Ether(p[10:]) for p in out.switch]
    assert released.dst == GUEST_MAC and released[UDP].sport == 53


def test_tcp_and_udp_to_the_gateway_without_a_service_are_for_the_hosts_loopback():
    from scapy.layers.inet import TCP

    r = router(egress=Taker())
    r.gateway.udp[53] = lambda *a: []
    ssh = packet(IPv6(src=GUEST, dst="fd42:0:0:1::1") / TCP(dport=22, flags="S"))
    ip = r.routes(ssh)
    assert ip is not None
    r.from_guest(ssh, ip, 0.0)
    assert len(r.egress.taken) == 1
    assert r.routes(packet(IPv6(src=GUEST, dst="fd42:0:0:1::1") / UDP(dport=53))) is None
    assert router().routes(ssh) is None  # no host uplink: the gateway's own (a RST)


def test_no_uplink_means_no_route_and_no_default_route_advertised():
    r = router("none")
    [error] = route(r, IPv6(src=GUEST, dst=OUTSIDE) / UDP(dport=53)).switch
    assert Ether(error[10:])[ICMPv6DestUnreach].code == 0
    from scapy.layers.inet6 import ICMPv6ND_RA
    r.gateway.default_route = False
    ra = Ether(r.gateway.advertisement(bytes(16), bytes(6)))
    assert ra[ICMPv6ND_RA].routerlifetime == 0


def test_a_datagram_whose_fragments_never_all_come_gets_time_exceeded():
    r = router(egress=Taker())
    first = fragment6(IPv6(src=GUEST, dst=OUTSIDE) / IPv6ExtHdrFragment(id=5)
                      / UDP(dport=9) / bytes(3000), 1280)[0]
    route(r, first)
    [late] = [Ether(p[10:]) for p in r.expire(100.0).switch]
    assert late[ICMPv6TimeExceeded].code == 1 and late[IPv6].dst == GUEST
