"""DHCP message codec: round trips, scapy interop, option overload and every bad input."""

import random

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from dhcp.message import (
    HEADER,
    MAGIC_COOKIE,
    MIN_LENGTH,
    OPTIONS_OFFSET,
    DhcpMessage,
    MessageType,
    Option,
    decode_message,
    encode_message,
)
from wire.errors import MalformedPacket

MAC = bytes.fromhex("525400000001")


def discover(**options: bytes) -> DhcpMessage:
    opts = {Option.MESSAGE_TYPE: bytes([MessageType.DISCOVER])}
    opts.update({int(code): value for code, value in options.items()})
    return DhcpMessage(op=1, xid=0x1234ABCD, chaddr=MAC, flags=0x8000, options=opts)


def raw(options: bytes, *, hlen: int = 6, cookie: bytes = MAGIC_COOKIE,
        sname: bytes = b"", file: bytes = b"") -> bytes:
    """A request built by hand, so the bytes can be anything."""
    header = HEADER.pack(1, 1, hlen, 0, 1, 0, 0, bytes(4), bytes(4), bytes(4), bytes(4),
                         MAC + bytes(10), sname, file)
    return header + cookie + options


def test_round_trip_keeps_every_field_and_option_order():
    msg = DhcpMessage(
        op=2, xid=0xDEADBEEF, chaddr=MAC, htype=1, hlen=6, hops=1, secs=9, flags=0x8000,
        ciaddr=bytes([10, 0, 0, 1]), yiaddr=bytes([10, 0, 0, 2]), siaddr=bytes([10, 0, 0, 3]),
        giaddr=bytes([10, 0, 0, 4]), sname=b"server", file=b"pxelinux.0",
        options={53: b"\x05", 54: bytes([10, 0, 0, 1]), 12: b"guest", 200: b"", 55: b"\x01\x03"},
    )
    data = encode_message(msg)
    assert len(data) >= MIN_LENGTH, "BOOTP clients expect at least 300 bytes"
    assert data[236:240] == MAGIC_COOKIE
    back = decode_message(data)
    assert back == msg
    assert list(back.options) == [53, 54, 12, 200, 55], "options keep their order"
    assert encode_message(back) == data


def test_option_longer_than_255_bytes_is_split_and_joined_again():
    # RFC 3396: a long option is sent as consecutive pieces and concatenated by the receiver.
    msg = DhcpMessage(op=1, xid=1, chaddr=MAC, options={6: bytes(range(256)) * 2, 53: b"\x01"})
    data = encode_message(msg)
    assert data.count(bytes([6, 255])) == 2 and bytes([6, 2]) in data
    assert decode_message(data).options[6] == bytes(range(256)) * 2


def test_typed_accessors():
    msg = decode_message(encode_message(DhcpMessage(op=1, xid=1, chaddr=MAC, options={
        53: b"\x03", 50: bytes([192, 168, 122, 9]), 54: bytes([192, 168, 122, 1]),
        51: (7200).to_bytes(4, "big"), 55: b"\x01\x03\x06", 12: b"guest\0",
        61: b"\x01" + MAC, 57: (1500).to_bytes(2, "big")})))
    assert msg.message_type() == MessageType.REQUEST
    assert msg.requested_ip() == bytes([192, 168, 122, 9])
    assert msg.server_id() == bytes([192, 168, 122, 1])
    assert msg.lease_time() == 7200
    assert msg.parameter_request_list() == b"\x01\x03\x06"
    assert msg.hostname() == b"guest", "a trailing NUL some clients send is dropped"
    assert msg.client_id() == b"\x01" + MAC
    assert msg.max_message_size() == 1500
    empty = DhcpMessage(op=1, xid=1, chaddr=MAC)
    assert empty.message_type() is None and empty.parameter_request_list() is None
    assert empty.hostname() is None and empty.client_id() is None


def test_option_overload_moves_options_into_file_and_sname():
    # RFC 2132 9.3: value 3 means file, then sname, carry options after the options field.
    file_opts = bytes([12, 5]) + b"guest" + bytes([255])
    sname_opts = bytes([61, 7, 1]) + MAC + bytes([255])
    data = raw(bytes([53, 1, 1, 52, 1, 3, 255]), sname=sname_opts, file=file_opts)
    msg = decode_message(data)
    assert msg.options == {53: b"\x01", 12: b"guest", 61: b"\x01" + MAC}
    assert msg.sname == b"" and msg.file == b"", "overloaded fields hold options, not names"
    assert decode_message(encode_message(msg)) == msg


def test_no_end_is_fine_when_overload_carries_on():
    data = raw(bytes([53, 1, 1, 52, 1, 1]), file=bytes([12, 1]) + b"g")
    assert decode_message(data).options == {53: b"\x01", 12: b"g"}


def test_bytes_after_end_are_padding():
    data = raw(bytes([53, 1, 1, 255]) + b"\x07garbage")
    assert decode_message(data).options == {53: b"\x01"}


