"""Conntrack: mappings, filtering, hairpinning, forwards, timeouts and limits, on a hand clock."""

import gc
import random
import tracemalloc

import pytest

from nat.conntrack import Conntrack, Forward, Timeouts
from nat.fragments import Fragments
from nat.verdicts import NO_MAPPING, Drop, Translation
from wire.packets import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from wire.tcp import ACK, FIN, RST, SYN

EXT = bytes([203, 0, 113, 1])
A = bytes([192, 168, 122, 10])
B = bytes([192, 168, 122, 11])
C = bytes([192, 168, 122, 12])
R1 = bytes([198, 51, 100, 1])
R2 = bytes([198, 51, 100, 2])
UDP, TCP, ICMP = PROTO_UDP, PROTO_TCP, PROTO_ICMP


def udp_out(ct: Conntrack, src: bytes, sport: int, dst: bytes, dport: int, now: float = 0.0):
    return ct.outbound(UDP, src, sport, dst, dport, 0, 100, now)


def udp_in(ct: Conntrack, src: bytes, sport: int, dport: int, now: float = 0.0):
    return ct.inbound(UDP, src, sport, EXT, dport, 0, 100, now)


def tcp_open(ct: Conntrack, guest: bytes, gport: int, remote: bytes, rport: int,
             now: float = 0.0) -> Translation:
    """A three-way handshake from a guest; returns the SNAT translation."""
    out = ct.outbound(TCP, guest, gport, remote, rport, SYN, 60, now)
    assert isinstance(out, Translation)
    assert isinstance(ct.inbound(TCP, remote, rport, EXT, out.sport, SYN | ACK, 60, now),
                      Translation)
    assert ct.outbound(TCP, guest, gport, remote, rport, ACK, 52, now) == out
    return out


def state_of(ct: Conntrack, now: float = 0.0) -> list[str]:
    return [row.state for row in ct.entries(now)]


# --- mapping: endpoint-independent, port preservation, no overloading ---------------------------


def test_translation_reads_as_the_reply_tuple_reversed():
    ct = Conntrack(EXT)
    out = udp_out(ct, A, 5000, R1, 53)
    # The packet leaves from EXT:5000 to R1:53; as a tuple it is the flow's reply key.
    assert out == Translation(UDP, R1, 53, EXT, 5000)
    assert (out.src, out.sport, out.dst, out.dport) == (EXT, 5000, R1, 53)
    assert out == (UDP, R1, 53, EXT, 5000)


def test_same_external_port_for_every_destination():
    # RFC 4787 REQ-1: one mapping per guest endpoint, whatever the destination.
    ct = Conntrack(EXT)
    first = udp_out(ct, A, 5000, R1, 53)
    second = udp_out(ct, A, 5000, R2, 123)
    third = ct.outbound(TCP, A, 5000, R2, 443, SYN, 60, 0.0)
    assert isinstance(first, Translation) and isinstance(second, Translation)
    assert (first.src, first.sport) == (second.src, second.sport) == (EXT, 5000)
    assert isinstance(third, Translation) and third.sport == 5000  # TCP has its own ports


def test_port_preserved_when_free_else_next_free_in_range():
    ct = Conntrack(EXT)
    assert udp_out(ct, A, 5000, R1, 53).sport == 5000  # preserved
    assert udp_out(ct, B, 5000, R1, 53).sport == 1024  # taken by A: first free of the range
    assert udp_out(ct, C, 5000, R1, 53).sport == 1025  # the next one
    assert udp_out(ct, C, 53, R1, 53).sport == 1026  # 53 is outside 1024-65535


def test_range_exhaustion_then_a_port_frees():
    ct = Conntrack(EXT, port_range=(2000, 2001))
    assert udp_out(ct, A, 2000, R1, 53).sport == 2000
    assert udp_out(ct, B, 2000, R1, 53).sport == 2001
    full = udp_out(ct, C, 2000, R1, 53)
    # RFC 5508 REQ-8: no session for lack of resources -> ICMP 3/13 to the sender.
    assert full == Drop("ports-exhausted", (3, 13))
    assert ct.stats["drop:ports-exhausted"] == 1
    assert ct.expire(300.0) == 2  # both flows idle 5 minutes: mappings released
    assert udp_out(ct, C, 2000, R1, 53, now=300.0).sport == 2000


