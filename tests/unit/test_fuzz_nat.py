"""Property tests of the gateway's stack, the IPv4 NAT, reassembly and the TCP translator
(issue 13, "fuzzing every parser").

``Gateway.handle`` (with its IPv6 stack ``Gateway6``) takes valid frames of every kind it
answers, mutated and summed again: it never raises, and what it sends is well formed, from its
own addresses, to a unicast MAC. ``nat_packet`` with a ``Conntrack`` under random flows both
ways and time: ``MalformedPacket`` only, the table within its limit, translated headers with good
checksums. ``Reassembly`` under shuffled, duplicated and overlapping fragments: whole datagrams
come back as they were sent, memory stays within ``max_bytes``. ``Splice`` under random guest
segments and host events: never raises but ``MalformedPacket``, what it sends the guest is TCP
with a good checksum, its buffers bounded. Not repeated here: ``nat_packet6`` on random bytes
(test_translate6.py), the raw uplink's IPv6 router and station (test_router6_fuzz.py).
"""

from __future__ import annotations

import random
import struct

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from nat.conntrack import Conntrack
from nat.gateway import Gateway
from nat.gateway6 import NEIGHBOURS, Gateway6
from nat.reassembly import Reassembly
from nat.tcp_splice import Splice
from nat.translate import Drop, nat_packet
from tests.unit.fuzzing import budget
from wire.checksum import internet_checksum, pseudo_header_sum
from wire.errors import MalformedPacket
from wire.gso import fragment_ipv4, fragment_ipv6, to_plain_frames
from wire.ipv6 import decode_ipv6, encode_ipv6, icmpv6_checksum_ok, pseudo_header6
from wire.packets import decode_ethernet, decode_ipv4, encode_ipv4
from wire.tcp import ACK, FIN, PSH, RST, SYN, checksum_ok, decode_tcp, encode_tcp
from wire.vnet import NO_OFFLOAD

GW_MAC, GUEST_MAC = "52:54:00:aa:bb:01", "52:54:00:00:00:05"
GW_IP, GUEST_IP, GW6, GUEST6 = "192.168.122.1", "192.168.122.5", "fd42::1", "fd42::5"
BCAST = "ff:ff:ff:ff:ff:ff"


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


# -- mutation with the sums made good again ------------------------------------------------------


def resum(frame: bytearray) -> None:
    """Make the IPv4 header checksum and the L4 checksum right again, where they can be found
    (a mutated frame that still parses as far as its L4 header)."""
    try:
        eth = decode_ethernet(bytes(frame))
        at = eth.start
        if eth.ethertype == 0x0800 and len(frame) >= at + 20:
            ihl = (frame[at] & 15) * 4
            if ihl >= 20 and len(frame) >= at + ihl:
                frame[at + 10:at + 12] = b"\0\0"
                frame[at + 10:at + 12] = struct.pack("!H", internet_checksum(
                    bytes(frame[at:at + ihl])))
                ip = decode_ipv4(bytes(frame), at)
                _l4_sum(frame, ip.start, ip.end, ip.proto, pseudo_header_sum(
                    ip.src, ip.dst, ip.proto, ip.end - ip.start) if ip.proto != 1 else b"")
        elif eth.ethertype == 0x86DD:
            ip = decode_ipv6(bytes(frame), at)
            if ip.fragment is None or ip.fragment[1] == 0 and not ip.fragment[2]:
                _l4_sum(frame, ip.start, ip.end, ip.proto,
                        pseudo_header6(ip.src, ip.dst, ip.proto, ip.end - ip.start))
    except (MalformedPacket, struct.error):
        pass


