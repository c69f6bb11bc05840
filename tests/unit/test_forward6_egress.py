"""Forwards to IPv6 guests in the host uplink (nat.egress.forwards), on the loopback: what the
guest is sent (an IPv6 SYN with an IPv6 MSS, IPv6 datagrams), from whom (the module's rule:
IPv4 and loopback peers appear as the gateway's IPv6 address), the guest's answers leaving by
the listening socket, and how ``show`` writes 16-byte addresses."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest

from nat.egress import HostEgress
from wire.ipv6 import decode_ipv6, decode_udp6, encode_ipv6, encode_udp6
from wire.packets import ETH_P_IPV6, PROTO_TCP, PROTO_UDP, encode_ethernet
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN

GW4 = socket.inet_aton("10.0.2.2")
GW_MAC = bytes.fromhex("525400000001")
GUEST_MAC = bytes.fromhex("525400000002")
GW6 = socket.inet_pton(socket.AF_INET6, "fd42:0:0:1::1")
GUEST6 = socket.inet_pton(socket.AF_INET6, "fd42:0:0:1::10")
L3 = VNET_HDR_LEN + 14


def free_port(family: int, kind: int, host: str) -> int:
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class Rig:
    def __init__(self, gateway6: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.out: list[bytes] = []  # by emit: the router addresses them
        self.delivered: list[bytes] = []  # already addressed
        self.egress = HostEgress(self.loop, self.out.extend, self.delivered.extend, GW4, GW4,
                                 mtu=1500, gateway6=GW6 if gateway6 else None)

    def wait(self, what: str, rounds: int = 1000) -> None:
        """Run the loop until something was sent to a guest (at most ~10 s: a bound for a
        loaded machine, not a timing assertion)."""
        for _ in range(rounds):
            if self.out:
                return
            self.loop.run_until_complete(asyncio.sleep(0.01))
        raise TimeoutError(what)

    def close(self) -> None:
        self.egress.close()
        self.loop.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    rig.close()


def test_a_tcp_forward_to_an_ipv6_guest_sends_it_an_ipv6_syn_from_the_gateway(rig: Rig):
    port = free_port(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1")
    assert rig.egress.add_forward(PROTO_TCP, range(port, port + 1), "127.0.0.1", GUEST6, 22) == 1
    assert rig.egress.forward_rows() == [{"proto": "tcp", "port": str(port),
                                          "listen": "127.0.0.1", "to": "[fd42:0:0:1::10]:22"}]
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        rig.wait("the SYN to the guest")
        (syn,) = rig.out
        assert syn[VNET_HDR_LEN:VNET_HDR_LEN + 12] in (bytes(12), b"\xff" * 12)
        assert not rig.delivered, "the guest's MAC is not known yet: the router finds it"
        assert syn[VNET_HDR_LEN + 12:L3] == struct.pack("!H", ETH_P_IPV6)
        ip = decode_ipv6(syn, L3)
        assert (ip.src, ip.dst, ip.proto) == (GW6, GUEST6, PROTO_TCP), "an IPv4 peer: the gateway"
        sport, dport = struct.unpack_from("!HH", syn, ip.start)
        assert (sport, dport) == (client.getsockname()[1], 22)
        assert syn[ip.start + 13] == 0x02  # SYN
        options = syn[ip.start + 20:ip.start + (syn[ip.start + 12] >> 4) * 4]
        assert options[:4] == struct.pack("!BBH", 2, 4, 1500 - 60), "the MSS of an IPv6 link"
        (row,) = [r for r in rig.egress.flow_rows(rig.loop.time()) if r["proto"] == "tcp"]
        assert row["kind"] == "host-forward"
        assert row["original"] == f"[fd42:0:0:1::10]:22 -> [fd42:0:0:1::1]:{sport}"
        assert row["reply"] == f"[fd42:0:0:1::1]:{sport} -> 127.0.0.1:{port}"
    finally:
        client.close()


def test_an_ipv6_peer_appears_as_itself_and_the_hosts_loopback_as_the_gateway(rig: Rig):
    forwards = rig.egress.forwarding
    assert forwards.seen(GUEST6, "fd0e:97::2") == socket.inet_pton(socket.AF_INET6, "fd0e:97::2")
    for peer in ("::1", "127.0.0.1", "192.0.2.7", "::ffff:192.0.2.7", "fe80::1%lo"):
        assert forwards.seen(GUEST6, peer) == GW6, peer
    assert forwards.seen(GW4, "192.0.2.7") == socket.inet_aton("192.0.2.7"), "IPv4 as before"


def test_a_udp_forward_to_an_ipv6_guest_and_its_answer_by_the_listening_socket(rig: Rig):
    port = free_port(socket.AF_INET6, socket.SOCK_DGRAM, "::1")
    rig.egress.add_forward(PROTO_UDP, range(port, port + 1), "::1", GUEST6, 53)
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.settimeout(5)
    try:
        client.sendto(b"question", ("::1", port))
        rig.wait("the datagram to the guest")
        (datagram,) = rig.out
        assert datagram[VNET_HDR_LEN + 12:L3] == struct.pack("!H", ETH_P_IPV6)
        ip = decode_ipv6(datagram, L3)
        assert (ip.src, ip.dst, ip.proto) == (GW6, GUEST6, PROTO_UDP), "::1: the gateway"
        sport, dport, payload = decode_udp6(datagram, ip)
        assert (sport, dport, payload) == (client.getsockname()[1], 53, b"question")
        # the guest answers the peer it saw: out by the forward's socket, not a new one
        answer = NO_OFFLOAD + encode_ethernet(GW_MAC, GUEST_MAC, ETH_P_IPV6, encode_ipv6(
            GUEST6, GW6, PROTO_UDP, encode_udp6(GUEST6, GW6, 53, sport, b"answer")))
        assert rig.egress.v6 is not None
        assert rig.egress.v6.from_guest(answer, decode_ipv6(answer, L3), rig.loop.time())
        data, source = client.recvfrom(100)
        assert (data, source[1]) == (b"answer", port)
        assert not rig.egress.v6.flows.udp, "no IPv6 UDP mapping was opened for it"
        (row,) = [r for r in rig.egress.flow_rows(rig.loop.time()) if r["proto"] == "udp"]
        assert row["kind"] == "host-forward" and row["packets"] == [1, 1]
        assert row["original"] == f"[::1]:{sport} -> [::1]:{port}"
        assert row["reply"] == f"[fd42:0:0:1::10]:53 -> [fd42:0:0:1::1]:{sport}"
    finally:
        client.close()


def test_without_guest_ipv6_a_forward_to_an_ipv6_guest_is_refused():
    rig = Rig(gateway6=False)
    try:
        with pytest.raises(ValueError, match="no IPv6 prefix"):
            rig.egress.add_forward(PROTO_TCP, range(2222, 2223), "127.0.0.1", GUEST6, 22)
        assert rig.egress.forward_rows() == []
    finally:
        rig.close()


def test_a_peer_reusing_its_port_gets_a_new_connection_and_the_old_one_is_reset(rig: Rig):
    port = free_port(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1")
    rig.egress.add_forward(PROTO_TCP, range(port, port + 1), "127.0.0.1", GUEST6, 22)
    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    first.bind(("127.0.0.1", 0))
    peer_port = first.getsockname()[1]
    first.connect(("127.0.0.1", port))
    rig.wait("the first SYN")
    rig.out.clear()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    first.close()  # RST: no TIME_WAIT, the port is free at once
    again = socket.socket()
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", peer_port))
    again.connect(("127.0.0.1", port))
    try:
        rig.wait("the new SYN")
        for _ in range(100):  # the accept and the reset may come in separate wake-ups
            if any(p[L3 + 40 + 13] & 0x02 for p in rig.out):
                break
            rig.loop.run_until_complete(asyncio.sleep(0.01))
        flags = [p[L3 + 40 + 13] for p in rig.out if p[L3 + 6] == PROTO_TCP]
        assert any(f & 0x02 for f in flags), "a SYN toward the guest for the new connection"
        assert rig.egress.counters["drop-forward-busy"] == 0
        (row,) = [r for r in rig.egress.flow_rows(rig.loop.time())
                  if r["proto"] == "tcp" and not r["state"].startswith("closed")]
        assert row["kind"] == "host-forward"
    finally:
        again.close()
