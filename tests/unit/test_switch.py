"""Scenario tests of the switch decision: an input, the expected ports, and why."""

from vswitch.events import MacMoved
from vswitch.fdb import ForwardingTable
from vswitch.switch import BAD_SOURCE, OVERSIZE, PORT_DOWN, RUNT, SAME_PORT, Switch
from wire.vnet import GSO_TCPV4, encode_header, wrap

A = bytes.fromhex("525400000001")
B = bytes.fromhex("525400000002")
C = bytes.fromhex("525400000003")
BCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, size: int = 60) -> bytes:
    return wrap(dst + src + b"\x08\x00" + bytes(size - 14))


def three_port_switch(events=None) -> Switch:
    sw = Switch(ForwardingTable(aging=300), on_event=None if events is None else events.append)
    for port in (1, 2, 3):
        sw.add_port(port)
    return sw


def test_broadcast_floods_to_every_other_port():
    sw = three_port_switch()
    assert sw.receive(frame(BCAST, A), 1, now=0) == (2, 3)


def test_unknown_unicast_floods_then_known_unicast_goes_to_one_port():
    sw = three_port_switch()
    assert sw.receive(frame(B, A), 1, now=0) == (2, 3), "B not learned yet: flood"
    assert sw.receive(frame(A, B), 2, now=1) == (1,), "A was learned on port 1"
    assert sw.receive(frame(B, A), 1, now=2) == (2,), "B was learned on port 2"


def test_aged_out_destination_floods_again():
    sw = three_port_switch()
    sw.receive(frame(BCAST, B), 2, now=0)
    assert sw.receive(frame(B, A), 1, now=10) == (2,)
    deadline = sw.fdb.next_deadline()
    assert deadline is not None
    sw.fdb.expire(deadline + 1)
    assert sw.receive(frame(B, A), 1, now=deadline + 1) == (2, 3)


def test_never_back_out_of_the_ingress_port():
    sw = three_port_switch()
    sw.receive(frame(BCAST, B), 1, now=0)
    assert sw.receive(frame(B, A), 1, now=1) == (), "B lives behind port 1 already"
    assert sw.drops[1][SAME_PORT] == 1


def test_bad_source_macs_are_dropped_and_not_learned():
    sw = three_port_switch()
    assert sw.receive(frame(B, b"\x01\x00\x5e\x00\x00\x01"), 1, now=0) == ()
    assert sw.receive(frame(B, bytes(6)), 1, now=0) == ()
    assert sw.drops[1][BAD_SOURCE] == 2
    assert len(sw.fdb) == 0


def test_runts_and_oversize_frames_are_dropped_gso_is_not():
    sw = three_port_switch()
    assert sw.receive(wrap(b"\x00" * 13), 1, now=0) == ()
    assert sw.receive(b"\x00" * 5, 1, now=0) == ()
    assert sw.drops[1][RUNT] == 2
    assert sw.receive(frame(BCAST, A, size=1600), 1, now=0) == ()
    assert sw.drops[1][OVERSIZE] == 1
    gso = encode_header(gso_type=GSO_TCPV4, gso_size=1448) + frame(BCAST, A, 60000)[10:]
    assert sw.receive(gso, 1, now=0) == (2, 3), "a GSO packet is many frames, not an oversize one"


def test_down_ports_are_not_flooded_and_forget_their_macs():
    sw = three_port_switch()
    sw.receive(frame(BCAST, C), 3, now=0)
    sw.set_up(3, False)
    assert sw.fdb.lookup(C) is None
    assert sw.receive(frame(BCAST, A), 1, now=1) == (2,)
    assert sw.receive(frame(C, A), 1, now=1) == (2,)
    assert sw.receive(frame(BCAST, C), 3, now=1) == ()
    assert sw.drops[3][PORT_DOWN] == 1
    sw.set_up(3, True)
    assert sw.receive(frame(BCAST, A), 1, now=2) == (2, 3)


def test_mac_move_is_reported_and_followed():
    events: list = []
    sw = three_port_switch(events)
    sw.receive(frame(BCAST, A), 1, now=0)
    sw.receive(frame(BCAST, A), 2, now=1)  # the guest migrated to port 2
    assert events == [MacMoved(A, 1, 2)]
    assert sw.receive(frame(A, B), 3, now=2) == (2,)


def test_removed_port_disappears_from_floods():
    sw = three_port_switch()
    sw.receive(frame(BCAST, C), 3, now=0)
    sw.remove_port(3)
    assert sw.receive(frame(BCAST, A), 1, now=1) == (2,)
    assert sw.fdb.lookup(C) is None
