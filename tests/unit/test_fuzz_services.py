"""Property tests of the DHCP, DHCPv6 and DNS codecs and cores (issue 13, "fuzzing every
parser").

Codecs: ``MalformedPacket`` and nothing else on any input; ``decode(encode(x)) == x``;
``encode(decode(b))`` a fixed point after one round. Cores (``DhcpServer``, ``Dhcp6Server``,
``Dhcp6Client``, ``DnsResponder``) under random sequences of well-formed-but-hostile messages
and time: no exception but the documented one, every answer decodes, tables stay bounded.
Existing random-mutation loops (test_dhcp_message.py, test_dns_codec.py, test_dns_responder.py)
mutate fixed seeds; these generate structure.
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from dhcp.client6 import Dhcp6Client
from dhcp.dhcp6 import (
    ADVERTISE,
    NAMES,
    OPT_CLIENTID,
    OPT_IA_NA,
    OPT_IAADDR,
    OPT_SERVERID,
    OPT_STATUS,
    REPLY,
    Dhcp6Config,
    Dhcp6Server,
    decode_ia_na,
    decode_message6,
    ia_na_option,
    option,
    read_options,
)
from dhcp.dns import DnsResponder
from dhcp.dns_actions import Answer, Forward
from dhcp.dnsmsg import (
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_MX,
    TYPE_OPT,
    TYPE_PTR,
    TYPE_SOA,
    TYPE_SRV,
    TYPE_TXT,
    DnsMessage,
    Question,
    ResourceRecord,
    TcpFramer,
    encode_tcp_frame,
)
from dhcp.dnsmsg import decode_message as decode_dns
from dhcp.dnsmsg import encode_message as encode_dns
from dhcp.message import (
    OPTION_SIZES,
    DhcpMessage,
    MessageType,
    Option,
    decode_message,
    encode_message,
)
from dhcp.server import DhcpConfig, DhcpServer, StaticHost
from tests.unit.fuzzing import budget
from wire.errors import MalformedPacket


def decodes(decoder, *args):
    try:
        return decoder(*args)
    except MalformedPacket:
        return None


# -- DHCP (RFC 2131/2132) ------------------------------------------------------------------------

IP4 = st.binary(min_size=4, max_size=4)
NO_NUL = st.binary(max_size=64).map(lambda b: b.replace(b"\0", b"x"))
#: Option values: the checked ones at a size the decoder accepts, others any size (> 255 too:
#: split and joined again, RFC 3396). Option 52 (overload) is the decoder's, not a value.
OPTION_VALUES = st.dictionaries(
    st.integers(1, 254).filter(lambda c: c != Option.OVERLOAD),
    st.binary(max_size=300), max_size=6,
).map(lambda options: {c: v for c, v in options.items()
                       if c not in OPTION_SIZES or OPTION_SIZES[c][0] <= len(v)
                       <= OPTION_SIZES[c][1]})


@st.composite
def dhcp_messages(draw) -> DhcpMessage:
    hlen = draw(st.integers(0, 16))
    return DhcpMessage(
        op=draw(st.integers(0, 255)), xid=draw(st.integers(0, 0xFFFFFFFF)),
        chaddr=draw(st.binary(min_size=hlen, max_size=hlen)), htype=draw(st.integers(0, 255)),
        hlen=hlen, hops=draw(st.integers(0, 255)), secs=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 0xFFFF)), ciaddr=draw(IP4), yiaddr=draw(IP4),
        siaddr=draw(IP4), giaddr=draw(IP4), sname=draw(NO_NUL),
        file=draw(NO_NUL.map(lambda b: b * 2)), options=draw(OPTION_VALUES))


@budget(200)
@given(dhcp_messages())
def test_dhcp_message_round_trip(msg):
    wire = encode_message(msg)
    assert decode_message(wire) == msg
    assert encode_message(decode_message(wire)) == wire


@st.composite
def dhcp_wire(draw) -> bytes:
    """A message's bytes, then options field, sname and file overwritten by option soup
    (overload values, missing END, lengths overrunning their field), maybe cut."""
    data = bytearray(encode_message(draw(dhcp_messages())))
    soup = st.lists(st.one_of(
        st.just(b"\xff"), st.just(b"\x00"), st.builds(lambda v: bytes([52, 1, v]),
                                                       st.integers(0, 4)),
        st.builds(lambda c, v: bytes([c, len(v)]) + v, st.integers(0, 255), st.binary(max_size=8)),
        st.binary(max_size=3)), max_size=8).map(b"".join)
    data[240:] = draw(soup)
    if draw(st.booleans()):
        at = draw(st.sampled_from([44, 108]))
        field = draw(soup)[:64 if at == 44 else 128]
        data[at:at + len(field)] = field
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@budget(300)
@given(st.one_of(dhcp_wire(), st.binary(max_size=300)))
def test_dhcp_decoder_raises_only_malformed_and_re_encodes_to_a_fixed_point(data):
    msg = decodes(decode_message, data)
    if msg is None:
        return
    for read in (msg.message_type, msg.requested_ip, msg.server_id, msg.lease_time,
                 msg.hostname, msg.client_id, msg.max_message_size, msg.parameter_request_list):
        read()  # sizes were checked at decode: the accessors never raise
    try:
        once = encode_message(msg)
    except ValueError:  # an option the decoder read out of an overloaded field, as code 52?
        assert Option.OVERLOAD in msg.options
        return
    again = decode_message(once)
    assert again == msg or Option.OVERLOAD in msg.options
    assert encode_message(again) == once or Option.OVERLOAD in msg.options


NET = int(IPv4Address("192.168.122.0"))
SERVER_IP = NET + 1
STATIC_MAC = bytes.fromhex("525400000066")


def dhcp_server(max_leases: int | None) -> DhcpServer:
    return DhcpServer(DhcpConfig(
        server_ip=SERVER_IP, network=NET, prefix=24, range_first=NET + 10, range_last=NET + 29,
        router=SERVER_IP, dns_servers=(SERVER_IP,), domain="vm.internal", mtu=1400,
        static_hosts=(StaticHost(STATIC_MAC, NET + 66, "fixed"),), max_leases=max_leases,
        offer_time=5.0, decline_time=30.0, lease_time=120))


def ip_bytes(n: int) -> bytes:
    return n.to_bytes(4, "big")


@st.composite
def dhcp_requests(draw) -> tuple[bytes, bytes, float]:
    """A client's DHCP message as a guest (or a flood) sends it: every type, MACs from a few
    or many, addresses inside, outside and at the edges of the subnet; and a time step."""
    mac = draw(st.one_of(st.sampled_from([bytes.fromhex(f"5254000000{i:02x}") for i in
                                          (0x10, 0x11, 0x66)]), st.binary(min_size=6,
                                                                          max_size=6)))
    addresses = st.one_of(st.sampled_from([NET, NET + 1, NET + 10, NET + 29, NET + 30, NET + 66,
                                           NET + 255, 0, 0xFFFFFFFF]),
                          st.integers(0, 0xFFFFFFFF)).map(ip_bytes)
    options: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes([draw(st.integers(0, 10))])}
    for code, value in (
            (Option.REQUESTED_IP, addresses), (Option.SERVER_ID, addresses),
            (Option.CLIENT_ID, st.binary(min_size=2, max_size=20)),
            (Option.HOSTNAME, st.text("abc-.\0", max_size=12).map(str.encode)),
            (Option.LEASE_TIME, st.integers(0, 0xFFFFFFFF).map(lambda n: n.to_bytes(4, "big"))),
            (Option.MAX_MESSAGE_SIZE, st.integers(0, 0xFFFF).map(lambda n: n.to_bytes(2, "big"))),
            (Option.PARAMETER_REQUEST_LIST, st.binary(max_size=30))):
        if draw(st.booleans()):
            options[code] = draw(value)
    msg = DhcpMessage(op=draw(st.sampled_from([1, 1, 1, 2])), xid=draw(st.integers(0, 9)),
                      chaddr=mac, flags=draw(st.sampled_from([0, 0x8000, 1])),
                      ciaddr=draw(st.one_of(st.just(bytes(4)), addresses)),
                      giaddr=draw(st.one_of(st.just(bytes(4)), st.just(bytes(4)), addresses)),
                      options=options)
    return encode_message(msg), mac, draw(st.floats(0, 60))


@budget(150)
@given(st.lists(dhcp_requests(), min_size=1, max_size=25), st.sampled_from([None, 4]))
def test_dhcp_server_answers_decode_and_its_table_stays_bounded(steps, max_leases):
    server = dhcp_server(max_leases)
    now = 1000.0
    for data, mac, wait in steps:
        for reply in server.handle(data, mac, bytes(4), now):
            answer = decode_message(reply.payload)
            assert answer.op == 2 and answer.message_type() in (MessageType.OFFER,
                                                                MessageType.ACK,
                                                                MessageType.NAK)
            yiaddr = int.from_bytes(answer.yiaddr, "big")
            assert yiaddr == 0 or NET < yiaddr < NET + 255
            assert len(reply.dst_mac) == 6 and len(reply.dst_ip) == 4
        server.pop_events()
        now += wait
        server.expire(now)
        dynamic = [lease for lease in server.leases() if lease.ip != NET + 66]
        assert len(dynamic) <= (max_leases or 20) + 20  # pool; quarantined addresses too
        assert all(NET + 10 <= lease.ip <= NET + 29 for lease in dynamic)


# -- DHCPv6 (RFC 8415) ---------------------------------------------------------------------------


@budget(200)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=8),
       st.integers(0, 255), st.binary(min_size=3, max_size=3))
def test_dhcp6_options_round_trip(options, kind, transaction):
    data = bytes([kind]) + transaction + b"".join(option(c, d) for c, d in options)
    msg = decode_message6(data)
    assert (msg.kind, msg.transaction, msg.options) == (kind, transaction, options)
    assert bytes([msg.kind]) + msg.transaction + b"".join(option(c, d) for c, d in
                                                          msg.options) == data


IA_BODIES = st.lists(st.one_of(
    st.builds(lambda a, p, v: option(OPT_IAADDR, struct.pack("!16sII", a, p, v)),
              st.binary(min_size=16, max_size=16), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1)),
    st.builds(lambda code, text: option(OPT_STATUS, struct.pack("!H", code) + text),
              st.integers(0, 7), st.binary(max_size=8)),
    st.builds(option, st.integers(0, 40), st.binary(max_size=24)),
    st.binary(max_size=6)), max_size=4).map(b"".join)


@budget(300)
@given(st.binary(min_size=0, max_size=14), IA_BODIES)
def test_ia_na_decoders_raise_only_malformed(head, body):
    ia = decodes(decode_ia_na, head + body)
    if ia is not None and len(head) == 12:
        assert all(len(a) == 16 for a, _, _ in ia.addresses)
        if ia.status is None:  # what has no status re-encodes to itself
            again = ia_na_option(ia.iaid, ia.addresses, t1=ia.t1, t2=ia.t2)
            assert decode_ia_na(read_options(again)[0][1]) == ia
    msg = decodes(decode_message6, b"\x03abc" + option(OPT_IA_NA, head + body) + head)
    if msg is not None:
        decodes(msg.ia_nas)


GW6 = IPv6Address("fd42::1").packed
FIRST6, LAST6 = int(IPv6Address("fd42::100")), int(IPv6Address("fd42::10f"))
SERVER6_MAC = bytes.fromhex("525400000001")
SERVER6_DUID = b"\x00\x03\x00\x01" + SERVER6_MAC


def duid(mac: bytes) -> bytes:
    return b"\x00\x03\x00\x01" + mac


@st.composite
def dhcp6_messages(draw, server_duid: bytes = SERVER6_DUID) -> bytes:
    """A message of any type with client ids from a few or many clients, our server id, a
    stranger's or none, IA_NAs asking for addresses inside and outside the range, junk options."""
    kind = draw(st.sampled_from([*NAMES, 0, 12, 255]))
    options = []
    if draw(st.integers(0, 9)):
        mac = draw(st.one_of(st.sampled_from([b"\x52\x54\0\0\0\x10", b"\x52\x54\0\0\0\x11"]),
                             st.binary(min_size=6, max_size=6)))
        options.append(option(OPT_CLIENTID, draw(st.sampled_from([duid(mac), mac, b""]))))
    server = draw(st.sampled_from([server_duid, server_duid, duid(b"\x02" * 6), None]))
    if server is not None:
        options.append(option(OPT_SERVERID, server))
    for _ in range(draw(st.integers(0, 2))):
        asked = draw(st.lists(st.one_of(
            st.integers(FIRST6 - 2, LAST6 + 2), st.integers(0, 2**128 - 1)), max_size=2))
        options.append(ia_na_option(draw(st.integers(0, 3)), [
            (a.to_bytes(16, "big"), 0, 0) for a in asked]))
    options += draw(st.lists(st.builds(option, st.integers(0, 40), st.binary(max_size=20)),
                             max_size=2))
    data = bytes([kind]) + draw(st.binary(min_size=3, max_size=3)) + b"".join(options)
    return data[:draw(st.integers(0, len(data)))] if draw(st.integers(0, 9)) == 0 else data


