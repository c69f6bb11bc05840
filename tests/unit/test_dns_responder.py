"""The DNS responder core with a hand-advanced clock: local names, forwarding, anti-spoofing,
cache, timeouts, truncation and bad input.  Every action is checked down to IDs and bytes."""

import random
import struct
from dataclasses import replace

import pytest

from dhcp.dns import MAX_UDP_PAYLOAD, DnsResponder
from dhcp.dns_actions import Answer, Forward, Release
from dhcp.dnsmsg import (
    RCODE_FORMERR,
    RCODE_NOERROR,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_MX,
    TYPE_PTR,
    TYPE_SOA,
    DnsMessage,
    Question,
    ResourceRecord,
    a_record,
    decode_message,
    encode_message,
    name_from_text,
    opt_record,
    reverse_name,
)

N = name_from_text
UP1, UP2 = ("10.0.0.1", 53), ("10.0.0.2", 53)
GUEST, GUEST2 = ("192.168.122.50", 40000), ("192.168.122.51", 40001)
HOSTS = {"web": "192.168.122.10", "db": "192.168.122.11"}


class Ids:
    """A predictable ``rng`` for upstream query IDs: 1000, 1001, ..."""

    def __init__(self, start: int = 1000) -> None:
        self.next = start

    def __call__(self, bound: int) -> int:
        assert bound == 0x10000
        self.next += 1
        return self.next - 1


def responder(**kwargs) -> DnsResponder:
    kwargs.setdefault("rng", Ids())
    kwargs.setdefault("case_rng", lambda bits: 0)  # 0x20 flips no letter (test_dns_hardening.py)
    return DnsResponder("vsw", kwargs.pop("hosts", HOSTS), kwargs.pop("upstreams", [UP1, UP2]),
                        subnet="192.168.122.0/24", **kwargs)


def query(name: str | tuple, qtype: int = TYPE_A, ident: int = 77, edns: int | None = None,
          **flags) -> bytes:
    qname = N(name) if isinstance(name, str) else name
    additional = () if edns is None else (opt_record(edns),)
    return encode_message(DnsMessage(id=ident, questions=(Question(qname, qtype),),
                                     additional=additional, **flags))


def answer_of(actions: list) -> DnsMessage:
    assert len(actions) == 1 and isinstance(actions[0], Answer), actions
    return decode_message(actions[0].payload)


def reply_to(forward: Forward, *records: ResourceRecord, rcode: int = RCODE_NOERROR,
             authority: tuple = (), **changes) -> bytes:
    """What an upstream resolver would send back for ``forward``."""
    q = decode_message(forward.payload)
    msg = DnsMessage(id=q.id, qr=True, ra=True, rcode=rcode, questions=q.questions,
                     answers=records, authority=authority)
    return encode_message(replace(msg, **changes))


def forwarded(r: DnsResponder, data: bytes, now: float = 0.0, port: int = 33333,
              client=GUEST, transport="udp") -> Forward:
    actions = r.handle_query(data, client, transport, now)
    assert len(actions) == 1 and isinstance(actions[0], Forward), actions
    r.sent_from(actions[0].key, port)
    return actions[0]


# --- local names ----------------------------------------------------------------------------------


def test_local_name_in_the_domain_is_answered_authoritatively_with_ttl_0():
    r = responder()
    msg = answer_of(r.handle_query(query("web.vsw"), GUEST, "udp", 0.0))
    assert (msg.id, msg.qr, msg.aa, msg.rcode) == (77, True, True, RCODE_NOERROR)
    assert msg.answers == (a_record(N("web.vsw"), "192.168.122.10", 0),)
    assert r.stats.local == 1 and r.stats.forwarded == 0