def test_never_two_endpoints_on_one_port():
    """Random churn: at every step each external port belongs to one guest endpoint."""
    rng = random.Random(4787)
    ct = Conntrack(EXT, port_range=(1024, 1100))
    guests = [bytes([10, 0, 0, n]) for n in range(1, 6)]
    now = 0.0
    for _ in range(3000):
        now += rng.choice((0.0, 1.0, 20.0))
        ct.expire(now)
        udp_out(ct, rng.choice(guests), rng.randrange(1000, 1200), R1, rng.randrange(1, 4), now)
        owner: dict[int, tuple[bytes, int]] = {}
        for row in ct.entries(now):
            endpoint = (row.original[1], row.original[2])
            assert owner.setdefault(row.reply[4], endpoint) == endpoint
        assert len(set(owner.values())) == len(owner)


# --- filtering ---------------------------------------------------------------------------------


def test_default_filtering_is_address_dependent():
    ct = Conntrack(EXT)
    assert ct.filtering == "address-dependent"
    udp_out(ct, A, 5000, R1, 3478)
    # R1 may answer from any port (RFC 4787 section 5, address-dependent filtering) ...
    assert udp_in(ct, R1, 9999, 5000) == Translation(UDP, A, 5000, R1, 9999)
    # ... an address A never sent to may not.
    assert udp_in(ct, R2, 3478, 5000) == Drop("filtered")


def test_endpoint_independent_filtering_admits_anyone_on_a_mapping():
    ct = Conntrack(EXT, filtering="endpoint-independent")
    udp_out(ct, A, 5000, R1, 3478)
    assert udp_in(ct, R2, 3478, 5000) == Translation(UDP, A, 5000, R2, 3478)
    assert udp_in(ct, R2, 3478, 5001) == NO_MAPPING  # no mapping on that port


def test_address_dependent_permit_ends_with_the_flows_to_that_address():
    ct = Conntrack(EXT)
    udp_out(ct, A, 5000, R1, 53, now=0.0)
    udp_out(ct, A, 5000, R2, 53, now=200.0)
    ct.expire(300.0)  # the flow to R1 is gone; the one to R2 keeps the mapping
    assert udp_in(ct, R1, 53, 5000, now=300.0) == Drop("filtered")
    assert isinstance(udp_in(ct, R2, 99, 5000, now=300.0), Translation)


def test_address_dependent_permits_match_the_live_flows():
    """Random churn of one mapping's flows: it admits exactly the addresses it has flows to."""
    rng = random.Random(8)
    ct = Conntrack(EXT, port_range=(5000, 5000))
    remotes = [bytes([198, 51, 100, n]) for n in range(1, 5)]
    now = 0.0
    for _ in range(2000):
        now += rng.choice((1.0, 30.0, 100.0))
        ct.expire(now)
        udp_out(ct, A, 5000, rng.choice(remotes), rng.randrange(1, 4), now)
        live = {row.original[3] for row in ct.entries(now)}
        mapping = ct.mappings.by_port[UDP][5000]
        assert {r for r in remotes if mapping.has_flow_to(r)} == live


def test_only_a_syn_opens_a_tcp_flow_from_outside_and_icmp_never():
    ct = Conntrack(EXT, filtering="endpoint-independent")
    udp_out(ct, A, 5000, R1, 53)
    tcp_open(ct, A, 6000, R1, 80)
    assert ct.inbound(TCP, R2, 1234, EXT, 6000, ACK, 52, 0.0) == Drop("not-syn")
    assert ct.inbound(TCP, R2, 1234, EXT, 6000, SYN | FIN, 52, 0.0) == Drop("not-syn")
    assert isinstance(ct.inbound(TCP, R2, 1234, EXT, 6000, SYN, 60, 0.0), Translation)
    assert ct.inbound(ICMP, R2, 7, EXT, 7, 0, 84, 0.0) == NO_MAPPING  # echo request from outside
    assert ct.inbound(UDP, R2, 53, R1, 5000, 0, 84, 0.0) == NO_MAPPING  # not our address