@budget(150)
@given(st.lists(st.tuples(dhcp6_messages(), st.floats(0, 100)), min_size=1, max_size=25),
       st.sampled_from([0, 3]))
def test_dhcp6_server_answers_decode_and_leases_stay_bounded(steps, max_leases):
    server = Dhcp6Server(Dhcp6Config(SERVER6_MAC, GW6, FIRST6, LAST6,
                                     int(IPv6Address("fd42::")), 64,
                                     {b"\x52\x54\0\0\0\x66": int(IPv6Address("fd42::66"))},
                                     domain="six.internal", lease_time=120, offer_time=5.0,
                                     decline_time=30.0, max_leases=max_leases))
    now = 0.0
    for data, wait in steps:
        answer = server.handle(data, b"\x52\x54\0\0\0\x10", now)
        if answer is not None:
            reply = decode_message6(answer)
            assert reply.kind in (ADVERTISE, REPLY) and reply.transaction == data[1:4]
            assert reply.get(OPT_SERVERID) == SERVER6_DUID
            for code, body in reply.options:
                if code != OPT_IA_NA:
                    continue
                for address, _, valid in decode_ia_na(body).addresses:
                    n = int.from_bytes(address, "big")  # lifetimes 0: "not yours" (18.3.5)
                    assert valid == 0 or FIRST6 <= n <= LAST6 or n == int(IPv6Address("fd42::66"))
        now += wait
        server.expire(now)
        dynamic = [lease for lease in server.leases() if FIRST6 <= lease.ip <= LAST6]
        assert len(dynamic) <= (max_leases or 16)
        assert len(server.leases()) <= 16 + 1