def test_bare_names_and_case_insensitivity_keep_the_askers_spelling():
    r = responder()
    msg = answer_of(r.handle_query(query("WEB"), GUEST, "udp", 0.0))
    assert msg.answers == (a_record(N("WEB"), "192.168.122.10", 0),)
    msg = answer_of(r.handle_query(query("dB.VsW"), GUEST, "udp", 0.0))
    assert msg.questions[0].name == (b"dB", b"VsW"), "the question is echoed as asked (0x20)"
    assert msg.answers == (a_record(N("dB.VsW"), "192.168.122.11", 0),)


def test_unknown_local_names_are_nxdomain_and_never_forwarded():
    r = responder()
    for name in ("nosuch.vsw", "a.b.vsw", "nosuch"):
        msg = answer_of(r.handle_query(query(name), GUEST, "udp", 0.0))
        assert (msg.rcode, msg.aa, msg.answers) == (RCODE_NXDOMAIN, True, ()), name
    assert r.stats.forwarded == 0


def test_other_types_of_known_names_are_nodata():
    r = responder()
    for qtype in (TYPE_AAAA, TYPE_MX):
        msg = answer_of(r.handle_query(query("web.vsw", qtype), GUEST, "udp", 0.0))
        assert (msg.rcode, msg.aa, msg.answers) == (RCODE_NOERROR, True, ())
    msg = answer_of(r.handle_query(query("vsw", TYPE_A), GUEST, "udp", 0.0))
    assert (msg.rcode, msg.answers) == (RCODE_NOERROR, ()), "the domain itself exists"


def test_bare_tld_questions_other_than_addresses_go_upstream():
    r = responder()
    fwd = forwarded(r, query("com", TYPE_SOA))
    assert fwd.upstream == UP1


def test_ptr_for_local_addresses_and_nxdomain_inside_the_subnet():
    r = responder()
    msg = answer_of(r.handle_query(query(reverse_name("192.168.122.10"), TYPE_PTR), GUEST,
                                   "udp", 0.0))
    assert msg.aa and msg.answers[0].rtype == TYPE_PTR
    assert msg.answers[0].rdata == b"\x03web\x03vsw\x00"
    msg = answer_of(r.handle_query(query(reverse_name("192.168.122.99"), TYPE_PTR), GUEST,
                                   "udp", 0.0))
    assert msg.rcode == RCODE_NXDOMAIN
    forwarded(r, query(reverse_name("8.8.8.8"), TYPE_PTR))  # not ours: upstream knows


def test_hosts_given_as_a_callable_follow_new_leases():
    leases: dict[str, str] = {}
    r = responder(hosts=lambda: leases)
    assert answer_of(r.handle_query(query("guest1.vsw"), GUEST, "udp", 0.0)).rcode == 3
    leases["guest1"] = "192.168.122.77"
    msg = answer_of(r.handle_query(query("guest1.vsw"), GUEST, "udp", 1.0))
    assert msg.answers == (a_record(N("guest1.vsw"), "192.168.122.77", 0),)


def test_local_answers_echo_edns_with_our_payload_size():
    msg = answer_of(responder().handle_query(query("web.vsw", edns=4096), GUEST, "udp", 0.0))
    assert msg.opt == opt_record(MAX_UDP_PAYLOAD)


# --- forwarding and the cache ---------------------------------------------------------------------


def test_forward_uses_a_random_id_and_the_reply_goes_back_with_the_clients_id():
    r = responder()
    fwd = forwarded(r, query("Example.com", ident=77))
    assert (fwd.upstream, fwd.query_id, fwd.transport) == (UP1, 1000, "udp")
    assert fwd.payload == struct.pack("!H", 1000) + query("Example.com")[2:]
    actions = r.handle_reply(reply_to(fwd, a_record(N("example.com"), "93.184.216.34", 300)),
                             UP1, 33333, 0.1)
    assert actions[0] == Release(fwd.key)
    msg = answer_of(actions[1:])
    assert actions[1].client == GUEST and msg.id == 77 and not msg.aa and msg.ra
    assert msg.questions[0].name == (b"Example", b"com")
    assert msg.answers == (a_record(N("example.com"), "93.184.216.34", 300),)
    assert r.pending_count() == 0 and r.next_deadline() is None


