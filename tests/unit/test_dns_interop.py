"""The codec against dnspython (an independent implementation, tests only): each side reads the
other's output, compression included."""

import pytest

pytest.importorskip("dns.message", reason="dnspython is the interop oracle (pip install dnspython)")

import dns.edns  # noqa: E402
import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rdataclass  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.rrset  # noqa: E402

from dhcp.dnsmsg import (  # noqa: E402
    TYPE_A,
    TYPE_PTR,
    DnsMessage,
    Question,
    a_record,
    decode_message,
    encode_message,
    name_from_text,
    opt_record,
    ptr_record,
    reverse_name,
)

N = name_from_text


def dnspython_response() -> dns.message.Message:
    """A response with compression everywhere dnspython does it: owners and RDATA names."""
    query = dns.message.make_query("WWW.Example.COM.", "A", use_edns=0, payload=1232,
                                   want_dnssec=True)
    response = dns.message.make_response(query)
    response.use_edns(0, dns.flags.DO, 1232)
    answer = response.answer
    answer.append(dns.rrset.from_text("WWW.Example.COM.", 300, "IN", "CNAME", "web.example.com."))
    answer.append(dns.rrset.from_text("web.example.com.", 300, "IN", "A", "192.0.2.1", "192.0.2.2"))
    response.authority.append(dns.rrset.from_text(
        "example.com.", 3600, "IN", "SOA", "ns1.example.com. admin.example.com. 1 2 3 4 60"))
    response.additional.append(dns.rrset.from_text(
        "example.com.", 60, "IN", "MX", "10 mx.example.com."))
    response.additional.append(dns.rrset.from_text(
        "_sip._udp.example.com.", 60, "IN", "SRV", "1 2 5060 sip.example.com."))
    return response


def test_we_read_dnspython_output_with_compression():
    theirs = dnspython_response()
    wire = theirs.to_wire()
    assert wire.count(b"\xc0") >= 8, "dnspython compressed owners and RDATA names"
    ours = decode_message(wire)
    assert ours.id == theirs.id and ours.qr and ours.rd
    assert ours.questions == (Question(N("WWW.Example.COM"), TYPE_A),)
    assert [rr.rtype for rr in ours.answers] == [5, 1, 1]
    assert (ours.edns_payload, ours.dnssec_ok) == (1232, True)
    # Our re-encoding (names in RDATA decompressed) means the same to dnspython.
    again = dns.message.from_wire(encode_message(ours))
    for section in ("question", "answer", "authority", "additional"):
        assert getattr(again, section) == getattr(theirs, section), section
    assert again.edns == 0 and again.payload == 1232 and again.ednsflags & dns.flags.DO


def test_dnspython_reads_our_output():
    msg = DnsMessage(
        id=4321, qr=True, aa=True, rd=True, ra=True,
        questions=(Question(N("Web.VSW"), TYPE_A),),
        answers=(a_record(N("Web.VSW"), "192.168.122.10", 0),),
        additional=(opt_record(1232, dnssec_ok=True),),
    )
    theirs = dns.message.from_wire(encode_message(msg))
    assert theirs.id == 4321 and theirs.rcode() == dns.rcode.NOERROR
    assert theirs.flags & dns.flags.AA and theirs.flags & dns.flags.QR
    assert theirs.question[0].name == dns.name.from_text("Web.VSW.")
    assert theirs.answer[0] == dns.rrset.from_text("web.vsw.", 0, "IN", "A", "192.168.122.10")
    assert theirs.payload == 1232 and theirs.ednsflags & dns.flags.DO

    ptr = DnsMessage(id=2, qr=True, questions=(Question(reverse_name("192.168.122.10"), TYPE_PTR),),
                     answers=(ptr_record(reverse_name("192.168.122.10"), N("web.vsw"), 0),))
    theirs = dns.message.from_wire(encode_message(ptr))
    assert theirs.answer[0] == dns.rrset.from_text(
        "10.122.168.192.in-addr.arpa.", 0, "IN", "PTR", "web.vsw.")


def test_dnspython_reads_our_truncated_output():
    msg = DnsMessage(id=7, qr=True, questions=(Question(N("many.example"), TYPE_A),),
                     answers=(a_record(N("many.example"), "10.0.1.1", 60),
                              *(a_record(N("more.example"), f"10.0.0.{i}", 60)
                                for i in range(100))))
    theirs = dns.message.from_wire(encode_message(msg, max_size=512))
    assert theirs.flags & dns.flags.TC
    assert [len(rrset) for rrset in theirs.answer] == [1], "whole RRsets only (RFC 2181 9)"


def test_we_read_dnspython_queries():
    query = dns.message.make_query("Example.ORG.", "AAAA", use_edns=0, payload=4096)
    ours = decode_message(query.to_wire())
    assert ours.id == query.id and not ours.qr and ours.rd
    assert ours.questions == (Question(N("Example.ORG"), 28),)
    assert ours.edns_payload == 4096 and ours.edns_version == 0 and not ours.dnssec_ok