def _l4_sum(frame: bytearray, start: int, end: int, proto: int, pseudo: bytes) -> None:
    where = {6: 16, 17: 6, 1: 2, 58: 2}.get(proto)
    if where is None or end - start < where + 2:
        return
    frame[start + where:start + where + 2] = b"\0\0"
    csum = internet_checksum(pseudo + bytes(frame[start:end]))
    frame[start + where:start + where + 2] = struct.pack("!H", csum or (0xFFFF if proto == 17
                                                                        else 0))


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    frame = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 3))
        if kind == 0 and frame:
            frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
        elif kind == 1:
            del frame[draw(st.integers(0, len(frame))):]
        elif kind == 2:
            frame += draw(st.binary(min_size=1, max_size=24))
        elif frame:  # a header field: flags, lengths, offsets
            at = draw(st.integers(14, max(14, min(len(frame) - 1, 80))))
            frame[at:at + 2] = draw(st.binary(min_size=2, max_size=2))
    if draw(st.booleans()):
        resum(frame)
    return bytes(frame)


# -- the gateway's stack -------------------------------------------------------------------------

E = Ether(src=GUEST_MAC, dst=GW_MAC)
GATEWAY_SEEDS = [bytes(p) for p in [
    Ether(src=GUEST_MAC, dst=BCAST) / ARP(op=1, hwsrc=GUEST_MAC, psrc=GUEST_IP, pdst=GW_IP),
    Ether(src=GUEST_MAC, dst=BCAST) / ARP(op=1, hwsrc=GUEST_MAC, psrc=GW_IP, pdst=GW_IP),
    E / IP(src=GUEST_IP, dst=GW_IP) / ICMP(type=8, id=7, seq=1) / Raw(b"ping" * 10),
    E / IP(src=GUEST_IP, dst="192.168.122.255") / ICMP(type=8),
    E / IP(src=GUEST_IP, dst=GW_IP) / UDP(sport=5000, dport=53) / Raw(b"\x00\x01query"),
    E / IP(src=GUEST_IP, dst=GW_IP) / UDP(sport=5000, dport=9999) / Raw(b"nobody"),
    Ether(src=GUEST_MAC, dst=BCAST) / IP(src="0.0.0.0", dst="255.255.255.255")
    / UDP(sport=68, dport=67) / Raw(bytes(300)),
    E / IP(src=GUEST_IP, dst=GW_IP) / TCP(sport=40000, dport=22, flags="S"),
    E / IP(src=GUEST_IP, dst=GW_IP) / TCP(sport=40000, dport=22, flags="PA") / Raw(b"x" * 9),
    E / IP(src=GUEST_IP, dst=GW_IP, proto=47) / Raw(b"gre"),
    E / IP(src=GUEST_IP, dst=GW_IP, flags="MF", id=9) / UDP(sport=1, dport=53) / Raw(bytes(64)),
    E / IPv6(src=GUEST6, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=GW6)
    / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC),
    E / IPv6(src="fe80::5", dst="ff02::2", hlim=255) / ICMPv6ND_RS()
    / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC),
    E / IPv6(src=GUEST6, dst=GW6, hlim=255) / ICMPv6ND_NA(tgt=GUEST6, S=1, O=1),
    E / IPv6(src=GUEST6, dst=GW6) / ICMPv6EchoRequest(id=1, seq=2, data=b"ping6"),
    E / IPv6(src=GUEST6, dst=GW6) / UDP(sport=5000, dport=53) / Raw(b"\x00\x01query"),
    E / IPv6(src=GUEST6, dst=GW6) / IPv6ExtHdrDestOpt() / UDP(sport=5000, dport=53),
    E / IPv6(src=GUEST6, dst=GW6) / TCP(sport=40000, dport=53, flags="S"),
    E / IPv6(src=GUEST6, dst="2001:db8::1") / UDP(sport=1, dport=2),
    E / IPv6(src=GUEST6, dst=GW6, nh=99) / Raw(b"??"),
    *fragment6(E / IPv6(src=GUEST6, dst=GW6) / IPv6ExtHdrFragment(id=5)
               / UDP(sport=5000, dport=53) / Raw(bytes(1400)), 600),
]]