def test_second_query_is_answered_from_cache_with_ttl_decremented_until_expiry():
    r = responder()
    fwd = forwarded(r, query("example.com"))
    r.handle_reply(reply_to(fwd, a_record(N("example.com"), "93.184.216.34", 300)), UP1, 33333, 0.0)
    msg = answer_of(r.handle_query(query("EXAMPLE.com", ident=5), GUEST2, "udp", 100.4))
    assert msg.id == 5 and msg.answers[0].ttl == 200, "300 s minus 100 s of age"
    assert r.stats.cache_hits == 1 and r.stats.forwarded == 1
    assert answer_of(r.handle_query(query("example.com"), GUEST, "udp", 299.9)).answers[0].ttl == 1
    forwarded(r, query("example.com"), now=300.0)  # expired: asked again


def test_negative_answers_are_cached_for_the_soa_minimum():
    r = responder()
    fwd = forwarded(r, query("nope.example"))
    soa_rdata = b"\x02ns\x00\x05admin\x00" + struct.pack("!IIIII", 1, 2, 3, 4, 60)
    soa = ResourceRecord(N("example"), TYPE_SOA, 1, 3600, soa_rdata)
    r.handle_reply(reply_to(fwd, rcode=RCODE_NXDOMAIN, authority=(soa,)), UP1, 33333, 0.0)
    msg = answer_of(r.handle_query(query("nope.example"), GUEST, "udp", 59.0))
    assert msg.rcode == RCODE_NXDOMAIN and msg.authority[0].ttl == 60 - 59, "RFC 2308 3"
    forwarded(r, query("nope.example"), now=60.0)


def test_answers_without_soa_servfail_and_ttl_0_are_not_cached():
    r = responder()
    for rcode, records in ((RCODE_NXDOMAIN, ()), (RCODE_SERVFAIL, ()),
                           (RCODE_NOERROR, (a_record(N("z.example"), "192.0.2.1", 0),))):
        fwd = forwarded(r, query("z.example"))
        actions = r.handle_reply(reply_to(fwd, *records, rcode=rcode), UP1, 33333, 0.0)
        assert answer_of(actions[1:]).rcode == rcode
    assert r.cache_size_now() == 0


def test_cache_is_bounded_least_recently_used_first():
    r = responder(cache_size=2)
    for name in ("a.example", "b.example"):
        fwd = forwarded(r, query(name))
        r.handle_reply(reply_to(fwd, a_record(N(name), "192.0.2.1", 60)), UP1, 33333, 0.0)
    answer_of(r.handle_query(query("a.example"), GUEST, "udp", 1.0))  # a is now the freshest
    fwd = forwarded(r, query("c.example"), now=1.0)
    r.handle_reply(reply_to(fwd, a_record(N("c.example"), "192.0.2.1", 60)), UP1, 33333, 1.0)
    assert r.cache_size_now() == 2
    answer_of(r.handle_query(query("a.example"), GUEST, "udp", 2.0))
    forwarded(r, query("b.example"), now=2.0)  # b was evicted


def test_identical_questions_are_merged_and_each_client_gets_its_own_id_and_case():
    r = responder()
    fwd = forwarded(r, query("example.com", ident=1))
    assert r.handle_query(query("EXAMPLE.COM", ident=2), GUEST2, "udp", 0.1) == []
    assert r.handle_query(query("example.com", ident=1), GUEST, "udp", 0.2) == [], "a re-send"
    actions = r.handle_reply(reply_to(fwd, a_record(N("example.com"), "192.0.2.1", 60)),
                             UP1, 33333, 0.3)
    assert [type(a) for a in actions] == [Release, Answer, Answer]
    first, second = (decode_message(a.payload) for a in actions[1:])
    assert (actions[1].client, first.id, first.questions[0].name) == (GUEST, 1, N("example.com"))
    assert (actions[2].client, second.id, second.questions[0].name) == (GUEST2, 2, N("EXAMPLE.COM"))
    assert r.stats.forwarded == 1 and r.stats.merged == 1


