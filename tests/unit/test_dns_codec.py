"""The DNS wire codec: round-trips, compression, truncation, helpers, TCP framing and bad input."""

import random
import struct
from dataclasses import replace

import pytest

from dhcp.dnsmsg import (
    MAX_POINTER_HOPS,
    RCODE_FORMERR,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_MX,
    TYPE_OPT,
    TYPE_PTR,
    TYPE_SOA,
    TYPE_TXT,
    DnsMessage,
    Question,
    ResourceRecord,
    TcpFramer,
    a_record,
    decode_message,
    encode_message,
    encode_tcp_frame,
    header_only_response,
    lower_name,
    name_from_text,
    name_to_text,
    opt_record,
    parse_reverse_name,
    ptr_record,
    reverse_name,
    soa_minimum,
)
from wire.errors import MalformedPacket

N = name_from_text


def wire_name(text: str) -> bytes:
    out = b""
    for label in N(text):
        out += bytes([len(label)]) + label
    return out + b"\0"


def soa(zone: str, minimum: int, ttl: int = 3600) -> ResourceRecord:
    rdata = wire_name("ns1." + zone) + wire_name("admin." + zone)
    rdata += struct.pack("!IIIII", 2024010101, 7200, 900, 1209600, minimum)
    return ResourceRecord(N(zone), TYPE_SOA, 1, ttl, rdata)


def sample_response() -> DnsMessage:
    return DnsMessage(
        id=0xBEEF, qr=True, aa=True, rd=True, ra=True, ad=True,
        questions=(Question(N("WWW.Example.com"), TYPE_A),),
        answers=(
            ResourceRecord(N("WWW.Example.com"), TYPE_CNAME, 1, 300, wire_name("web.example.com")),
            a_record(N("web.example.com"), "192.0.2.1", 300),
            a_record(N("web.example.com"), "192.0.2.2", 300),
        ),
        authority=(soa("example.com", 60),),
        additional=(
            ResourceRecord(N("example.com"), TYPE_MX, 1, 60, b"\0\n" + wire_name("mx.example.com")),
            ResourceRecord(N("example.com"), TYPE_TXT, 1, 60, b"\x05hello"),
            opt_record(1232, dnssec_ok=True),
        ),
    )


def test_round_trip_keeps_every_field_and_the_case_of_names():
    msg = sample_response()
    assert decode_message(encode_message(msg)) == msg
    query = DnsMessage(id=1, opcode=0, rd=False, cd=True, questions=(Question(N("a.b"), 28, 3),))
    assert decode_message(encode_message(query)) == query


def test_encoder_compresses_repeated_names_and_decoder_follows_the_pointers():
    msg = DnsMessage(id=1, qr=True, questions=(Question(N("host.example.com"), TYPE_A),),
                     answers=tuple(a_record(N("host.example.com"), f"192.0.2.{i}", 60)
                                   for i in range(1, 11)))
    wire = encode_message(msg)
    # Ten owner names each shrink to a 2-octet pointer to the question's name at offset 12.
    assert wire.count(b"\xc0\x0c") == 10
    assert len(wire) == 12 + 18 + 4 + 10 * (2 + 10 + 4)
    assert decode_message(wire) == msg


def test_names_inside_rdata_are_decompressed_on_decode():
    # A CNAME whose target is a pointer back to the question name's "example.com" suffix.
    header = struct.pack("!HHHHHH", 5, 0x8180, 1, 1, 0, 0)
    question = wire_name("www.example.com") + struct.pack("!HH", TYPE_A, 1)
    target = b"\x03web\xc0\x10"  # web + pointer to offset 16 ("example.com")
    answer = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_CNAME, 1, 60, len(target)) + target
    msg = decode_message(header + question + answer)
    assert msg.answers[0].rdata == wire_name("web.example.com")
    assert decode_message(encode_message(msg)) == msg  # stands alone at any offset


def test_truncation_keeps_the_question_and_opt_drops_answers_and_sets_tc():
    msg = DnsMessage(
        id=9, qr=True, questions=(Question(N("many.example"), TYPE_A),),
        answers=tuple(a_record(N("many.example"), f"10.0.{i // 256}.{i % 256}", 60)
                      for i in range(100)),
        additional=(opt_record(512),),
    )
    wire = encode_message(msg, max_size=512)
    assert len(wire) <= 512
    cut = decode_message(wire)
    assert cut.tc, "answers were dropped, so TC tells the client to retry over TCP"
    assert cut.questions == msg.questions and cut.opt == opt_record(512)
    assert cut.answers == (), "one RRset that does not fit whole is not sent in part (RFC 2181 9)"
    assert not decode_message(encode_message(msg)).tc  # no limit, nothing dropped


