"""DNS hardening of the forwarder (dhcp/dns.py Rules 6, 7, 8, 11, 12, 13) with a hand-advanced
clock: bailiwick scrubbing, TTL limits, DNS 0x20, whole-RRset truncation and bounded tables."""

import struct
from collections import Counter
from dataclasses import replace

from scapy.layers.dns import DNS, DNSQR, DNSRR

from dhcp.dns import MAX_UDP_PAYLOAD, MEMO_SIZE, DnsResponder
from dhcp.dns_actions import Answer, Forward, Release
from dhcp.dnsmsg import (
    RCODE_NOERROR,
    RCODE_NXDOMAIN,
    TYPE_A,
    TYPE_CNAME,
    TYPE_NS,
    TYPE_SOA,
    DnsMessage,
    Question,
    ResourceRecord,
    a_record,
    decode_message,
    encode_message,
    lower_name,
    name_from_text,
    opt_record,
)

N = name_from_text
UP = ("10.0.0.1", 53)
GUEST = ("192.168.122.50", 40000)
PORT = 33333


def responder(**kwargs) -> DnsResponder:
    kwargs.setdefault("case_rng", lambda bits: 0)
    return DnsResponder("vsw", {}, [UP], **kwargs)


def query(name: str, qtype: int = TYPE_A, ident: int = 77, edns: int | None = None) -> bytes:
    additional = () if edns is None else (opt_record(edns),)
    return encode_message(DnsMessage(id=ident, questions=(Question(N(name), qtype),),
                                     additional=additional))


def forwarded(r: DnsResponder, data: bytes, now: float = 0.0, transport: str = "udp") -> Forward:
    actions = r.handle_query(data, GUEST, transport, now)
    assert len(actions) == 1 and isinstance(actions[0], Forward), actions
    r.sent_from(actions[0].key, PORT)
    return actions[0]


def reply_to(fwd: Forward, answers=(), authority=(), additional=(), rcode=RCODE_NOERROR) -> bytes:
    q = decode_message(fwd.payload)
    return encode_message(DnsMessage(id=q.id, qr=True, ra=True, rcode=rcode,
                                     questions=q.questions, answers=tuple(answers),
                                     authority=tuple(authority), additional=tuple(additional)))


def answered(actions: list) -> DnsMessage:
    assert isinstance(actions[0], Release) and len(actions) == 2, actions
    assert isinstance(actions[1], Answer)
    return decode_message(actions[1].payload)


def wire_name(text: str) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in N(text)) + b"\0"


def ns(zone: str, target: str, ttl: int = 300) -> ResourceRecord:
    return ResourceRecord(N(zone), TYPE_NS, 1, ttl, wire_name(target))


def cname(owner: str, target: str, ttl: int = 300) -> ResourceRecord:
    return ResourceRecord(N(owner), TYPE_CNAME, 1, ttl, wire_name(target))


def soa(zone: str, ttl: int, minimum: int) -> ResourceRecord:
    rdata = wire_name("ns." + zone) + wire_name("admin." + zone)
    return ResourceRecord(N(zone), TYPE_SOA, 1, ttl, rdata + struct.pack("!IIIII", 1, 2, 3, 4,
                                                                        minimum))


def names(records) -> list[str]:
    return [b".".join(lower_name(r.name)).decode() for r in records]


# --- 1. bailiwick (Rule 12) -----------------------------------------------------------------------


def test_out_of_bailiwick_additional_records_are_neither_passed_on_nor_cached():
    r = responder()
    fwd = forwarded(r, query("www.example.test"))
    good = a_record(N("www.example.test"), "203.0.113.7", 300)
    glue = a_record(N("ns1.example.test"), "203.0.113.53", 300)
    poison = a_record(N("www.bank.test"), "6.6.6.6", 86400)
    msg = answered(r.handle_reply(reply_to(fwd, [good], authority=[ns("example.test",
                                  "ns1.example.test"), ns("bank.test", "ns.evil.test")],
                                  additional=[glue, poison]), UP, PORT, 0.1))
    assert msg.answers == (good,)
    assert names(msg.authority) == ["example.test"], "NS for another zone is dropped"
    assert msg.additional == (glue,), "glue inside the zone stays, the poison goes"
    assert r.stats.scrubbed == 2
    cached = decode_message(r.handle_query(query("www.example.test", ident=5), GUEST, "udp",
                                           1.0)[0].payload)
    assert cached.additional == (glue,) and r.stats.cache_hits == 1
    fwd2 = forwarded(r, query("www.bank.test"), now=2.0)  # not answered from any cache
    assert decode_message(fwd2.payload).questions[0].name == N("www.bank.test")