def test_no_upstreams_is_refused():
    r = responder(upstreams=[])
    assert answer_of(r.handle_query(query("example.com"), GUEST, "udp", 0.0)).rcode == RCODE_REFUSED


# --- anti-spoofing (DNSpooq) ----------------------------------------------------------------------


def test_spoofed_replies_are_ignored_and_the_genuine_one_still_accepted():
    r = responder()
    fwd = forwarded(r, query("bank.example"), port=40123)
    evil = a_record(N("bank.example"), "6.6.6.6", 86400)
    good = a_record(N("bank.example"), "192.0.2.80", 60)
    wrong_id = reply_to(fwd, evil, id=(fwd.query_id + 1) & 0xFFFF)
    wrong_question = encode_message(replace(decode_message(reply_to(fwd, evil)),
                                            questions=(Question(N("other.example"), TYPE_A),)))
    not_a_response = reply_to(fwd, evil, qr=False)
    attempts = [
        (wrong_id, UP1, 40123),
        (reply_to(fwd, evil), ("10.0.0.1", 5353), 40123),  # wrong server port
        (reply_to(fwd, evil), ("10.6.6.6", 53), 40123),  # wrong server address
        (reply_to(fwd, evil), UP1, 40124),  # arrived on another local port
        (wrong_question, UP1, 40123),
        (reply_to(fwd, evil, questions=(Question(N("bank.example"), TYPE_AAAA),)), UP1, 40123),
        (not_a_response, UP1, 40123),
    ]
    for data, server, port in attempts:
        assert r.handle_reply(data, server, port, 0.1) == []
    assert r.stats.spoofed == len(attempts) and r.pending_count() == 1
    actions = r.handle_reply(reply_to(fwd, good), UP1, 40123, 0.2)
    assert answer_of(actions[1:]).answers == (good,)
    assert answer_of(r.handle_query(query("bank.example"), GUEST, "udp", 1.0)).answers[0].rdata \
        == bytes([192, 0, 2, 80]), "the cache holds the genuine answer"


def test_reply_case_may_differ_from_the_query_without_0x20():
    r = responder(case_rng=None)
    fwd = forwarded(r, query("example.com"))
    upper = replace(decode_message(reply_to(fwd)), questions=(Question(N("EXAMPLE.COM"), TYPE_A),))
    assert r.handle_reply(encode_message(upper), UP1, 33333, 0.1)[0] == Release(fwd.key)


def test_a_reply_before_sent_from_is_rejected():
    r = responder()
    fwd = r.handle_query(query("example.com"), GUEST, "udp", 0.0)[0]
    assert isinstance(fwd, Forward)
    assert r.handle_reply(reply_to(fwd), UP1, 33333, 0.0) == [] and r.stats.spoofed == 1


def test_malformed_reply_with_the_right_id_is_counted_and_the_query_still_waits():
    r = responder()
    fwd = forwarded(r, query("example.com"))
    assert r.handle_reply(reply_to(fwd)[:-1], UP1, 33333, 0.1) == []
    assert r.handle_reply(b"\x00", UP1, 33333, 0.1) == []
    assert r.stats.malformed == 2 and r.pending_count() == 1
    assert r.handle_reply(reply_to(fwd), UP1, 33333, 0.2)[0] == Release(fwd.key)


# --- timeouts and bounds --------------------------------------------------------------------------