def test_outbound_tcp_flow_starts_with_a_syn():
    ct = Conntrack(EXT)
    assert ct.outbound(TCP, A, 40000, R1, 80, ACK, 52, 0.0) == Drop("not-syn")
    assert ct.outbound(TCP, A, 40000, R1, 80, RST, 40, 0.0) == Drop("not-syn")
    assert len(ct) == 0


def test_icmp_echo_uses_its_identifier_as_both_ports():
    ct = Conntrack(EXT)
    out = ct.outbound(ICMP, A, 77, R1, 77, 0, 84, 0.0)
    assert out == Translation(ICMP, R1, 77, EXT, 77)
    clash = ct.outbound(ICMP, B, 77, R1, 77, 0, 84, 0.0)  # same identifier, other guest
    assert clash == Translation(ICMP, R1, 0, EXT, 0)  # the identifier space starts at 0
    assert ct.inbound(ICMP, R1, 0, EXT, 0, 0, 84, 1.0) == Translation(ICMP, B, 77, R1, 77)
    assert ct.inbound(ICMP, R1, 77, EXT, 77, 0, 84, 1.0) == Translation(ICMP, A, 77, R1, 77)


# --- hairpinning -------------------------------------------------------------------------------


def test_hairpin_reaches_the_other_guest_from_the_external_address():
    # RFC 4787 REQ-9: B sends to A's mapping and gets there from its own mapping (REQ-9a).
    ct = Conntrack(EXT)
    udp_out(ct, A, 4000, R1, 3478)  # A's mapping: EXT:4000
    udp_out(ct, B, 6000, R1, 3478)  # B's mapping: EXT:6000
    there = udp_out(ct, B, 6000, EXT, 4000)
    assert there == Translation(UDP, A, 4000, EXT, 6000)
    back = udp_out(ct, A, 4000, EXT, 6000)  # A answers B's mapped endpoint
    assert back == Translation(UDP, B, 6000, EXT, 4000)
    hairpins = [row for row in ct.entries(0.0) if row.kind == "hairpin"]
    assert len(hairpins) == 1 and hairpins[0].packets_reply == 1


def test_hairpin_tcp_to_a_forward():
    ct = Conntrack(EXT)
    ct.add_forward(TCP, range(8080, 8081), A, 80)
    there = ct.outbound(TCP, B, 50000, EXT, 8080, SYN, 60, 0.0)
    assert there == Translation(TCP, A, 80, EXT, 50000)
    assert ct.outbound(TCP, A, 80, EXT, 50000, SYN | ACK, 60, 0.0) == (TCP, B, 50000, EXT, 8080)
    assert state_of(ct) == ["ESTABLISHED"]


def test_hairpin_to_an_unmapped_port_is_dropped():
    ct = Conntrack(EXT)
    assert udp_out(ct, A, 4000, EXT, 4000) == NO_MAPPING
    assert ct.outbound(ICMP, A, 1, EXT, 1, 0, 84, 0.0) == NO_MAPPING  # pings are the router's


# --- port forwards -------------------------------------------------------------------------------


def test_forward_in_and_out_then_removed_without_dropping_the_flow():
    ct = Conntrack(EXT)
    forward = ct.add_forward(TCP, range(2222, 2223), A, 22)
    assert ct.forwards() == [forward] == [Forward(TCP, range(2222, 2223), A, 22)]
    syn = ct.inbound(TCP, R1, 40000, EXT, 2222, SYN, 60, 0.0)
    assert syn == Translation(TCP, A, 22, R1, 40000)
    answer = ct.outbound(TCP, A, 22, R1, 40000, SYN | ACK, 60, 0.0)
    assert answer == Translation(TCP, R1, 40000, EXT, 2222)
    assert ct.remove_forward(TCP, range(2222, 2223)) == forward
    assert ct.forwards() == []
    # The open connection goes on both ways, and stays established for hours.
    assert ct.inbound(TCP, R1, 40000, EXT, 2222, ACK, 52, 10.0) == syn
    assert ct.outbound(TCP, A, 22, R1, 40000, ACK, 1500, 3600.0) == answer
    assert ct.expire(3600.0 + 7439.0) == 0
    # A new connection from elsewhere is no longer forwarded (address-dependent filtering).
    assert ct.inbound(TCP, R2, 1, EXT, 2222, SYN, 60, 3700.0) == Drop("filtered")
    ct.expire(3600.0 + 7440.0)
    assert len(ct) == 0
    assert ct.inbound(TCP, R1, 40001, EXT, 2222, SYN, 60, 20000.0) == NO_MAPPING