def test_scapy_built_poisoning_reply_keeps_only_the_question_and_its_cname_chain():
    r = responder()
    fwd = forwarded(r, query("www.example.test"))
    evil = DNS(
        id=fwd.query_id, qr=1, ra=1, qd=DNSQR(qname="www.example.test", qtype="A"),
        an=[DNSRR(rrname="www.example.test", type="CNAME", ttl=60, rdata="edge.cdn.test"),
            DNSRR(rrname="edge.cdn.test", type="A", ttl=60, rdata="203.0.113.9"),
            DNSRR(rrname="login.bank.test", type="A", ttl=86400, rdata="6.6.6.6")],
        ar=[DNSRR(rrname="mail.bank.test", type="A", ttl=86400, rdata="6.6.6.7")],
    )
    msg = answered(r.handle_reply(bytes(evil), UP, PORT, 0.1))
    assert names(msg.answers) == ["www.example.test", "edge.cdn.test"]
    assert msg.additional == () and r.stats.scrubbed == 2


def test_negative_answers_keep_the_zones_soa_only():
    r = responder()
    fwd = forwarded(r, query("nope.example.test"))
    msg = answered(r.handle_reply(reply_to(fwd, rcode=RCODE_NXDOMAIN,
                                           authority=[soa("example.test", 60, 60),
                                                      soa("bank.test", 60, 60)]),
                                  UP, PORT, 0.1))
    assert msg.rcode == RCODE_NXDOMAIN and names(msg.authority) == ["example.test"]
    assert answered_from_cache(r, "nope.example.test", 30.0).rcode == RCODE_NXDOMAIN


def answered_from_cache(r: DnsResponder, name: str, now: float) -> DnsMessage:
    hits = r.stats.cache_hits + r.stats.memo_hits
    actions = r.handle_query(query(name, ident=9), GUEST, "udp", now)
    assert len(actions) == 1 and isinstance(actions[0], Answer)
    assert r.stats.cache_hits + r.stats.memo_hits == hits + 1, "answered without going upstream"
    return decode_message(actions[0].payload)


# --- 2. TTL limits (Rule 13) ----------------------------------------------------------------------


def test_huge_ttls_are_capped_in_the_answer_and_the_cache():
    r = responder()
    fwd = forwarded(r, query("www.example.test"))
    week = a_record(N("www.example.test"), "203.0.113.7", 7 * 86400)
    msg = answered(r.handle_reply(reply_to(fwd, [week]), UP, PORT, 0.0))
    assert msg.answers[0].ttl == 86400
    assert answered_from_cache(r, "www.example.test", 86399.0).answers[0].ttl == 1
    forwarded(r, query("www.example.test"), now=86400.0)


def test_top_bit_ttls_are_zero_and_not_cached_and_a_floor_can_be_set():
    r = responder()
    fwd = forwarded(r, query("a.example.test"))
    msg = answered(r.handle_reply(reply_to(fwd, [a_record(N("a.example.test"), "192.0.2.1",
                                                          0x80000001)]), UP, PORT, 0.0))
    assert msg.answers[0].ttl == 0 and r.cache_size_now() == 0
    floored = responder(min_ttl=5)
    fwd = forwarded(floored, query("a.example.test"))
    msg = answered(floored.handle_reply(reply_to(fwd, [a_record(N("a.example.test"),
                                                                "192.0.2.1", 1)]), UP, PORT, 0.0))
    assert msg.answers[0].ttl == 5
    assert answered_from_cache(floored, "a.example.test", 4.0).answers[0].ttl == 1


def test_negative_ttl_is_the_soa_minimum_capped():
    r = responder(max_negative_ttl=900)
    fwd = forwarded(r, query("nope.example.test"))
    msg = answered(r.handle_reply(reply_to(fwd, rcode=RCODE_NXDOMAIN,
                                           authority=[soa("example.test", 86400, 3600)]),
                                  UP, PORT, 0.0))
    assert msg.authority[0].ttl == 900, "min(TTL, MINIMUM) = 3600, capped at 900"
    assert answered_from_cache(r, "nope.example.test", 899.0).authority[0].ttl == 1
    forwarded(r, query("nope.example.test"), now=900.0)
    r2 = responder()
    fwd = forwarded(r2, query("nope.example.test"))
    msg = answered(r2.handle_reply(reply_to(fwd, rcode=RCODE_NXDOMAIN,
                                            authority=[soa("example.test", 86400, 30)]),
                                   UP, PORT, 0.0))
    assert msg.authority[0].ttl == 30, "RFC 2308 3: the SOA's MINIMUM when smaller"


# --- 3. DNS 0x20 (Rule 11) ------------------------------------------------------------------------


def test_0x20_case_is_randomised_checked_and_the_guest_gets_its_own_case():
    r = responder(case_rng=lambda bits: (1 << bits) - 1)  # flip every letter
    fwd = forwarded(r, query("Www.Example.test", ident=4))
    sent = decode_message(fwd.payload).questions[0].name
    assert sent == N("wWW.eXAMPLE.TEST")
    assert fwd.payload[2:] == query("wWW.eXAMPLE.TEST")[2:], "nothing else changed"
    lower = replace(decode_message(reply_to(fwd, [a_record(N("www.example.test"), "6.6.6.6", 60)])),
                    questions=(Question(N("www.example.test"), TYPE_A),))
    assert r.handle_reply(encode_message(lower), UP, PORT, 0.1) == []
    assert r.stats.case_mismatch == 1 and r.stats.spoofed == 1 and r.pending_count() == 1
    genuine = reply_to(fwd, [a_record(sent, "203.0.113.7", 60)])  # owner echoed in 0x20 case
    msg = answered(r.handle_reply(genuine, UP, PORT, 0.2))
    assert msg.id == 4 and msg.questions[0].name == N("Www.Example.test")
    assert msg.answers[0].name == N("Www.Example.test"), "the owner is given back its case"
    assert msg.answers[0].rdata == bytes([203, 0, 113, 7])


