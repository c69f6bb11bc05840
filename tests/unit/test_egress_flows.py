"""nat.egress.flows: the host uplink's UDP and echo flows with a hand-advanced clock."""

from nat.egress.flows import PEERS_PER_MAPPING, FlowTable

GUEST, DNS, OTHER = bytes([10, 0, 0, 5]), bytes([192, 0, 2, 53]), bytes([198, 51, 100, 7])


def test_address_dependent_filtering_lets_in_only_hosts_the_guest_sent_to():
    """RFC 4787 REQ-8: a mapping answers only hosts its guest talked to."""
    table = FlowTable(udp_timeout=300)
    flow = table.add_udp(GUEST, 40000, "socket", now=0)
    table.udp_out(flow, DNS, 53, 40, now=0)
    assert table.udp_in(flow, DNS, 100) is True
    assert table.udp_in(flow, OTHER, 100) is False
    assert (flow.packets, flow.bytes) == ([1, 1], [40, 100]), "the refused one is not counted"


def test_endpoint_independent_filtering_lets_anyone_answer():
    table = FlowTable(endpoint_independent=True)
    flow = table.add_udp(GUEST, 40000, "socket", now=0)
    assert table.udp_in(flow, OTHER, 10) is True


def test_a_mapping_remembers_a_bounded_number_of_peers():
    table = FlowTable()
    flow = table.add_udp(GUEST, 40000, "socket", now=0)
    for n in range(PEERS_PER_MAPPING + 10):
        table.udp_out(flow, n.to_bytes(4, "big"), 53, 1, now=0)
    assert len(flow.peers) == PEERS_PER_MAPPING
    assert flow.last_peer == ((PEERS_PER_MAPPING + 9).to_bytes(4, "big"), 53)


def test_flows_expire_after_their_last_packet_and_hand_back_their_sockets():
    """Rule 3: traffic either way keeps a UDP flow; an echo flow lives on its requests."""
    table = FlowTable(udp_timeout=300, icmp_timeout=60)
    udp = table.add_udp(GUEST, 40000, "udp-socket", now=0)
    echo = table.add_echo(GUEST, 7, "ping-socket", 5000, now=0)
    table.udp_answered(udp, now=250)
    assert table.expire(now=60) == [echo]
    assert table.echo_by_host_ident == {} and len(table) == 1
    assert table.expire(now=549) == [] and table.expire(now=550) == [udp]
    assert len(table) == 0


def test_raw_socket_identifiers_are_unique_among_live_flows_and_wrap():
    table = FlowTable()
    table._next_ident = 0xFFFF
    first = table.add_echo(GUEST, 1, None, None, now=0)
    second = table.add_echo(GUEST, 2, None, None, now=0)
    assert (first.host_ident, second.host_ident) == (0xFFFF, 1), "0 is never used"
    table._next_ident = 0xFFFF  # every identifier from here on is taken by a live flow once
    third = table.add_echo(GUEST, 3, None, None, now=0)
    assert third.host_ident == 2
    assert table.echo_by_host_ident[2] is third


def test_echo_replies_only_from_hosts_the_guest_pinged():
    table = FlowTable()
    flow = table.add_echo(GUEST, 7, None, None, now=0)
    table.echo_out(flow, DNS, 56, now=0)
    assert table.echo_in(flow, OTHER, 56) is False
    assert table.echo_in(flow, DNS, 56) is True
    assert flow.packets == [1, 1]


def test_clear_hands_back_every_flow():
    table = FlowTable()
    udp = table.add_udp(GUEST, 1, "u", now=0)
    echo = table.add_echo(GUEST, 2, "e", 9, now=0)
    assert table.clear() == [udp, echo] and len(table) == 0 and table.echo_by_host_ident == {}


def test_ipv6_destinations_the_host_uplink_never_forwards():
    import socket

    from nat.egress.v6 import forwardable6

    def v6(text: str) -> bytes:
        return socket.inet_pton(socket.AF_INET6, text)

    assert forwardable6(v6("2001:db8::1")) and forwardable6(v6("fd0e:96::2"))
    for never in ("ff02::1", "fe80::1", "::", "::1", "::ffff:10.0.0.1"):
        assert not forwardable6(v6(never)), never