@budget(150)
@given(st.lists(st.tuples(st.one_of(dhcp6_messages(b"\x00\x03\x00\x01" + b"\x52\x54\0\0\0\x02"),
                                    st.binary(max_size=60)),
                          st.floats(0, 50), st.booleans()), min_size=1, max_size=20))
def test_dhcp6_client_never_raises_on_what_it_receives(steps):
    mac = b"\x52\x54\0\0\0\x10"
    client = Dhcp6Client(mac, rng=random.Random(7))
    now = 0.0
    client.start(now)
    for data, wait, as_reply in steps:
        if as_reply and len(data) >= 4:  # aim it at the client: a reply to its own exchange
            xid = getattr(client, "_xid", None) or data[1:4]
            data = bytes([draw_kind(data)]) + xid + data[4:]
        client.receive(data, now)
        now += wait
        client.tick(now)
        if client.lease is not None:
            assert len(client.lease.address) == 16


def draw_kind(data: bytes) -> int:
    return (ADVERTISE, REPLY)[data[0] & 1]


# -- DNS (RFC 1035) ------------------------------------------------------------------------------

LABEL = st.binary(min_size=1, max_size=10).filter(lambda b: b"." not in b)
NAME = st.lists(st.one_of(LABEL, st.sampled_from([b"vsw", b"web", b"WEB", b"in-addr", b"arpa"])),
                max_size=4).map(tuple)