def test_timeout_retries_the_next_upstream_once_then_servfail():
    r = responder(timeout=5.0)
    fwd = forwarded(r, query("slow.example"), now=10.0)
    assert r.next_deadline() == 15.0
    assert r.expire(14.9) == []
    actions = r.expire(15.0)
    assert actions[0] == Release(fwd.key)
    retry = actions[1]
    assert isinstance(retry, Forward) and retry.upstream == UP2 and retry.query_id == 1001
    assert retry.payload[2:] == fwd.payload[2:] and retry.key != fwd.key
    r.sent_from(retry.key, 33334)
    assert r.handle_reply(reply_to(fwd), UP1, 33333, 15.5) == [], "the first attempt is over"
    assert r.next_deadline() == 20.0
    actions = r.expire(20.0)
    assert actions[0] == Release(retry.key)
    assert answer_of(actions[1:]).rcode == RCODE_SERVFAIL
    assert r.stats.servfail == 1 and r.stats.timeouts == 2 and r.next_deadline() is None


def test_the_upstream_that_answered_last_is_asked_first():
    r = responder()
    fwd = forwarded(r, query("a.example"))
    retry = r.expire(5.0)[1]
    r.sent_from(retry.key, 1)
    r.handle_reply(reply_to(retry), UP2, 1, 5.1)
    assert forwarded(r, query("b.example"), now=6.0).upstream == UP2
    assert fwd.upstream == UP1


def test_pending_queries_are_bounded():
    r = responder(max_pending=2)
    forwarded(r, query("a.example"))
    forwarded(r, query("b.example"))
    assert answer_of(r.handle_query(query("c.example"), GUEST, "udp", 0.0)).rcode == RCODE_SERVFAIL
    assert r.stats.pending_full == 1 and r.pending_count() == 2


def test_ids_in_use_are_not_reused():
    r = responder(rng=lambda bound: 7)
    assert forwarded(r, query("a.example")).query_id == 7
    msg = answer_of(r.handle_query(query("b.example"), GUEST, "udp", 0.0))
    assert msg.rcode == RCODE_SERVFAIL, "no free ID after a few draws: fail, never collide"


# --- sizes ----------------------------------------------------------------------------------------


def big_reply(fwd: Forward) -> bytes:
    records = [a_record(N("many.example"), f"10.0.{i // 250}.{i % 250}", 60) for i in range(100)]
    return reply_to(fwd, *records)


def test_udp_answers_are_truncated_to_512_or_the_clients_edns_size():
    r = responder()
    fwd = forwarded(r, query("many.example", ident=1))
    r.handle_query(query("many.example", ident=2, edns=4096), GUEST2, "udp", 0.0)
    actions = r.handle_reply(big_reply(fwd), UP1, 33333, 0.1)
    plain, edns = actions[1].payload, actions[2].payload
    assert len(plain) <= 512 and decode_message(plain).tc
    assert len(edns) <= MAX_UDP_PAYLOAD and decode_message(edns).tc
    assert decode_message(edns).answers == (), "one RRset, too big: none of it (RFC 2181 9)"
    assert r.cache_size_now() == 1, "the whole answer is cached; only the copy sent was cut"


def test_tcp_queries_are_forwarded_over_tcp_and_answered_whole():
    r = responder()
    fwd = forwarded(r, query("many.example"), transport="tcp")
    assert fwd.transport == "tcp"
    msg = answer_of(r.handle_reply(big_reply(fwd), UP1, 33333, 0.1)[1:])
    assert not msg.tc and len(msg.answers) == 100
    cached = r.handle_query(query("many.example"), GUEST, "udp", 1.0)
    assert decode_message(cached[0].payload).tc, "the same cached answer is cut for UDP"


def test_truncated_upstream_replies_are_passed_on_but_not_cached():
    r = responder()
    fwd = forwarded(r, query("big.example"))
    msg = answer_of(r.handle_reply(reply_to(fwd, tc=True), UP1, 33333, 0.1)[1:])
    assert msg.tc and r.cache_size_now() == 0


# --- bad queries (docs/testing.md) ----------------------------------------------------------------