# docs/testing.md, DHCP: < 240 bytes, no end option, option overrunning the buffer, message type of
# length 0 or 2, junk option overload, client-id of length 0/1 -- plus the other size checks.
BAD = {
    "empty": b"",
    "239 bytes": raw(b"")[:239],
    "bad cookie": raw(bytes([53, 1, 1, 255]), cookie=b"\x63\x82\x53\x64"),
    "no options at all": raw(b""),
    "no END": raw(bytes([53, 1, 1])),
    "only padding, no END": raw(bytes(60)),
    "option overruns the buffer": raw(bytes([53, 1, 1, 12, 200]) + b"short"),
    "option without its length byte": raw(bytes([53, 1, 1, 12])),
    "hlen 17": raw(bytes([53, 1, 1, 255]), hlen=17),
    "hlen 255": raw(bytes([53, 1, 1, 255]), hlen=255),
    "message type length 0": raw(bytes([53, 0, 255])),
    "message type length 2": raw(bytes([53, 2, 1, 1, 255])),
    "message type split in two": raw(bytes([53, 1, 1, 53, 1, 1, 255])),
    "overload length 2": raw(bytes([53, 1, 1, 52, 2, 1, 1, 255])),
    "overload value 0": raw(bytes([53, 1, 1, 52, 1, 0, 255])),
    "overload value 4": raw(bytes([53, 1, 1, 52, 1, 4, 255])),
    "overload inside file": raw(bytes([53, 1, 1, 52, 1, 1, 255]), file=bytes([52, 1, 2, 255])),
    "overloaded file overruns": raw(bytes([53, 1, 1, 52, 1, 1, 255]), file=bytes([12, 200])),
    "overloaded sname overruns": raw(bytes([53, 1, 1, 52, 1, 2, 255]), sname=bytes([12, 63])),
    "client-id length 0": raw(bytes([53, 1, 1, 61, 0, 255])),
    "client-id length 1": raw(bytes([53, 1, 1, 61, 1, 1, 255])),
    "requested IP length 3": raw(bytes([53, 1, 3, 50, 3, 1, 2, 3, 255])),
    "server id length 5": raw(bytes([53, 1, 3, 54, 5, 1, 2, 3, 4, 5, 255])),
    "lease time length 2": raw(bytes([53, 1, 3, 51, 2, 1, 2, 255])),
    "max size length 1": raw(bytes([53, 1, 1, 57, 1, 9, 255])),
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_bad_input_raises_malformed_packet(data):
    with pytest.raises(MalformedPacket):
        decode_message(data)


def test_every_truncation_and_random_mutation_raises_only_malformed_packet():
    valid = encode_message(discover(**{"61": b"\x01" + MAC, "12": b"guest", "55": b"\x01\x03"}))
    rng = random.Random(2131)
    samples = [valid[:n] for n in range(len(valid))]
    for _ in range(20000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(OPTIONS_OFFSET - 4, len(data))] = rng.randrange(256)
        samples.append(bytes(data))
    samples += [rng.randbytes(rng.randint(0, 600)) for _ in range(2000)]
    decoded = 0
    for data in samples:
        try:
            msg = decode_message(data)
        except MalformedPacket:
            continue
        decoded += 1
        # Whatever decodes, the typed accessors accept and the encoder can write back.
        for accessor in (msg.message_type, msg.requested_ip, msg.server_id, msg.lease_time,
                         msg.client_id, msg.max_message_size, msg.hostname):
            accessor()
        assert decode_message(encode_message(msg)) == msg
    assert decoded > 1000, "most single-byte mutations still decode"


def test_encoder_rejects_fields_of_the_wrong_size():
    with pytest.raises(ValueError):
        encode_message(DhcpMessage(op=1, xid=1, chaddr=MAC, hlen=16))
    with pytest.raises(ValueError):
        encode_message(DhcpMessage(op=1, xid=1, chaddr=MAC, ciaddr=b"\x01"))
    with pytest.raises(ValueError):
        encode_message(DhcpMessage(op=1, xid=1, chaddr=MAC, options={255: b"x"}))


# -- interop with scapy's BOOTP/DHCP ---------------------------------------------------------------


def test_decode_what_scapy_builds():
    pkt = BOOTP(op=1, xid=0x5EED, chaddr=MAC + bytes(10), flags=0x8000) / DHCP(options=[
        ("message-type", "request"), ("client_id", b"\x01" + MAC),
        ("requested_addr", "192.168.122.77"), ("server_id", "192.168.122.1"),
        ("param_req_list", [1, 3, 6, 15]), ("hostname", b"guest"), ("max_dhcp_size", 1500),
        "end"])
    msg = decode_message(bytes(pkt))
    assert (msg.op, msg.xid, msg.chaddr, msg.broadcast) == (1, 0x5EED, MAC, True)
    assert msg.message_type() == MessageType.REQUEST
    assert msg.requested_ip() == bytes([192, 168, 122, 77])
    assert msg.server_id() == bytes([192, 168, 122, 1])
    assert msg.parameter_request_list() == bytes([1, 3, 6, 15])
    assert msg.hostname() == b"guest" and msg.max_message_size() == 1500
    assert msg.client_id() == b"\x01" + MAC


def test_scapy_reads_what_we_encode():
    msg = DhcpMessage(op=2, xid=0x5EED, chaddr=MAC, yiaddr=bytes([192, 168, 122, 77]), options={
        53: bytes([MessageType.ACK]), 54: bytes([192, 168, 122, 1]),
        51: (3600).to_bytes(4, "big"), 1: bytes([255, 255, 255, 0]),
        3: bytes([192, 168, 122, 1]), 15: b"vm.internal", 61: b"\x01" + MAC})
    pkt = BOOTP(encode_message(msg))
    assert pkt.op == 2 and pkt.xid == 0x5EED and pkt.yiaddr == "192.168.122.77"
    assert pkt.chaddr[:6] == MAC
    options = dict(o for o in pkt[DHCP].options if isinstance(o, tuple))
    assert options["message-type"] == 5
    assert options["server_id"] == "192.168.122.1"
    assert options["lease_time"] == 3600
    assert options["subnet_mask"] == "255.255.255.0"
    assert options["router"] == "192.168.122.1"
    assert options["domain"] == b"vm.internal"
    assert options["client_id"] == b"\x01" + MAC
    assert "end" in pkt[DHCP].options