def name_wire(name: tuple[bytes, ...]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in name) + b"\0"


RDATA = {
    TYPE_A: st.binary(min_size=4, max_size=4),
    TYPE_AAAA: st.binary(min_size=16, max_size=16),
    TYPE_PTR: NAME.map(name_wire),
    TYPE_CNAME: NAME.map(name_wire),
    TYPE_MX: st.builds(lambda p, n: p + name_wire(n), st.binary(min_size=2, max_size=2), NAME),
    TYPE_SRV: st.builds(lambda p, n: p + name_wire(n), st.binary(min_size=6, max_size=6), NAME),
    TYPE_SOA: st.builds(lambda a, b, t: name_wire(a) + name_wire(b) + t, NAME, NAME,
                        st.binary(min_size=20, max_size=20)),
    TYPE_TXT: st.binary(max_size=40),
    99: st.binary(max_size=20),
}
RECORDS = st.sampled_from(sorted(RDATA)).flatmap(lambda rtype: st.builds(
    ResourceRecord, NAME, st.just(rtype), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
    RDATA[rtype]))


@st.composite
def dns_messages(draw) -> DnsMessage:
    additional = draw(st.lists(RECORDS, max_size=2))
    if draw(st.booleans()):
        additional.append(ResourceRecord((), TYPE_OPT, draw(st.integers(0, 0xFFFF)),
                                         draw(st.integers(0, 2**32 - 1)),
                                         draw(st.binary(max_size=12))))
    flags = {name: draw(st.booleans()) for name in ("qr", "aa", "tc", "rd", "ra", "ad", "cd")}
    return DnsMessage(
        id=draw(st.integers(0, 0xFFFF)), opcode=draw(st.integers(0, 15)),
        rcode=draw(st.integers(0, 15)),
        questions=tuple(draw(st.lists(st.builds(Question, NAME, st.integers(0, 0xFFFF),
                                                st.integers(0, 0xFFFF)), max_size=2))),
        answers=tuple(draw(st.lists(RECORDS, max_size=3))),
        authority=tuple(draw(st.lists(RECORDS, max_size=2))), additional=tuple(additional),
        **flags)


