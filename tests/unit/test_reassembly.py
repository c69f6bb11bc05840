"""nat/reassembly.py: fragments made by scapy (an independent fragmenter) come back whole;
the bad ones of RFC 1858 and of docs/testing.md's bad input are refused, and memory stays
bounded."""

from __future__ import annotations

import random

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, fragment

from nat.reassembly import FRAGMENT_COST, Reassembly

SRC, DST = "10.96.0.11", "10.95.0.1"


def datagram(size: int = 4000, ident: int = 7, **ip: object) -> IP:
    return IP(src=SRC, dst=DST, id=ident, **ip) / UDP(sport=5000, dport=7) / bytes(
        random.Random(size).randbytes(size))


def pieces(packet: IP, size: int = 1480) -> list[bytes]:
    return [bytes(f) for f in fragment(packet, fragsize=size)]


def test_in_order_fragments_give_back_the_datagram():
    original = datagram()
    parts = pieces(original)
    assert len(parts) == 3
    r = Reassembly()
    assert r.add(parts[0], 0.0) is None and r.add(parts[1], 0.0) is None
    whole = r.add(parts[2], 0.0)
    assert whole == bytes(original), "byte for byte, header checksum included"
    assert len(r) == 0 and r.held == 0 and r.stats["reassembled"] == 1


def test_any_order_and_interleaved_datagrams():
    """RFC 4787 REQ-14: fragments out of order; two datagrams' fragments mixed."""
    a, b = datagram(5000, ident=1), datagram(3000, ident=2)
    parts = [(p, "a") for p in pieces(a)] + [(p, "b") for p in pieces(b)]
    random.Random(3).shuffle(parts)
    r = Reassembly()
    done = {}
    for part, name in parts:
        whole = r.add(part, 1.0)
        if whole is not None:
            done[name] = whole
    assert done == {"a": bytes(a), "b": bytes(b)}


def test_an_exact_duplicate_is_ignored():
    original = datagram()
    parts = pieces(original)
    r = Reassembly()
    r.add(parts[1], 0.0)
    assert r.add(parts[1], 0.0) is None and r.stats["duplicate"] == 1
    r.add(parts[0], 0.0)
    assert r.add(parts[2], 0.0) == bytes(original)


def test_an_overlap_drops_the_whole_datagram():
    """Rule R3: a fragment at offset 1000 overlaps 0-1480 with different bytes (Teardrop's
    shape); the rest of the datagram then cannot complete it."""
    original = datagram()
    parts = pieces(original)
    overlapping = IP(parts[1])
    overlapping.frag = 1000 // 8
    del overlapping.chksum
    r = Reassembly()
    r.add(parts[0], 0.0)
    assert r.add(bytes(overlapping), 0.0) is None and r.stats["overlap"] == 1
    assert r.add(parts[1], 0.0) is None and r.add(parts[2], 0.0) is None
    assert r.stats["reassembled"] == 0


def test_ping_of_death_and_odd_sizes_are_refused():
    """Rule R2: past 65535 bytes; a middle fragment that is not a multiple of 8 bytes."""
    r = Reassembly()
    death = IP(src=SRC, dst=DST, id=9, flags=0, frag=8189, proto=1) / bytes(100)
    assert r.add(bytes(death), 0.0) is None and r.stats["bad-fragment"] == 1
    odd = IP(src=SRC, dst=DST, id=10, flags="MF", frag=0, proto=17) / bytes(1001)
    assert r.add(bytes(odd), 0.0) is None and r.stats["bad-fragment"] == 2
    assert len(r) == 0 and r.held == 0


def test_a_fragment_beyond_the_last_one_is_refused():
    original = datagram()
    parts = pieces(original)
    r = Reassembly()
    r.add(parts[2], 0.0)  # the last: the datagram's length is now known
    beyond = IP(parts[1])
    beyond.frag = (len(bytes(original)) - 20) // 8 + 10
    del beyond.chksum
    assert r.add(bytes(beyond), 0.0) is None and r.stats["bad-fragment"] == 1