def test_forwarded_endpoint_uses_the_forward_port_going_out():
    # The forward is the endpoint's static mapping (RFC 4787 REQ-1 holds for it too).
    ct = Conntrack(EXT)
    ct.add_forward(UDP, range(5060, 5061), A, 5070)
    assert udp_out(ct, A, 5070, R1, 5060) == Translation(UDP, R1, 5060, EXT, 5060)


def test_forward_of_a_port_range():
    ct = Conntrack(EXT)
    ct.add_forward(UDP, range(8000, 8003), A, 9000)
    assert udp_in(ct, R1, 1, 8001) == Translation(UDP, A, 9001, R1, 1)
    assert udp_in(ct, R1, 1, 8002) == Translation(UDP, A, 9002, R1, 1)
    assert udp_in(ct, R1, 1, 8003) == NO_MAPPING


def test_forward_conflicts_are_refused():
    ct = Conntrack(EXT)
    ct.add_forward(TCP, range(8000, 8010), A, 80)
    with pytest.raises(ValueError, match="overlap"):
        ct.add_forward(TCP, range(8009, 8011), B, 80)
    ct.add_forward(UDP, range(8009, 8011), B, 80)  # UDP ports are another space
    udp_out(ct, B, 5000, R1, 53)  # B:5000 holds UDP 5000
    with pytest.raises(ValueError, match="another guest endpoint"):
        ct.add_forward(UDP, range(5000, 5001), C, 5000)
    ct.add_forward(UDP, range(5000, 5001), B, 5000)  # its own endpoint: becomes static
    for bad in (range(0, 2), range(65535, 65537), range(10, 20, 2), range(5, 5)):
        with pytest.raises(ValueError):
            ct.add_forward(TCP, bad, A, 80)
    with pytest.raises(ValueError):
        ct.add_forward(ICMP, range(1, 2), A, 1)
    with pytest.raises(ValueError):
        ct.add_forward(TCP, range(9000, 9010), A, 65530)
    with pytest.raises(KeyError):
        ct.remove_forward(TCP, range(8000, 8001))


def test_forward_ports_are_never_handed_out_to_mappings():
    ct = Conntrack(EXT, port_range=(3000, 3001))
    ct.add_forward(UDP, range(3000, 3001), A, 53)
    assert udp_out(ct, B, 3000, R1, 53).sport == 3001
    assert udp_out(ct, C, 3000, R1, 53) == Drop("ports-exhausted", (3, 13))
    ct.remove_forward(UDP, range(3000, 3001))
    assert udp_out(ct, C, 3000, R1, 53).sport == 3000


# --- timeouts ----------------------------------------------------------------------------------


def test_tcp_half_open_is_transitory():
    ct = Conntrack(EXT)
    ct.outbound(TCP, A, 40000, R1, 80, SYN, 60, 0.0)
    assert state_of(ct) == ["SYN_SENT"]
    assert ct.next_deadline() == 240.0
    assert ct.expire(239.0) == 0
    assert ct.expire(240.0) == 1  # RFC 5382 REQ-5: transitory, 4 minutes


def test_tcp_established_lasts_two_hours_four_minutes():
    ct = Conntrack(EXT)
    tcp_open(ct, A, 40000, R1, 80)
    assert state_of(ct) == ["ESTABLISHED"]
    assert ct.expire(241.0) == 0
    assert ct.next_deadline() == 7440.0
    assert ct.expire(7439.0) == 0
    assert ct.expire(7440.0) == 1


