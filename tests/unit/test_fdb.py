"""The forwarding table with a hand-advanced clock: learning, ageing, limits, moves, flaps."""

from vswitch.events import MacEvicted, MacFlapping, MacMoved
from vswitch.fdb import FLAP_MOVES, ForwardingTable


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0, 0, n >> 8, n & 0xFF])


def test_learn_and_lookup():
    fdb = ForwardingTable()
    assert fdb.learn(mac(1), 3, now=0.0) is None  # learning a new MAC is not an event
    assert fdb.lookup(mac(1)) == 3
    assert fdb.lookup(mac(2)) is None


def test_refresh_keeps_entry_alive_and_ageing_removes_it():
    fdb = ForwardingTable(aging=300)
    fdb.learn(mac(1), 1, now=0.0)
    assert fdb.next_deadline() == 300.0
    fdb.learn(mac(1), 1, now=200.0)  # refreshed: lives until 500
    assert fdb.expire(now=301.0) is None
    assert fdb.lookup(mac(1)) == 1
    assert fdb.next_deadline() == 500.0  # re-armed from the oldest remaining entry
    aged = fdb.expire(now=500.0)
    assert aged is not None and aged.count == 1
    assert fdb.lookup(mac(1)) is None
    assert fdb.next_deadline() is None


def test_move_is_reported_once_per_move():
    fdb = ForwardingTable()
    fdb.learn(mac(1), 1, now=0.0)
    events = fdb.learn(mac(1), 2, now=1.0)
    assert events == [MacMoved(mac(1), 1, 2)]
    assert fdb.learn(mac(1), 2, now=2.0) is None  # staying put says nothing
    assert fdb.lookup(mac(1)) == 2
    assert fdb.count(1) == 0 and fdb.count(2) == 1


def test_two_ports_claiming_one_mac_is_flapping_reported_once():
    fdb = ForwardingTable()
    fdb.learn(mac(1), 1, now=0.0)
    flaps = []
    for i in range(20):
        events = fdb.learn(mac(1), 2 if i % 2 == 0 else 1, now=0.1 * (i + 1)) or []
        flaps += [e for e in events if isinstance(e, MacFlapping)]
    assert len(flaps) == 1, "a flapping MAC is reported once per quiet period, not per move"
    assert flaps[0].ports == (1, 2) and flaps[0].moves == FLAP_MOVES


def test_full_table_evicts_from_the_port_with_most_entries():
    # Port 1 has two quiet stations; port 9 floods random source MACs.
    fdb = ForwardingTable(limit=100)
    fdb.learn(mac(1), 1, now=0.0)
    fdb.learn(mac(2), 1, now=0.0)
    evictions = []
    for n in range(1000, 11000):
        evictions += fdb.learn(mac(n), 9, now=1.0) or []
    assert len(fdb) == 100
    assert fdb.lookup(mac(1)) == 1 and fdb.lookup(mac(2)) == 1, "the quiet port keeps its MACs"
    assert all(isinstance(e, MacEvicted) and e.port == 9 for e in evictions)
    assert fdb.evicted == 10000 - 98


def test_eviction_is_fair_between_two_growing_ports():
    fdb = ForwardingTable(limit=10)
    for n in range(8):
        fdb.learn(mac(n), 1, now=0.0)
    for n in range(100, 110):
        fdb.learn(mac(n), 2, now=0.0)
    # Port 1 was the fullest until port 2 caught up; then they share the table.
    assert fdb.count(1) + fdb.count(2) == 10
    assert fdb.count(1) == 5 and fdb.count(2) == 5


def test_port_limit_churns_only_that_port():
    fdb = ForwardingTable(limit=1000)
    fdb.set_port_limit(9, 4)
    fdb.learn(mac(1), 1, now=0.0)
    for n in range(100, 200):
        fdb.learn(mac(n), 9, now=0.0)
    assert fdb.count(9) == 4
    assert fdb.lookup(mac(199)) == 9, "the newest MAC is learned, the earliest made room"
    assert fdb.lookup(mac(100)) is None
    assert fdb.lookup(mac(1)) == 1


def test_flush_port():
    fdb = ForwardingTable()
    fdb.learn(mac(1), 1, now=0.0)
    fdb.learn(mac(2), 2, now=0.0)
    assert fdb.flush_port(1) == 1
    assert fdb.lookup(mac(1)) is None and fdb.lookup(mac(2)) == 2


def test_entries_report_time_left():
    fdb = ForwardingTable(aging=300)
    fdb.learn(mac(1), 4, now=10.0)
    assert list(fdb.entries(now=110.0)) == [(mac(1), 4, 200.0)]