def rig() -> Gateway:
    gw = Gateway(mac(GW_MAC), ip4(GW_IP), 24, aliases=frozenset({ip4("192.168.122.2")}))
    gw.v6 = Gateway6(mac(GW_MAC), bytes.fromhex("fd42" + "00" * 13 + "01"),
                     bytes.fromhex("fd42" + "00" * 14), 64, domain="vsw.internal",
                     rng=random.Random(1))

    def dns(src_mac, src, sport, dst, payload, now):  # answers with what it was asked
        if len(src) == 16:
            return [gw.v6.udp_frame(src_mac, src, 53, sport, payload, source=dst)]
        return [gw.udp_frame(src_mac, src, 53, sport, payload)]

    gw.udp[53] = dns
    gw.v6.udp[53] = dns
    return gw


def check_sent(gw: Gateway, frame: bytes) -> None:
    eth = decode_ethernet(frame)
    assert eth.src == gw.mac, "the gateway sends from its own MAC"
    assert not eth.dst[0] & 1 or eth.dst[:2] == b"\x33\x33" or eth.dst == b"\xff" * 6
    assert eth.dst != bytes(6) and eth.tags == 0
    if eth.ethertype == 0x0800:
        ip = decode_ipv4(frame, eth.start)  # a good header checksum, lengths inside the frame
        assert ip.src in (gw.ip, *gw.aliases)
        if ip.proto != 17 or frame[ip.start + 6:ip.start + 8] != b"\0\0":
            assert internet_checksum(
                (pseudo_header_sum(ip.src, ip.dst, ip.proto, ip.end - ip.start)
                 if ip.proto != 1 else b"") + frame[ip.start:ip.end]) in (0, 0xFFFF)
    elif eth.ethertype == 0x86DD:
        assert gw.v6 is not None
        ip = decode_ipv6(frame, eth.start)
        assert ip.src in gw.v6.addresses
        if ip.proto == 58:
            assert icmpv6_checksum_ok(frame, ip)
    else:
        assert eth.ethertype == 0x0806


@budget(300)
@given(st.lists(st.tuples(mutated(GATEWAY_SEEDS), st.floats(0, 5)), min_size=1, max_size=12))
def test_the_gateway_never_raises_and_answers_well_formed_frames(steps):
    gw = rig()
    now = 0.0
    for frame, wait in steps:
        explained = gw.explain(frame)
        assert isinstance(explained, list)
        sent_back = gw.handle(frame, now)
        if len(frame) < 12 or frame[6] & 1 or frame[6:12] == bytes(6):
            continue  # the switch drops a group or zero source before the gateway (its Rule 3)
        for sent in sent_back:
            check_sent(gw, sent)
        now += wait
        assert gw.v6 is not None
        for sent in gw.v6.tick(now):
            check_sent(gw, sent)
        assert len(gw.v6.neighbours) <= NEIGHBOURS
        assert gw.v6.reassembly.held <= gw.v6.reassembly.max_bytes


# -- the IPv4 NAT --------------------------------------------------------------------------------

EXT = ip4("203.0.113.2")
GUESTS = [ip4(f"192.168.122.{n}") for n in (5, 6)]
REMOTES = [ip4("198.51.100.1"), ip4("198.51.100.2")]