def test_tcp_refresh_moves_the_deadline_lazily():
    ct = Conntrack(EXT)
    out = tcp_open(ct, A, 40000, R1, 80)
    ct.inbound(TCP, R1, 80, EXT, out.sport, ACK, 1500, 5000.0)
    assert ct.expire(7440.0) == 0  # the timer fires, finds the flow seen since, re-arms
    assert ct.next_deadline() == 5000.0 + 7440.0
    assert ct.entries(7440.0)[0].seconds_left == 5000.0


def test_tcp_half_closed_stays_established_then_both_fins_are_transitory():
    # RFC 7857 section 2, Figure 1: one FIN keeps the established timeout.
    ct = Conntrack(EXT)
    out = tcp_open(ct, A, 40000, R1, 80)
    ct.outbound(TCP, A, 40000, R1, 80, FIN | ACK, 52, 10.0)
    assert state_of(ct) == ["FIN_WAIT"]
    assert ct.expire(10.0 + 241.0) == 0
    ct.inbound(TCP, R1, 80, EXT, out.sport, FIN | ACK, 52, 300.0)
    assert state_of(ct) == ["TIME_WAIT"]
    assert ct.next_deadline() == 540.0  # armed earlier for the shorter timeout
    assert ct.expire(539.0) == 0
    assert ct.expire(540.0) == 1


def test_tcp_rst_is_transitory_and_a_later_segment_revives_the_flow():
    # RFC 7857 2.2: a RST may be forged; keep the flow 4 minutes.
    ct = Conntrack(EXT)
    out = tcp_open(ct, A, 40000, R1, 80)
    ct.inbound(TCP, R1, 80, EXT, out.sport, RST, 40, 100.0)
    assert state_of(ct) == ["CLOSE"]
    assert ct.next_deadline() == 340.0
    ct.outbound(TCP, A, 40000, R1, 80, ACK, 52, 200.0)  # the connection was alive after all
    assert state_of(ct) == ["ESTABLISHED"]
    assert ct.expire(440.0) == 0
    assert ct.expire(200.0 + 7440.0) == 1


def test_tcp_reopened_after_close_with_the_same_tuple():
    ct = Conntrack(EXT)
    out = tcp_open(ct, A, 40000, R1, 80)
    ct.outbound(TCP, A, 40000, R1, 80, FIN | ACK, 52, 1.0)
    ct.inbound(TCP, R1, 80, EXT, out.sport, FIN | ACK, 52, 1.0)
    assert ct.outbound(TCP, A, 40000, R1, 80, SYN, 60, 30.0) == out
    assert state_of(ct, 30.0) == ["SYN_SENT"]


def test_tcp_simultaneous_open():
    # RFC 5382 REQ-2a: both sides send a SYN; the remote's arrives as the reply direction.
    ct = Conntrack(EXT)
    out = ct.outbound(TCP, A, 40000, R1, 5000, SYN, 60, 0.0)
    assert isinstance(out, Translation)
    assert ct.inbound(TCP, R1, 5000, EXT, 40000, SYN, 60, 0.1) == (TCP, A, 40000, R1, 5000)
    assert state_of(ct) == ["ESTABLISHED"]


def test_udp_and_icmp_timeouts_refreshed_by_replies():
    ct = Conntrack(EXT)
    udp_out(ct, A, 5000, R1, 53, now=0.0)
    ct.outbound(ICMP, A, 9, R1, 9, 0, 84, 0.0)
    assert ct.next_deadline() == 60.0
    assert ct.expire(60.0) == 1  # ICMP echo: 60 s (RFC 5508 REQ-2)
    udp_in(ct, R1, 53, 5000, now=250.0)  # inbound refresh
    assert ct.expire(301.0) == 0
    assert ct.expire(550.0) == 1  # UDP: 5 minutes since the last packet (RFC 4787 REQ-5)
    assert ct.next_deadline() is None