def test_dropping_only_additional_records_does_not_set_tc():
    big = ResourceRecord(N("pad.example"), TYPE_TXT, 1, 60, b"\xff" + b"x" * 255)
    big2 = replace(big, name=N("pad2.example"))
    msg = DnsMessage(id=3, qr=True, questions=(Question(N("a.example"), TYPE_A),),
                     answers=(a_record(N("a.example"), "192.0.2.7", 60),), additional=(big, big2))
    cut = decode_message(encode_message(msg, max_size=512))
    assert not cut.tc, "RFC 2181 9: missing additional data is not truncation"
    assert cut.answers == msg.answers and cut.additional == (big,)


def test_encoder_rejects_invalid_names_and_sizes():
    with pytest.raises(ValueError):
        encode_message(DnsMessage(id=1, questions=(Question((b"x" * 64,), TYPE_A),)))
    with pytest.raises(ValueError):
        encode_message(DnsMessage(id=1, questions=(Question((b"x" * 63,) * 4, TYPE_A),)))
    with pytest.raises(ValueError):
        encode_message(DnsMessage(id=0x10000))
    with pytest.raises(ValueError):
        encode_message(DnsMessage(id=1), max_size=100)
    with pytest.raises(ValueError):
        N("a..b")


def test_edns_properties():
    msg = DnsMessage(id=1, additional=(opt_record(4096, dnssec_ok=True),))
    assert (msg.edns_payload, msg.edns_version, msg.dnssec_ok) == (4096, 0, True)
    small = DnsMessage(id=1, additional=(opt_record(100),))
    assert small.edns_payload == 512, "RFC 6891 6.2.5: below 512 counts as 512"
    plain = DnsMessage(id=1)
    assert (plain.edns_payload, plain.edns_version, plain.dnssec_ok) == (None, None, False)
    v1 = ResourceRecord((), TYPE_OPT, 1232, 1 << 16, b"")
    assert DnsMessage(id=1, additional=(v1,)).edns_version == 1


def test_reverse_names_and_records():
    assert reverse_name("192.168.122.5") == N("5.122.168.192.in-addr.arpa")
    assert str(parse_reverse_name(N("5.122.168.192.IN-ADDR.ARPA"))) == "192.168.122.5"
    for bad in ("122.168.192.in-addr.arpa", "256.1.1.1.in-addr.arpa", "01.1.1.1.in-addr.arpa",
                "x.1.1.1.in-addr.arpa", "1.1.1.1.ip6.arpa", "1.1.1.1.1.in-addr.arpa"):
        assert parse_reverse_name(N(bad)) is None, bad
    ptr = ptr_record(reverse_name("10.0.0.1"), N("gw.vsw"), 0)
    assert (ptr.rtype, ptr.rdata) == (TYPE_PTR, wire_name("gw.vsw"))
    assert a_record(N("a"), "10.1.2.3", 5).rdata == bytes([10, 1, 2, 3])
    assert soa_minimum(soa("example.com", 42)) == 42


def test_name_text_helpers():
    assert N("Web.VSW.") == (b"Web", b"VSW") and N(".") == ()
    assert lower_name(N("Web.VSW")) == (b"web", b"vsw")
    assert name_to_text(N("web.vsw")) == "web.vsw."
    assert name_to_text((b"a.b", b"c\\d", b"\x00")) == "a\\.b.c\\\\d.\\000."


def test_header_only_response_echoes_id_opcode_and_rd():
    query = struct.pack("!HHHHHH", 0x1234, 0x2900, 7, 7, 7, 7) + b"junk"  # opcode 5, RD
    assert header_only_response(query, RCODE_FORMERR) == struct.pack(
        "!HHHHHH", 0x1234, 0x8000 | 0x2900 | RCODE_FORMERR, 0, 0, 0, 0)


def test_tcp_framer_reassembles_split_and_coalesced_frames():
    a, b = b"\x00\x01" + b"a" * 20, b"\x00\x02" + b"b" * 30
    stream = encode_tcp_frame(a) + encode_tcp_frame(b) + encode_tcp_frame(a)
    framer = TcpFramer()
    got = []
    for i in range(0, len(stream), 7):
        got += framer.feed(stream[i : i + 7])
    assert got == [a, b, a] and framer.pending == 0
    assert TcpFramer().feed(stream) == [a, b, a]
    partial = TcpFramer()
    assert partial.feed(stream[:5]) == [] and partial.pending == 5
    assert TcpFramer().feed(b"\x00\x00") == [b""]


def test_tcp_framer_rejects_frames_above_its_limit():
    with pytest.raises(MalformedPacket):
        TcpFramer(limit=512).feed(b"\x02\x01")
    with pytest.raises(ValueError):
        encode_tcp_frame(b"x" * 65536)


# --- docs/testing.md bad input: each is MalformedPacket, never another exception ------------------