@st.composite
def nat_packets(draw) -> tuple[bytes, bool]:
    """A TCP, UDP or ICMP echo packet between a guest and a remote, either way, or an ICMP error
    quoting one; ports from a few (so flows meet again) or many; TTLs, fragments, offloads."""
    out = draw(st.booleans())
    guest, remote = draw(st.sampled_from(GUESTS)), draw(st.sampled_from(REMOTES))
    port = st.one_of(st.sampled_from([53, 80, 1024, 40000]), st.integers(0, 0xFFFF))
    gport, rport = draw(port), draw(port)
    src, dst = (guest, remote) if out else (remote, EXT)
    sport, dport = (gport, rport) if out else (rport, gport)
    proto = draw(st.sampled_from([6, 17, 1, 1]))
    payload = draw(st.binary(max_size=40))
    if proto == 6:
        l4 = encode_tcp(src, dst, sport, dport, draw(st.integers(0, 2**32 - 1)), 0,
                        draw(st.sampled_from([SYN, ACK, ACK | PSH, FIN | ACK, RST, SYN | ACK])),
                        payload)
    elif proto == 17:
        l4 = UDP_(src, dst, sport, dport, payload)
    else:
        kind = draw(st.sampled_from([8, 0, 3, 11]))
        if kind in (3, 11):  # an error quoting a packet of the other direction
            quoted = encode_ipv4(dst, src, 17, UDP_(dst, src, dport, sport, b""))
            payload = quoted[:draw(st.integers(0, len(quoted)))]
            l4 = icmp(kind, draw(st.integers(0, 4)), bytes(4) + payload)
        else:
            l4 = icmp(kind, 0, struct.pack("!HH", gport, 1) + payload)
    packet = bytearray(encode_ipv4(src, dst, proto, l4, ttl=draw(st.sampled_from([64, 2, 1, 0])),
                                   ident=draw(st.integers(0, 3))))
    if draw(st.integers(0, 5)) == 0:  # a fragment: first (MF) or later (an offset)
        struct.pack_into("!H", packet, 6, draw(st.sampled_from([0x2000, 0x0003, 0x2003])))
        packet[10:12] = b"\0\0"
        packet[10:12] = struct.pack("!H", internet_checksum(bytes(packet[:20])))
    frame = bytes(12) + b"\x08\x00" + bytes(packet)
    if draw(st.integers(0, 9)) == 0:
        frame = frame[:draw(st.integers(0, len(frame)))]
    return NO_OFFLOAD + frame, not out