def test_timeouts_are_configurable_and_validated():
    ct = Conntrack(EXT, timeouts=Timeouts(udp=120.0))
    udp_out(ct, A, 5000, R1, 53)
    assert ct.expire(120.0) == 1
    with pytest.raises(ValueError):
        Timeouts(icmp=0.0)


def test_constructor_is_validated():
    for kwargs in ({"port_range": (0, 10)}, {"port_range": (10, 5)}, {"max_entries": 0},
                   {"filtering": "port-dependent"}):
        with pytest.raises(ValueError):
            Conntrack(EXT, **kwargs)
    with pytest.raises(ValueError):
        Conntrack(b"\x01\x02\x03")
    Conntrack(bytes(16))  # IPv6-ready: 16-byte addresses are accepted


# --- limits ------------------------------------------------------------------------------------


def test_full_table_early_drops_the_oldest_unreplied_flow():
    ct = Conntrack(EXT, max_entries=3)
    replied = udp_out(ct, A, 1, R1, 53)
    udp_in(ct, R1, 53, replied.sport)
    udp_out(ct, A, 2, R1, 53)
    udp_out(ct, A, 3, R1, 53)
    assert isinstance(udp_out(ct, A, 4, R1, 53), Translation)
    assert ct.stats["early-drop"] == 1
    assert sorted(row.original[2] for row in ct.entries(0.0)) == [1, 3, 4]
    assert udp_in(ct, R1, 53, replied.sport) == (UDP, A, 1, R1, 53)


def test_full_table_of_replied_flows_refuses_new_ones_with_3_13():
    ct = Conntrack(EXT, max_entries=2)
    ct.add_forward(TCP, range(22, 23), B, 22)
    for port in (5001, 5002):
        out = udp_out(ct, A, port, R1, 53)
        udp_in(ct, R1, 53, out.sport)
    assert udp_out(ct, A, 5003, R1, 53) == Drop("table-full", (3, 13))
    assert ct.inbound(TCP, R2, 1, EXT, 22, SYN, 60, 0.0) == Drop("table-full", (3, 13))
    assert ct.stats["drop:table-full"] == 2
    assert udp_out(ct, A, 5001, R1, 53) == (UDP, R1, 53, EXT, 5001)  # existing flows go on
    assert udp_in(ct, R1, 53, 5002) == (UDP, A, 5002, R1, 53)


def test_conntrack_flood_stays_bounded_and_spares_established_flows():
    ct = Conntrack(EXT, max_entries=1000)
    kept = tcp_open(ct, A, 40000, R1, 443)
    rng = random.Random(5508)
    for n in range(20000):
        ct.outbound(UDP, B, rng.randrange(1024, 65536), rng.randbytes(4), 53, 0, 80, n * 1e-3)
        assert len(ct) <= 1000
    assert ct.outbound(TCP, A, 40000, R1, 443, ACK, 52, 30.0) == kept
    assert ct.stats["early-drop"] >= 19000
    assert len(ct._timers) <= 2 * len(ct) + 64 and len(ct._unreplied) <= 2 * len(ct) + 64


def test_memory_per_entry_is_under_one_kib():
    """1 M flows must fit in 1 GiB.  Worst common case: each flow has its own mapping (a fresh
    ephemeral port), address-dependent filtering, counters past the small-int cache."""
    n = 20000
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ct = Conntrack(EXT, max_entries=n)
    for i in range(n):
        guest = bytes([10, 0, i >> 8, i & 0xFF])
        remote = bytes([198, 18, i >> 8, i & 0xFF])
        out = ct.outbound(TCP, guest, 1024 + i, remote, 443, SYN, 60, i * 1e-3)
        for size in (1400, 1500):
            ct.inbound(TCP, remote, 443, EXT, out.sport, SYN | ACK, size, 1.0 + i * 1e-3)
            ct.outbound(TCP, guest, 1024 + i, remote, 443, ACK, size, 2.0 + i * 1e-3)
    gc.collect()
    traced = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    reported = ct.memory_per_entry()
    assert len(ct) == n
    assert traced < 1024 and reported < 1024
    assert traced * 0.9 < reported < traced * 1.25  # the method measures what Python allocates


