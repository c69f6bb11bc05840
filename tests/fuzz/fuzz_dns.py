"""atheris harness: DNS messages decode or raise MalformedPacket; what decodes re-encodes to a
fixed point; TCP framing; the responder takes anything as a query or a reply without raising."""

from __future__ import annotations

import random

import atheris
from harness import run

with atheris.instrument_imports():
    from dhcp.dns import DnsResponder
    from dhcp.dns_actions import Forward
    from dhcp.dnsmsg import TcpFramer, decode_message, encode_message
    from wire.errors import MalformedPacket

RNG = random.Random(1)
RESPONDER = DnsResponder("vsw", {"web": "192.168.122.10"}, [("10.0.0.1", 53)],
                         subnet="192.168.122.0/24", rng=RNG.randrange, max_pending=64,
                         cache_size=64)
NOW = [0.0]


def one_input(data: bytes) -> None:
    NOW[0] += 0.5
    try:
        msg = decode_message(data)
        once = encode_message(msg)
        assert decode_message(once) == msg
        assert encode_message(decode_message(once)) == once
    except MalformedPacket:
        pass
    try:
        TcpFramer(4096).feed(data)
    except MalformedPacket:
        pass
    for action in RESPONDER.handle_query(data, ("192.168.122.50", 4000), "udp", NOW[0]):
        if isinstance(action, Forward):
            RESPONDER.sent_from(action.key, 5000)
            # the "upstream" answers with the fuzzer's bytes under the query's ID
            RESPONDER.handle_reply(action.payload[:2] + data[2:], ("10.0.0.1", 53), 5000, NOW[0])
    RESPONDER.handle_reply(data, ("10.0.0.1", 53), 5000, NOW[0])
    RESPONDER.expire(NOW[0])
    assert RESPONDER.pending_count() <= 64 and RESPONDER.cache_size_now() <= 64


if __name__ == "__main__":
    run(one_input)