def UDP_(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:  # noqa: N802
    from wire.packets import encode_udp
    return encode_udp(src, dst, sport, dport, payload)


def icmp(kind: int, code: int, rest: bytes) -> bytes:
    from wire.packets import encode_icmp
    return encode_icmp(kind, code, rest)


@budget(200)
@given(st.lists(st.tuples(nat_packets(), st.floats(0, 200)), min_size=1, max_size=40))
def test_the_nat_raises_only_malformed_and_its_conntrack_stays_bounded(steps):
    ct = Conntrack(EXT, max_entries=8, port_range=(20000, 20009))
    now = 0.0
    for (packet, from_outside), wait in steps:
        try:
            result = nat_packet(packet, ct, from_outside, now)
        except MalformedPacket:
            result = None
        if result is not None and not isinstance(result, Drop):
            for sent in result:
                ip = decode_ipv4(bytes(sent), 24)  # a good header checksum after the rewrite
                if not from_outside:
                    assert ip.src == EXT, "what leaves, leaves from the external address"
                else:
                    assert ip.dst in GUESTS
                if ip.proto == 6 and not ip.fragment & 0x3FFF:
                    assert checksum_ok(bytes(sent), ip)
        assert len(ct) <= 8
        now += wait
        ct.expire(now)
    ct.expire(now + 10_000)
    assert len(ct) == 0


# -- reassembly ----------------------------------------------------------------------------------


@st.composite
def fragment_streams(draw) -> tuple[list[bytes], dict[int, bytes], bool]:
    """Fragments of up to three datagrams (IPv4 or IPv6), shuffled, some duplicated, some lost,
    and maybe a forged overlapping one; returns them, the datagrams by id, and the version."""
    v6 = draw(st.booleans())
    originals: dict[int, bytes] = {}
    fragments: list[bytes] = []
    for ident in range(draw(st.integers(1, 3))):
        payload = draw(st.binary(min_size=1, max_size=300).map(lambda b: b * 8))
        if v6:
            src, dst = bytes(15) + b"\x05", bytes(15) + b"\x01"
            whole = bytes(12) + b"\x86\xdd" + struct.pack("!IHBB16s16s", 6 << 28, len(payload),
                                                          17, 64, src, dst) + payload
            pieces = fragment_ipv6(whole, 14, draw(st.integers(1280 // 8, 400)) * 8 // 2 + 48,
                                   ident)
        else:
            whole = bytes(12) + b"\x08\x00" + encode_ipv4(
                ip4(GUEST_IP), ip4(GW_IP), 17, payload, ident=ident, dont_fragment=False)
            pieces = fragment_ipv4(whole, 14, 34, draw(st.integers(1, 80)) * 8)
        originals[ident] = whole
        fragments += pieces
        fragments += draw(st.lists(st.sampled_from(pieces), max_size=2))  # duplicates
    fragments = draw(st.permutations(fragments))
    lost = draw(st.sets(st.integers(0, len(fragments) - 1), max_size=2))
    fragments = [f for i, f in enumerate(fragments) if i not in lost]
    if draw(st.integers(0, 4)) == 0 and not v6 and fragments:  # a forged overlapping fragment
        forged = bytearray(draw(st.sampled_from(fragments)))
        struct.pack_into("!H", forged, 20, (struct.unpack_from("!H", forged, 20)[0] & 0xE000)
                         | draw(st.integers(1, 40)))  # still a fragment: an offset
        forged[24:26] = b"\0\0"
        forged[24:26] = struct.pack("!H", internet_checksum(bytes(forged[14:34])))
        fragments.insert(draw(st.integers(0, len(fragments))), bytes(forged))
        # an overlap drops its datagram (Rule R3), or the forgery fits where a lost piece was:
        # either way, that datagram is no longer what was sent
        originals.pop(struct.unpack_from("!H", forged, 18)[0])
    return fragments, originals, v6


@budget(250)
@given(fragment_streams(), st.sampled_from([4 << 20, 2048]))
def test_reassembly_gives_back_what_was_sent_and_stays_within_its_memory(stream, max_bytes):
    fragments, originals, v6 = stream
    r = Reassembly(max_bytes=max_bytes)
    for i, fragment in enumerate(fragments):
        if v6:
            ip = decode_ipv6(fragment, 14)
            if ip.fragment is None:
                continue
            whole = r.add6(fragment, float(i), ip)
        else:
            decode_ipv4(fragment, 14)  # add's precondition: a checked header
            whole = r.add(fragment, float(i), 14)
        assert r.held <= max_bytes
        if whole is not None:
            if v6:
                ip = decode_ipv6(whole, 14)
                assert ip.fragment is None and whole[14 + 40:] == originals[
                    struct.unpack_from("!I", fragment, 14 + 40 + 4)[0]][14 + 40:]
            else:
                ip4h = decode_ipv4(whole, 14)  # checksum and total length right
                assert not ip4h.fragment & 0x3FFF
                if ip4h.ident in originals:
                    assert whole[ip4h.start:ip4h.end] == originals[ip4h.ident][34:]
    r.expire(1e9)
    assert len(r) == 0 and r.held == 0


# -- the TCP translator --------------------------------------------------------------------------

G4, R4 = ip4(GUEST_IP), ip4("198.51.100.1")


G6, R6 = bytes(15) + b"\x05", b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01"


def from_guest(src: bytes, dst: bytes, seq: int, ack: int, flags: int, payload: bytes = b"",
               options: bytes = b"", window: int = 65535) -> bytes:
    l4 = encode_tcp(src, dst, 40000, 80, seq, ack, flags, payload, options, window)
    if len(src) == 16:
        return NO_OFFLOAD + bytes(12) + b"\x86\xdd" + encode_ipv6(src, dst, 6, l4)
    return NO_OFFLOAD + bytes(12) + b"\x08\x00" + encode_ipv4(src, dst, 6, l4)


def header_of(packet: bytes):
    """The IP header of a guest packet, as the egress decodes it before the splice sees it."""
    return decode_ipv6(packet, 24) if packet[22:24] == b"\x86\xdd" else decode_ipv4(packet, 24)


EVENTS = st.one_of(
    st.tuples(st.just("segment"), st.integers(-3, 3), st.integers(-70000, 70000),
              st.sampled_from([ACK, ACK | PSH, ACK | FIN, RST, SYN, ACK | RST, 0, SYN | ACK]),
              st.binary(max_size=200), st.sampled_from([0, 1, 512, 65535])),
    st.tuples(st.just("host_data"), st.integers(0, 5000)),
    st.tuples(st.just("host_sent"), st.integers(-1, 3000)),
    st.tuples(st.just("host"), st.sampled_from(["connected", "refused", "eof", "reset",
                                                 "unreachable", "shutdown_done"])),
    st.tuples(st.just("wait"), st.floats(0, 300)),
    st.tuples(st.just("garbage"), st.binary(max_size=60)),
    st.tuples(st.just("buffer"), st.sampled_from([1 << 10, 1 << 16, 1 << 20])),
)


@budget(250)
@given(st.one_of(st.sampled_from([b"", b"\x02\x04\x05\xb4", b"\x02\x04\x00\x40\x01\x03\x03\x07",
                                  b"\x01\x03\x03\x0e"]),
                 st.binary(max_size=8).map(lambda o: (o + bytes(-len(o) % 4)))),
       st.integers(0, 2**32 - 1),
       st.lists(EVENTS, min_size=1, max_size=40), st.booleans(), st.booleans())
def test_the_tcp_translator_sends_good_tcp_and_stays_bounded(options, gisn, events, v6, forward):
    guest_ip, remote_ip = (G6, R6) if v6 else (G4, R4)
    if forward:  # a port forward: we send the SYN
        splice = Splice.inbound(guest_ip, 40000, remote_ip, 80, 0.0)
    else:
        syn = from_guest(guest_ip, remote_ip, gisn, 0, SYN, options=options)
        try:
            splice = Splice.outbound(syn, 0.0, ip=header_of(syn))
        except MalformedPacket:  # Rule 1: a SYN whose options overrun
            return
    now = 0.0
    for event in events:
        kind = event[0]
        if kind == "segment":
            _, seq_off, ack_off, flags, payload, window = event
            seq = (splice.rcv_nxt + seq_off * 500) & 0xFFFFFFFF
            ack = (splice.snd_una + ack_off) & 0xFFFFFFFF
            packet = from_guest(guest_ip, remote_ip, seq, ack, flags, payload, window=window)
            splice.from_guest(packet, now, header_of(packet))
        elif kind == "host_data":
            splice.host_data(bytes(event[1]), now)
        elif kind == "host_sent":
            splice.host_sent(min(event[1], len(splice.to_host)), now)
        elif kind == "host":
            action = event[1]
            if action == "connected" and splice.state == "connecting":
                splice.host_connected(now)
            elif action == "refused" and splice.state == "connecting":
                splice.host_refused(now)
            elif action == "unreachable" and splice.state == "connecting":
                splice.host_unreachable(1, now)
            elif action == "eof":
                splice.host_eof(now)
            elif action == "reset":
                splice.host_reset(now)
            elif action == "shutdown_done" and splice.shutdown_host:
                splice.host_shutdown_done()
        elif kind == "wait":
            now += event[1]
            deadline = splice.next_deadline()
            if deadline is not None and deadline <= now:
                splice.expire(now)
        elif kind == "garbage":
            try:
                packet = NO_OFFLOAD + bytes(12) + (b"\x86\xdd" if v6 else b"\x08\x00") + event[1]
                splice.from_guest(packet, now, header_of(packet))
            except MalformedPacket:
                pass
        else:
            splice.buffer = event[1]
        for packet in splice.drain():
            for frame in to_plain_frames(packet):  # GSO super-frames cut as a NIC would
                ip = decode_ipv6(frame, 14) if v6 else decode_ipv4(frame, 14)
                assert (ip.src, ip.dst) == (remote_ip, guest_ip)
                tcp = decode_tcp(frame, ip)
                assert checksum_ok(frame, ip) and (tcp.sport, tcp.dport) == (80, 40000)
        assert splice.room() >= 0
        assert len(splice.to_host) <= 1 << 20, "beyond the largest window offered (Rule 3)"
        assert splice.held() >= 0