# --- ICMP errors look flows up without touching them ----------------------------------------------


def test_lookup_changes_nothing():
    # RFC 5508 REQ-6, RFC 4787 REQ-12: no ICMP refreshes or deletes a mapping.
    ct = Conntrack(EXT)
    out = udp_out(ct, A, 5000, R1, 53, now=0.0)
    assert ct.lookup((UDP, R1, 53, EXT, 5000), from_outside=True) == (UDP, A, 5000, R1, 53)
    assert ct.lookup((UDP, A, 5000, R1, 53), from_outside=False) == out
    assert ct.lookup((UDP, A, 5000, R1, 53), from_outside=True) is None  # wrong side
    rows = ct.entries(200.0)
    assert (rows[0].packets_original, rows[0].packets_reply) == (1, 0)
    assert ct.expire(300.0) == 1  # not refreshed by the lookup at 200


def test_entries_show_both_tuples_counters_and_time_left():
    ct = Conntrack(EXT)
    out = tcp_open(ct, B, 40000, R1, 80)
    [row] = ct.entries(100.0)
    assert row.original == (TCP, B, 40000, R1, 80)
    assert row.reply == (TCP, R1, 80, EXT, out.sport)
    assert (row.kind, row.state, row.seconds_left) == ("snat", "ESTABLISHED", 7340.0)
    assert (row.packets_original, row.bytes_original) == (2, 112)
    assert (row.packets_reply, row.bytes_reply) == (1, 60)


# --- fragments: the virtual reassembly table ---------------------------------------------------


def test_fragments_wait_for_their_first_and_take_its_verdict():
    frags = Fragments(timeout=30.0)
    key = (True, UDP, R1, EXT, 7)
    to = Translation(UDP, A, 5000, R1, 53)
    assert frags.later(key, b"second", 0.0) is None  # out of order: waits (RFC 4787 REQ-14)
    assert frags.first(key, to, 1.0) == [b"second"]
    assert frags.later(key, b"third", 2.0) == to
    assert frags.held_bytes == 0
    assert frags.expire(29.9) == 0 and frags.expire(30.0) == 1
    drop = Drop("filtered")
    assert frags.later(key, b"x", 40.0) is None
    assert frags.first(key, drop, 40.0) == []
    assert frags.later(key, b"y", 41.0) == drop


def test_fragment_flood_is_bounded():
    frags = Fragments(max_datagrams=100, max_held_bytes=10000)
    rng = random.Random(791)
    for n in range(5000):
        key = (True, UDP, rng.randbytes(4), EXT, n)
        frags.later(key, bytes(rng.randrange(100, 1500)), 0.0)
        assert len(frags) <= 100 and frags.held_bytes <= 10000
    one = (True, UDP, R1, EXT, 1)
    results = [frags.later(one, bytes(10), 0.0) for _ in range(Fragments.MAX_HELD + 1)]
    assert results[-1] == Drop("fragments-full")
    ct = Conntrack(EXT)
    ct.fragments.later(one, b"x", 5.0)
    assert ct.next_deadline() == 35.0


# --- the per-guest quota (Rule 9) -----------------------------------------------------------------


def test_a_guest_at_its_quota_is_refused_like_a_full_table_and_others_go_on():
    ct = Conntrack(EXT, max_entries=100, max_per_guest=3)
    first = udp_out(ct, A, 1, R1, 53)
    for port in (1, 2, 3):
        out = udp_out(ct, A, port, R1, 53)
        udp_in(ct, R1, 53, out.sport)  # replied: no early drop among them
    assert udp_out(ct, A, 4, R1, 53) == Drop("guest-quota", (3, 13))
    assert ct.outbound(TCP, A, 5, R1, 80, SYN, 60, 0.0) == Drop("guest-quota", (3, 13))
    assert ct.stats["drop:guest-quota"] == 2
    assert isinstance(udp_out(ct, B, 4, R1, 53), Translation), "B has a quota of its own"
    assert udp_out(ct, A, 1, R1, 53) == first, "A's flows go on"
    assert ct.per_guest == {A: 3, B: 1}
    assert ct.room(A) == "over-quota" and ct.room(B) == "free"