def rr(rtype: int, rdlength: int, rdata: bytes, rclass: int = 1) -> bytes:
    """A record owned by the root whose RDLENGTH says ``rdlength`` and whose data is ``rdata``."""
    return b"\x00" + struct.pack("!HHIH", rtype, rclass, 0, rdlength) + rdata


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, ident: int = 0x4242) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, qd, an, ns, ar)


QTAIL = struct.pack("!HH", TYPE_A, 1)

BAD_MESSAGES = {
    "empty": b"",
    "header of 11 octets": header()[:11],
    "question count larger than the data": header(qd=2) + wire_name("a.example") + QTAIL,
    "answer count larger than the data": header(an=1) + wire_name("a.example") + QTAIL,
    "trailing octets after the counted sections": header() + wire_name("a.example") + QTAIL + b"\0",
    "question cut in its type": header() + wire_name("a.example") + b"\x00",
    "label running past the end": header() + b"\x05ab",
    "no root label": header() + b"\x01a",
    "pointer to itself": header() + b"\xc0\x0c" + QTAIL,
    "forward pointer": header() + b"\xc0\x12" + QTAIL + b"\x01a\x00",
    "pointer cycle": header(qd=2) + b"\x01a\xc0\x14" + QTAIL + b"\x01b\xc0\x0c" + QTAIL,
    "pointer back into its own name": header() + b"\x01a\x01b\xc0\x0e" + QTAIL,
    "truncated pointer": header() + b"\x01a\xc0",
    "label of 64 octets": header() + b"\x40" + b"x" * 64 + b"\x00" + QTAIL,
    "extended label type 0x80": header() + b"\x80" + b"x" * 10 + b"\x00" + QTAIL,
    "name of 256 octets": header() + (b"\x3f" + b"x" * 63) * 4 + b"\x00" + QTAIL,
    "RDATA past the end": header(qd=0, an=1) + rr(TYPE_A, 8, b"1234"),
    "A record of 5 octets": header(qd=0, an=1) + rr(TYPE_A, 5, b"12345"),
    "CNAME with junk after its name": header(qd=0, an=1) + rr(TYPE_CNAME, 3, b"\x00ab"),
    "SOA missing its numbers": header(qd=0, an=1) + rr(TYPE_SOA, 2, b"\x00\x00"),
    "two OPT records": header(qd=0, ar=2) + rr(TYPE_OPT, 0, b"", 512) * 2,
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_bad_input_is_malformed_packet(name: str):
    with pytest.raises(MalformedPacket):
        decode_message(BAD_MESSAGES[name])


def owner_chain(count: int, first: bytes, link: bytes) -> tuple[bytes, list[bytes]]:
    """``count`` empty records (type 99, no RDATA) whose owner names chain backwards: the first
    is ``first``, each later one is ``link`` then a pointer to the previous owner name."""
    body, offset = b"", 12
    names = []
    for i in range(count):
        name = first if i == 0 else link + struct.pack("!H", 0xC000 | offset)
        if i:
            offset = 12 + len(body)
        names.append(name)
        body += name + struct.pack("!HHIH", 99, 1, 0, 0)
    return header(qd=0, an=count) + body, names


def test_names_longer_than_255_through_pointers_are_rejected():
    # Each owner adds a 63-octet label to the previous one: 65, 129, 193, then 257 octets.
    label = b"\x3f" + b"x" * 63
    three, _ = owner_chain(3, label + b"\x00", label)
    assert [len(rr.name) for rr in decode_message(three).answers] == [1, 2, 3]
    four, _ = owner_chain(4, label + b"\x00", label)
    with pytest.raises(MalformedPacket, match="255"):
        decode_message(four)


def test_pointer_hops_are_bounded():
    # Each owner name is only a pointer to the previous one: strictly backwards, one hop more.
    fine, _ = owner_chain(MAX_POINTER_HOPS + 1, b"\x00", b"")
    assert decode_message(fine).answers[-1].name == ()
    too_many, _ = owner_chain(MAX_POINTER_HOPS + 2, b"\x00", b"")
    with pytest.raises(MalformedPacket):
        decode_message(too_many)


def test_random_bytes_and_mutations_never_raise_anything_but_malformed_packet():
    rng = random.Random(1035)
    good = encode_message(sample_response())
    for i in range(20_000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(40)))
        else:
            data = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            data = bytes(data[: rng.randrange(len(data) + 1)] if rng.random() < 0.3 else data)
        try:
            msg = decode_message(data)
        except MalformedPacket:
            continue
        assert decode_message(encode_message(msg)) == msg, "what decodes, re-encodes the same"


def test_aaaa_rdata_size_is_checked():
    rr = header(qd=0, an=1) + b"\x00" + struct.pack("!HHIH", TYPE_AAAA, 1, 0, 16) + bytes(16)
    assert decode_message(rr).answers[0].rdata == bytes(16)