@budget(200)
@given(dns_messages())
def test_dns_message_round_trip_with_compression(msg):
    wire = encode_dns(msg)
    assert decode_dns(wire) == msg
    assert encode_dns(decode_dns(wire)) == wire


@budget(150)
@given(dns_messages(), st.integers(512, 700))
def test_dns_truncation_keeps_a_decodable_message_within_the_limit(msg, limit):
    wire = encode_dns(msg, limit)
    back = decode_dns(wire)
    full = len(encode_dns(msg))
    sections = ("answers", "authority", "additional")
    if full <= limit:  # everything, RRsets together (their records may move up, Rule 6)
        for section in sections:
            assert sorted(map(repr, getattr(back, section))) == \
                sorted(map(repr, getattr(msg, section)))
        assert back.questions == msg.questions and back.tc == msg.tc
    else:
        assert back.tc and (len(wire) <= limit or not back.answers and not back.authority)
        for section in sections:  # what is left is what was there
            left = list(map(repr, getattr(msg, section)))
            for rr in map(repr, getattr(back, section)):
                left.remove(rr)
    assert (back.opt is None) == (msg.opt is None)


@st.composite
def dns_garbage(draw) -> bytes:
    """A message's bytes with pointers aimed anywhere (loops, forwards), counts that lie,
    bytes flipped, cut or grown."""
    data = bytearray(encode_dns(draw(dns_messages())))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data[at] = draw(st.integers(0, 255))
        elif kind == 1:  # a compression pointer to anywhere
            data[at:at + 2] = struct.pack("!H", 0xC000 | draw(st.integers(0, len(data) + 4)))
        elif kind == 2:  # a count that lies
            struct.pack_into("!H", data, draw(st.sampled_from([4, 6, 8, 10])),
                             draw(st.integers(0, 0xFFFF)))
        else:
            data += draw(st.binary(max_size=8))
    return bytes(data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


@budget(400)
@given(st.one_of(dns_garbage(), st.binary(max_size=80)))
def test_dns_decoder_raises_only_malformed_and_re_encodes_to_a_fixed_point(data):
    msg = decodes(decode_dns, data)
    if msg is None:
        return
    msg.edns_payload, msg.edns_version, msg.dnssec_ok  # noqa: B018 (must not raise)
    once = encode_dns(msg)
    assert decode_dns(once) == msg
    assert encode_dns(decode_dns(once)) == once


@budget(150)
@given(st.lists(st.binary(max_size=300), max_size=6), st.lists(st.integers(1, 50), max_size=20),
       st.integers(0, 0xFFFF))
def test_dns_tcp_framing_in_any_chunking(messages, cuts, limit):
    stream = b"".join(encode_tcp_frame(m) for m in messages)
    framer, out, at = TcpFramer(limit), [], 0
    try:
        for cut in [*cuts, len(stream)]:
            out += framer.feed(stream[at:at + cut])
            at += cut
            assert framer.pending <= 2 + limit
    except MalformedPacket:
        assert any(len(m) > limit for m in messages)
        return
    assert out == messages and framer.pending == 0


SUBNET = "192.168.122.0/24"
UPSTREAMS = [("10.0.0.1", 53), ("10.0.0.2", 53)]
QNAMES = [b"web", b"db", b"x", b"y", b"z", b"1", b"2", b"3", b"4", b"5"]


@st.composite
def dns_queries(draw) -> bytes:
    """A guest's query: local names, names forwarded upstream, reverse names, all types."""
    name = draw(st.one_of(
        st.tuples(st.sampled_from(QNAMES), st.sampled_from([b"vsw", b"example", b"com"])),
        st.tuples(st.sampled_from([b"1", b"10", b"50"]), st.just(b"122"), st.just(b"168"),
                  st.just(b"192"), st.just(b"in-addr"), st.just(b"arpa")),
        NAME))
    additional = (ResourceRecord((), TYPE_OPT, draw(st.integers(0, 4096)),
                                 draw(st.sampled_from([0, 0x8000, 1 << 16])), b""),) \
        if draw(st.booleans()) else ()
    return encode_dns(DnsMessage(
        id=draw(st.integers(0, 0xFFFF)), qr=draw(st.integers(0, 9)) == 0,
        opcode=draw(st.sampled_from([0, 0, 0, 2])), rd=draw(st.booleans()),
        questions=(Question(name, draw(st.sampled_from([TYPE_A, TYPE_AAAA, TYPE_PTR, TYPE_MX,
                                                         255])), draw(st.sampled_from([1, 1,
                                                                                       3]))),),
        additional=additional))


@budget(120)
@given(st.lists(st.tuples(st.one_of(dns_queries(), dns_garbage()), st.floats(0, 4),
                          st.sampled_from(["udp", "tcp"]), st.integers(0, 4), RECORDS),
                min_size=1, max_size=30))
def test_dns_responder_answers_decode_and_its_tables_stay_bounded(steps):
    rng = random.Random(3)
    r = DnsResponder("vsw", {"web": "192.168.122.10", "db": "192.168.122.11"}, UPSTREAMS,
                     subnet=SUBNET, rng=rng.randrange, max_pending=4, cache_size=3,
                     hosts6=lambda: {"web": (IPv6Address("fd42::10"),)})
    now = 0.0
    for data, wait, transport, answer_how, record in steps:
        actions = r.handle_query(data, ("192.168.122.50", 40000), transport, now)
        for action in actions:
            if isinstance(action, Answer):
                if len(action.payload) > 12:
                    decode_dns(action.payload)
                if transport == "udp":
                    assert len(action.payload) <= 4096
            elif isinstance(action, Forward):
                r.sent_from(action.key, 5000 + action.key)
                if answer_how:  # the upstream answers, or someone spoofs it
                    q = decode_dns(action.payload)
                    reply = encode_dns(DnsMessage(
                        id=q.id if answer_how != 4 else q.id ^ 1, qr=answer_how != 3, ra=True,
                        questions=q.questions, rcode=answer_how & 3,
                        answers=(ResourceRecord(q.questions[0].name, record.rtype,
                                                record.rclass, record.ttl, record.rdata),)))
                    for back in r.handle_reply(reply, action.upstream, 5000 + action.key, now):
                        if isinstance(back, Answer):
                            decode_dns(back.payload)
        now += wait
        r.expire(now)
        assert r.pending_count() <= r.max_pending
        assert r.cache_size_now() <= r.cache_size
    r.expire(now + 60)  # the first timeout asks the other upstream, the second gives up
    r.expire(now + 120)
    assert r.pending_count() == 0


def test_the_names_in_the_rdata_table_are_the_types_the_codec_decompresses():
    # The RDATA strategies above cover every kind of layout the decoder has.
    from dhcp.dnsmsg import RDATA_LAYOUTS, RDATA_SIZES
    assert {TYPE_PTR, TYPE_CNAME, TYPE_MX, TYPE_SRV, TYPE_SOA} <= set(RDATA_LAYOUTS)
    assert {TYPE_A, TYPE_AAAA} <= set(RDATA_SIZES)