def test_the_quota_frees_as_flows_expire_with_a_hand_advanced_clock():
    ct = Conntrack(EXT, max_entries=100, max_per_guest=2, timeouts=Timeouts(udp=120.0))
    for port in (1, 2):
        out = udp_out(ct, A, port, R1, 53, now=0.0)
        udp_in(ct, R1, 53, out.sport, now=0.0)
    assert udp_out(ct, A, 3, R1, 53, now=60.0) == Drop("guest-quota", (3, 13))
    assert ct.expire(120.0) == 2
    assert ct.per_guest == {}, "a guest without flows has no key (bounded)"
    assert isinstance(udp_out(ct, A, 3, R1, 53, now=121.0), Translation)


def test_at_its_quota_a_guest_replaces_only_its_own_unreplied_flows():
    ct = Conntrack(EXT, max_entries=100, max_per_guest=2)
    udp_out(ct, B, 9, R1, 53)  # B's unreplied flow, older than all of A's
    udp_out(ct, A, 1, R1, 53)
    udp_out(ct, A, 2, R1, 53)
    assert isinstance(udp_out(ct, A, 3, R1, 53), Translation)
    assert ct.stats["early-drop"] == 1
    assert sorted((row.original[1], row.original[2]) for row in ct.entries(0.0)) == \
        [(A, 2), (A, 3), (B, 9)], "A's oldest went, B's older one stayed"


def test_a_full_table_never_evicts_a_lighter_guests_flow_for_a_heavy_one():
    ct = Conntrack(EXT, max_entries=6, max_per_guest=5)
    udp_out(ct, B, 9, R1, 53)  # B: one unreplied flow, the oldest in the table
    for port in range(1, 6):  # A: five, all replied
        out = udp_out(ct, A, port, R1, 53)
        udp_in(ct, R1, 53, out.sport)
    assert len(ct) == 6
    assert udp_out(ct, A, 6, R1, 53) == Drop("guest-quota", (3, 13))
    assert (UDP, B, 9, R1, 53) in {row.original for row in ct.entries(0.0)}, "B's flow stayed"
    # A light guest may take the place of a heavier guest's unreplied attempt.
    ct2 = Conntrack(EXT, max_entries=4, max_per_guest=4)
    for port in (1, 2, 3):
        udp_out(ct2, A, port, R1, 53)  # A: three unreplied
    udp_out(ct2, B, 9, R1, 53)
    assert ct2.room(C) == "early-drop"
    assert isinstance(udp_out(ct2, C, 1, R1, 53), Translation)
    assert ct2.per_guest == {A: 2, B: 1, C: 1}
    # ... but B's (one flow) is not taken for A (two): A takes its own oldest.
    assert isinstance(udp_out(ct2, A, 4, R1, 53), Translation)
    assert ct2.per_guest == {A: 2, B: 1, C: 1}


def test_flows_from_outside_spend_no_guests_quota_and_go_first_when_unanswered():
    ct = Conntrack(EXT, max_entries=6, max_per_guest=2)
    ct.add_forward(TCP, range(22, 23), B, 22)
    for sport in range(1000, 1004):  # a flood of SYNs to B's forward
        assert isinstance(ct.inbound(TCP, R1, sport, EXT, 22, SYN, 60, 0.0), Translation)
    assert ct.per_guest == {}, "B's quota is B's: whoever floods its forward does not spend it"
    assert isinstance(udp_out(ct, B, 5001, R1, 53), Translation)
    assert isinstance(udp_out(ct, B, 5002, R1, 53), Translation)
    assert len(ct) == 6
    assert isinstance(udp_out(ct, A, 5001, R1, 53), Translation), "an unanswered SYN made room"
    assert ct.stats["early-drop"] == 1 and ct.per_guest == {A: 1, B: 2}
    assert isinstance(ct.inbound(TCP, R1, 1004, EXT, 22, SYN, 60, 0.0), Translation)
