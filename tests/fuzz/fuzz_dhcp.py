"""atheris harness: DHCP messages decode or raise MalformedPacket; what decodes re-encodes to a
fixed point; the server answers or raises MalformedPacket (its documented error)."""

from __future__ import annotations

from ipaddress import IPv4Address

import atheris
from harness import run

with atheris.instrument_imports():
    from dhcp.message import MAGIC_COOKIE, Option, decode_message, encode_message
    from dhcp.server import DhcpConfig, DhcpServer
    from wire.errors import MalformedPacket

NET = int(IPv4Address("192.168.122.0"))
SERVER = DhcpServer(DhcpConfig(server_ip=NET + 1, network=NET, prefix=24, range_first=NET + 2,
                               range_last=NET + 254, router=NET + 1, dns_servers=(NET + 1,),
                               domain="vm.internal", mtu=1400))
NOW = [0.0]


def one_input(data: bytes) -> None:
    if data[:1] == b"\x01":  # a header of the next 236 bytes, the magic cookie, then options
        data = data[1:237].ljust(236, b"\0") + MAGIC_COOKIE + data[237:]
    try:
        msg = decode_message(data)
    except MalformedPacket:
        return
    for read in (msg.message_type, msg.requested_ip, msg.server_id, msg.lease_time,
                 msg.hostname, msg.client_id, msg.max_message_size):
        read()
    if Option.OVERLOAD not in msg.options:
        once = encode_message(msg)
        assert decode_message(once) == msg
        assert encode_message(decode_message(once)) == once
    NOW[0] += 1.0
    try:
        for reply in SERVER.handle(data, msg.chaddr[:6].ljust(6, b"\0"), bytes(4), NOW[0]):
            decode_message(reply.payload)
    except MalformedPacket:
        pass
    SERVER.pop_events()
    assert len(SERVER.leases()) <= 253


if __name__ == "__main__":
    run(one_input)
