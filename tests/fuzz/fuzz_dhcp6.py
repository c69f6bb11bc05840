"""atheris harness: DHCPv6 messages and IA_NA options decode or raise MalformedPacket; the
server and the client take anything without raising; leases stay within the range."""

from __future__ import annotations

import random
from ipaddress import IPv6Address

import atheris
from harness import run

with atheris.instrument_imports():
    from dhcp.client6 import Dhcp6Client
    from dhcp.dhcp6 import Dhcp6Config, Dhcp6Server, decode_ia_na, decode_message6, option
    from wire.errors import MalformedPacket

FIRST, LAST = int(IPv6Address("fd42::100")), int(IPv6Address("fd42::1ff"))
SERVER = Dhcp6Server(Dhcp6Config(bytes.fromhex("525400000001"), IPv6Address("fd42::1").packed,
                                 FIRST, LAST, int(IPv6Address("fd42::")), 64, {},
                                 domain="six.internal", lease_time=60))
CLIENT = Dhcp6Client(bytes.fromhex("525400000010"), rng=random.Random(1))
CLIENT.start(0.0)
NOW = [0.0]


def one_input(data: bytes) -> None:
    NOW[0] += 1.0
    try:
        msg = decode_message6(data)
        assert bytes([msg.kind]) + msg.transaction + b"".join(
            option(c, d) for c, d in msg.options) == data
        msg.ia_nas()
        for _, body in msg.options:
            decode_ia_na(body)
    except MalformedPacket:
        pass
    answer = SERVER.handle(data, bytes.fromhex("525400000010"), NOW[0])
    if answer is not None:
        decode_message6(answer)
    SERVER.expire(NOW[0])
    assert len(SERVER.leases()) <= LAST - FIRST + 1
    CLIENT.receive(data, NOW[0])
    CLIENT.tick(NOW[0])


if __name__ == "__main__":
    run(one_input)