def test_the_header_is_the_first_fragments_with_options_and_df():
    """Rule R6: options survive, the fragment field is cleared, DF stays, checksum is valid."""
    original = IP(src=SRC, dst=DST, id=11, flags="DF", options=[IPOption_Router_Alert()]) / \
        ICMP(type=8, id=1, seq=1) / bytes(3000)
    raw = bytes(original)
    parts = pieces(IP(raw))
    r = Reassembly()
    whole = None
    for part in reversed(parts):
        whole = r.add(part, 0.0) or whole
    assert whole is not None
    ip = IP(whole)
    assert ip.ihl == 6 and ip.options[0].option == 20, "the router alert option kept"
    assert ip.flags == "DF" and ip.frag == 0 and ip.len == len(raw)
    recomputed = IP(whole)
    del recomputed.chksum
    assert IP(bytes(recomputed)).chksum == ip.chksum
    assert bytes(ip[ICMP]) == bytes(IP(raw)[ICMP])


def test_incomplete_datagrams_time_out_and_owe_icmp_only_with_their_first():
    """Rule R4: 30 s after the first fragment; ICMP 11/1 only when offset 0 arrived."""
    with_first, without_first = pieces(datagram(ident=1)), pieces(datagram(ident=2))
    r = Reassembly()
    r.add(with_first[0], 100.0)
    r.add(without_first[1], 105.0)
    assert r.next_deadline() == 130.0
    assert r.expire(129.9) == []
    assert r.expire(130.0) == [with_first[0]]
    assert r.next_deadline() == 135.0
    assert r.expire(200.0) == [] and len(r) == 0 and r.held == 0
    assert r.stats["timeout"] == 2


def test_a_flood_of_incomplete_datagrams_stays_bounded_and_stalls_nothing():
    """Rule R5: 20,000 datagrams that never complete hold at most max_bytes; a whole datagram
    sent after them still goes through."""
    r = Reassembly(max_bytes=256 * 1024)
    template = bytearray(bytes(IP(src=SRC, dst=DST, flags="MF", proto=17) / bytes(800)))
    for ident in range(20_000):
        template[4:6] = ident.to_bytes(2, "big")  # the checksum is the caller's to check
        r.add(bytes(template), 0.0)
        assert r.held <= 256 * 1024
    assert r.stats["evicted"] > 19_000
    assert len(r) * (820 + FRAGMENT_COST) <= 256 * 1024
    original = datagram(ident=60_000)
    whole = None
    for part in pieces(original):
        whole = r.add(part, 1.0) or whole
    assert whole == bytes(original)


def test_any_sizes_orders_and_duplicates_reassemble():
    """100 seeded cases: datagrams of 1 to 65,000 bytes cut by scapy into pieces of 8 to 1480
    bytes, delivered shuffled with some pieces twice, come back byte for byte."""
    rng = random.Random(11)
    r = Reassembly()
    for case in range(100):
        size = rng.randint(1, 65000)
        original = IP(src=SRC, dst=DST, id=case, proto=17) / rng.randbytes(size)
        parts = pieces(original, size=8 * rng.randint(1 if size < 4000 else 16, 185))
        parts += rng.sample(parts, k=rng.randint(0, min(3, len(parts) - 1)))
        rng.shuffle(parts)
        wholes = [w for w in (r.add(p, float(case)) for p in parts) if w is not None]
        assert wholes[:1] == [bytes(original)], case
    assert r.stats["reassembled"] == 100


def test_link_headers_before_the_ip_header_come_back_from_the_first_fragment():
    """``at``: the adapters pass whole frames; the whole datagram comes back behind the first
    fragment's link headers, and so does a timed-out first fragment."""
    original = datagram()
    parts = pieces(original)
    r = Reassembly()
    assert r.add(b"later-link|" + parts[2], 0.0, at=11) is None
    assert r.add(b"first-link|" + parts[0], 0.0, at=11) is None
    assert r.add(b"later-link|" + parts[1], 0.0, at=11) == b"first-link|" + bytes(original)
    r.add(b"first-link|" + pieces(datagram(ident=8))[0], 0.0, at=11)
    (owed,) = r.expire(60.0)
    assert owed.startswith(b"first-link|") and IP(owed[11:]).id == 8


def test_a_tiny_first_fragment_is_no_trick_once_reassembled():
    """RFC 1858's tiny fragments (8 bytes: the TCP flags come in the second) only fool a filter
    that looks at fragments; reassembled, the segment is whole."""
    segment = IP(src=SRC, dst=DST, id=3) / TCP(sport=5000, dport=22, flags="S") / b"hi"
    parts = pieces(segment, size=8)
    assert len(IP(parts[0]).payload) == 8
    r = Reassembly()
    wholes = [w for w in (r.add(p, 0.0) for p in parts) if w is not None]
    assert wholes == [bytes(segment)] and IP(wholes[0])[TCP].flags == "S"