def test_0x20_draws_a_fresh_spelling_per_attempt_by_default():
    r = DnsResponder("vsw", {}, [UP, ("10.0.0.2", 53)])
    spellings = set()
    for i in range(20):
        fwd = forwarded(r, query(f"abcdefghijklmnop{i}.example.test"))
        name = decode_message(fwd.payload).questions[0].name
        assert lower_name(name) == N(f"abcdefghijklmnop{i}.example.test")
        spellings.add(name[0][:16])
    assert len(spellings) > 10, "secrets.randbits gives every attempt its own case"
    fwd = forwarded(r, query("abcdefghijklmnopqrstuvwxyz.example.test"), now=1.0)
    first = lower_name(decode_message(fwd.payload).questions[0].name)
    retries = [a for a in r.expire(1.0 + r.timeout) if isinstance(a, Forward)
               and lower_name(decode_message(a.payload).questions[0].name) == first]
    assert len(retries) == 1
    retry = retries[0]
    assert decode_message(retry.payload).questions[0].name != \
        decode_message(fwd.payload).questions[0].name


# --- 4. truncation (Rule 8) -----------------------------------------------------------------------


def big_reply(fwd: Forward) -> bytes:
    chain = cname("many.example.test", "pool.example.test")
    small = [a_record(N("pool.example.test"), f"192.0.2.{i}", 60) for i in range(1, 9)]
    large = [ResourceRecord(N("pool.example.test"), 16, 1, 60, b"\x7f" + b"t" * 127)
             for _ in range(12)]
    return reply_to(fwd, [chain, *small, *large], authority=[ns("example.test", "ns.example.test")])


def rrset_sizes(records) -> Counter:
    return Counter((lower_name(r.name), r.rtype) for r in records)


def test_big_answers_are_truncated_to_whole_rrsets_and_come_whole_over_tcp():
    r = responder()
    fwd = forwarded(r, query("many.example.test", ident=1))
    r.handle_query(query("many.example.test", ident=2, edns=1400), ("192.168.122.51", 1), "udp",
                   0.0)
    actions = r.handle_reply(big_reply(fwd), UP, PORT, 0.1)
    whole = rrset_sizes(decode_message(big_reply(fwd)).answers)
    plain, edns = (decode_message(a.payload) for a in actions[1:])
    assert len(actions[1].payload) <= 512 and len(actions[2].payload) <= MAX_UDP_PAYLOAD
    for msg in (plain, edns):
        assert msg.tc and msg.answers, "the CNAME and the A RRset fit, the TXT RRset does not"
        assert all(whole[key] == n for key, n in rrset_sizes(msg.answers).items()), \
            "no partial RRset (RFC 2181 9)"
    tcp = decode_message(r.handle_query(query("many.example.test"), GUEST, "tcp", 1.0)[0].payload)
    assert not tcp.tc and rrset_sizes(tcp.answers) == whole


# --- 5. bounded tables (Rule 6, 7, 10) ------------------------------------------------------------


def test_a_flood_of_distinct_names_cannot_grow_any_table():
    r = responder(cache_size=100, max_pending=50, timeout=2.0)
    now = 0.0
    # Unanswered names: the in-flight table stays at max_pending, the rest get SERVFAIL.
    for i in range(3000):
        now += 0.01
        r.handle_query(query(f"u{i}.flood.test", ident=i), GUEST, "udp", now)
        r.expire(now)
        assert r.pending_count() <= 50
    assert r.stats.pending_full > 0 and r.pending_count() == 50
    now += 10.0
    r.expire(now)
    r.expire(now + 10.0)
    now += 10.0
    assert r.pending_count() == 0 and r.next_deadline() is None
    # Answered names: the cache keeps the 100 most recently used, the memo stays bounded.
    for i in range(3000):
        now += 0.01
        name = f"n{i}.flood.test"
        fwd = forwarded(r, query(name, ident=i), now=now)
        r.handle_reply(reply_to(fwd, [a_record(N(name), "192.0.2.1", 86400)]), UP, PORT, now)
        r.handle_query(query(name, ident=1), GUEST, "udp", now)  # a cache hit, memoised
        assert r.cache_size_now() <= 100 and len(r._memo) <= MEMO_SIZE
    assert r.cache_size_now() == 100 and r.pending_count() == 0
    assert answered_from_cache(r, "n2999.flood.test", now).answers
    assert answered_from_cache(r, "n2900.flood.test", now).answers
    forwarded(r, query("n2899.flood.test"), now=now)  # evicted, least recently used