def test_short_queries_and_responses_are_dropped():
    r = responder()
    for data in (b"", b"\x00" * 11, query("web.vsw", qr=True)):
        assert r.handle_query(data, GUEST, "udp", 0.0) == []
    assert r.stats.malformed == 3


def raw(qdcount: int, body: bytes) -> bytes:
    return struct.pack("!HHHHHH", 0x5151, 0x0100, qdcount, 0, 0, 0) + body


QTAIL = b"\0\1\0\1"
BAD = {
    "counts larger than the data": raw(3, b"\0" + QTAIL),
    "trailing junk": query("web.vsw", ident=0x5151) + b"junk",
    "pointer to itself": raw(1, b"\xc0\x0c" + QTAIL),
    "forward pointer": raw(1, b"\xc0\x12" + QTAIL + b"\0"),
    "label of 64": raw(1, b"\x40" + b"a" * 64 + b"\0" + QTAIL),
    "name of 257": raw(1, (b"\x3f" + b"a" * 63) * 4 + b"\0" + QTAIL),
    "no question": raw(0, b""),
    "two questions": raw(2, (b"\0" + QTAIL) * 2),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_queries_get_formerr_with_their_id(name: str):
    r = responder()
    actions = r.handle_query(BAD[name], GUEST, "udp", 0.0)
    assert len(actions) == 1 and actions[0].payload == struct.pack(
        "!HHHHHH", 0x5151, 0x8100 | RCODE_FORMERR, 0, 0, 0, 0)
    assert r.stats.malformed == 1


def test_other_opcodes_are_notimp_and_other_edns_versions_badvers():
    r = responder()
    msg = answer_of(r.handle_query(query("web.vsw", opcode=4), GUEST, "udp", 0.0))
    assert msg.rcode == RCODE_NOTIMP and msg.opcode == 4
    v1 = replace(opt_record(1232), ttl=1 << 16)
    data = encode_message(DnsMessage(id=9, questions=(Question(N("web.vsw"), TYPE_A),),
                                     additional=(v1,)))
    msg = answer_of(r.handle_query(data, GUEST, "udp", 0.0))
    assert msg.rcode == 0 and msg.opt is not None and msg.opt.ttl >> 24 == 1, "BADVERS is 16"


def test_bad_transport_is_the_only_exception():
    with pytest.raises(ValueError):
        responder().handle_query(query("web.vsw"), GUEST, "sctp", 0.0)  # type: ignore[arg-type]


def test_random_input_never_raises_and_state_stays_intact():
    r = responder()
    rng = random.Random(2020_25684)
    fwd = forwarded(r, query("keep.example"), port=5000)
    good = query("web.vsw")
    for _ in range(5000):
        junk = bytearray(good)
        for _ in range(rng.randrange(1, 5)):
            junk[rng.randrange(len(junk))] = rng.getrandbits(8)
        r.handle_query(bytes(junk[: rng.randrange(len(junk) + 1)]), GUEST, "udp", 1.0)
        noise = bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
        r.handle_query(noise, GUEST, "tcp", 1.0)
        r.handle_reply(noise, UP1, 5000, 1.0)
        r.handle_reply(bytes(junk), UP1, 5000, 1.0)
    # Mutations that still decode are real queries and may be forwarded; the first one survives.
    assert r.stats.malformed > 1000 and r.pending_count() <= r.max_pending
    assert r.handle_reply(reply_to(fwd), UP1, 5000, 2.0)[0] == Release(fwd.key)


def test_repeat_queries_are_answered_from_the_memo_with_their_own_id():
    r = responder()
    first = answer_of(r.handle_query(query("web.vsw", ident=1), GUEST, "udp", 0.0))
    again = answer_of(r.handle_query(query("web.vsw", ident=2), GUEST2, "udp", 0.5))
    assert again.id == 2 and again.answers == first.answers and r.stats.memo_hits == 1
    spelled = answer_of(r.handle_query(query("WEB.vsw", ident=3), GUEST, "udp", 0.6))
    assert spelled.questions[0].name == N("WEB.vsw"), "another spelling is another memo entry"
    assert r.stats.memo_hits == 1


def test_memo_is_forgotten_when_hosts_change_and_after_its_lifetime():
    leases = {"guest1": "192.168.122.77"}
    r = responder(hosts=lambda: leases)
    r.handle_query(query("guest1.vsw"), GUEST, "udp", 0.0)
    leases["guest1"] = "192.168.122.78"
    r.hosts_changed()
    msg = answer_of(r.handle_query(query("guest1.vsw"), GUEST, "udp", 0.1))
    assert msg.answers == (a_record(N("guest1.vsw"), "192.168.122.78", 0),)
    leases["guest1"] = "192.168.122.79"  # changed without telling: stale for at most a second
    stale = answer_of(r.handle_query(query("guest1.vsw"), GUEST, "udp", 0.5))
    assert stale.answers[0].rdata == bytes([192, 168, 122, 78])
    fresh = answer_of(r.handle_query(query("guest1.vsw"), GUEST, "udp", 1.2))
    assert fresh.answers[0].rdata == bytes([192, 168, 122, 79])


def test_memo_never_outlives_the_cached_answer():
    r = responder()
    fwd = forwarded(r, query("example.com"))
    r.handle_reply(reply_to(fwd, a_record(N("example.com"), "93.184.216.34", 10)), UP1, 33333, 0.0)
    r.handle_query(query("example.com"), GUEST, "udp", 9.5)  # cached, memo until 10.0 at most
    forwarded(r, query("example.com"), now=10.0)


# --- IPv6 names (RFC 3596) ------------------------------------------------------------------------


def test_aaaa_and_ip6_arpa_for_guests_with_ipv6_addresses():
    from ipaddress import IPv6Address, IPv6Network

    from dhcp.dnsmsg import TYPE_AAAA, aaaa_record, reverse_name6

    six = IPv6Address("fd42::10")
    r = responder(hosts6=lambda: {"web": (six,), "only6": (IPv6Address("fd42::11"),)},
                  subnet6=IPv6Network("fd42::/64"))
    msg = answer_of(r.handle_query(query("web.vsw", TYPE_AAAA), GUEST, "udp", 0.0))
    assert msg.aa and msg.answers == (aaaa_record(N("web.vsw"), six, 0),)
    both = answer_of(r.handle_query(query("web.vsw", 255), GUEST, "udp", 0.0))  # ANY
    assert sorted(a.rtype for a in both.answers) == [1, TYPE_AAAA]
    nodata = answer_of(r.handle_query(query("only6.vsw"), GUEST, "udp", 0.0))  # A of a v6-only
    assert nodata.rcode == RCODE_NOERROR and nodata.answers == ()
    ptr = answer_of(r.handle_query(query(reverse_name6(six), TYPE_PTR), GUEST, "udp", 0.0))
    assert ptr.answers[0].rdata == b"\x03web\x03vsw\x00"
    unknown = answer_of(r.handle_query(query(reverse_name6("fd42::99"), TYPE_PTR), GUEST,
                                       "udp", 0.0))
    assert unknown.rcode == RCODE_NXDOMAIN
    forwarded(r, query(reverse_name6("2001:db8::1"), TYPE_PTR))  # not ours: upstream knows


def test_reverse_names6_round_trip_and_refuse_what_is_not_one():
    from ipaddress import IPv6Address

    from dhcp.dnsmsg import parse_reverse_name6, reverse_name6

    address = IPv6Address("fd42:0:0:7::abcd")
    name = reverse_name6(address)
    assert len(name) == 34 and name[0] == b"d" and parse_reverse_name6(name) == address
    assert parse_reverse_name6(tuple(x.upper() for x in name)) == address
    assert parse_reverse_name6(name[1:]) is None
    assert parse_reverse_name6((b"zz",) + name[1:]) is None
