"""Watching the datapath (vswitch.observe): the watched closures are swapped in only while a
session is open, each traced frame carries the cores' explanations, a session is bounded."""

import asyncio

import pytest
from scapy.layers.l2 import ARP, Ether

from vswitch.config import parse_config
from vswitch.control import ControlError
from vswitch.daemon import Daemon
from vswitch.observe import QUEUE_BYTES, QUEUE_FRAMES, TRACE_SNAPLEN
from wire.vnet import NO_OFFLOAD

A_MAC = "52:54:00:00:00:0a"


@pytest.fixture
def daemon(tmp_path):
    config = parse_config({
        "control": {"socket": str(tmp_path / "ctl.sock")},
        "network": {"subnet": "10.7.0.0/24"},
        "dhcp": {"lease_file": str(tmp_path / "leases")},
        "port": [{"name": n, "type": "stream", "path": str(tmp_path / f"{n}.sock")}
                 for n in ("a", "b")]})
    d = Daemon(config)
    loop = asyncio.new_event_loop()
    d.loop = loop
    d.watching.plain = d._make_deliver()
    d.watching.loop = loop
    sent: dict[str, list[bytes]] = {"a": [], "b": []}
    for port in d.ports:
        port.loop, port.deliver = loop, d.watching.plain
        if port.name in sent:
            port.send = sent[port.name].append  # what the switch hands each guest port
        d.switch.set_up(port.id, True)
    yield d, sent
    loop.close()


def arp_from_a(target: str = "10.7.0.1") -> bytes:
    return NO_OFFLOAD + bytes(Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") /
                              ARP(hwsrc=A_MAC, psrc="10.7.0.5", pdst=target))


def test_tracing_swaps_the_closures_in_and_back_out(daemon):
    d, sent = daemon
    plain = d.watching.plain
    stream = d.watching.trace({"filter": "arp"})
    assert all(p.deliver is not plain for p in d.ports)
    assert "dispatch" in d.router_port.__dict__
    d.ports[1].deliver(arp_from_a(), 1, 0.0)
    stream.close()
    assert all(p.deliver is plain for p in d.ports)
    assert "dispatch" not in d.router_port.__dict__
    assert sent["b"], "the broadcast still reached b while traced"


def test_a_traced_frame_carries_each_cores_decision_and_rule(daemon):
    d, _ = daemon
    stream = d.watching.trace({"filter": "arp"})
    d.ports[1].deliver(arp_from_a(), 1, 0.0)
    first = stream.session.queue[0]
    assert first["port"] == "a"
    assert [(w, t, r) for w, t, r in first["decisions"]] == [
        ("fdb", f"learned {A_MAC} on a", "fdb Rule 1"),
        ("switch", "flooded to gateway,b (broadcast)", "switch Rule 2"),
        ("gateway", "ARP answered: 10.7.0.1 is at "
         + ":".join(f"{x:02x}" for x in d.router_port.gateway.mac), "gateway Rule 1")]
    reply = stream.session.queue[1]  # the gateway's answer, traced as it enters the switch
    assert reply["port"] == "gateway"
    assert reply["decisions"][-1][1] == "forwarded to a"
    stream.close()


def test_explain_says_the_same_and_changes_nothing(daemon):
    d, sent = daemon
    frame = arp_from_a()[10:].hex()
    (result,) = d.watching.explain({"frames": [frame], "port": "a"})
    assert [t for _, t, _ in result["decisions"]][:2] == [f"learned {A_MAC} on a",
                                                          "flooded to gateway,b (broadcast)"]
    assert len(d.fdb) == 0 and not sent["b"]


def test_a_session_holds_at_most_its_bound_and_counts_the_rest(daemon):
    d, _ = daemon
    stream = d.watching.capture({"points": ["a"]})
    for _ in range(QUEUE_FRAMES + 10):
        d.ports[1].deliver(arp_from_a("10.7.0.9"), 1, 0.0)
    assert len(stream.session.queue) == QUEUE_FRAMES and stream.session.dropped == 10
    stream.close()


def test_bad_filters_and_points_are_refused_with_one_message(daemon):
    d, _ = daemon
    with pytest.raises(ControlError, match='after "port" at column 6'):
        d.watching.trace({"filter": "port http"})
    with pytest.raises(ControlError, match="uplink-outside needs a raw uplink"):
        d.watching.capture({"points": ["uplink-outside"]})
    with pytest.raises(ControlError,
                       match=r"no capture point nowhere; points: gateway .*, a \(stream port\)"):
        d.watching.capture({"points": ["a", "nowhere"]})
    assert all(p.deliver is d.watching.plain for p in d.ports)


def test_a_session_is_bounded_in_bytes_and_a_trace_keeps_only_headers(daemon):
    d, _ = daemon
    from scapy.layers.inet import IP, UDP

    big = NO_OFFLOAD + bytes(Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") /
                             IP(src="10.7.0.5", dst="10.7.0.255") / UDP() / bytes(60000))
    capture = d.watching.capture({"points": ["a"]})
    trace = d.watching.trace({})
    for _ in range(400):
        d.ports[1].deliver(big, 1, 0.0)
    assert 0 < capture.session.queued <= QUEUE_BYTES and capture.session.dropped > 0
    assert len(bytes.fromhex(trace.session.queue[0]["frame"])) == TRACE_SNAPLEN
    capture.close()
    trace.close()


def test_the_ra_guard_drops_a_guests_router_advertisement_traced_or_not(daemon):
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6ND_RA, IPv6

    d, sent = daemon
    ra = NO_OFFLOAD + bytes(Ether(src=A_MAC, dst="33:33:00:00:00:01")
                            / IPv6(src="fe80::a", dst="ff02::1", hlim=255) / ICMPv6ND_RA())
    ns = NO_OFFLOAD + bytes(Ether(src=A_MAC, dst="33:33:ff:00:00:01")
                            / IPv6(src="fe80::a", dst="ff02::1:ff00:1", hlim=255)
                            / ICMPv6ND_NS(tgt="fe80::1"))
    d.ports[1].deliver(ra, 1, 0.0)
    d.ports[1].deliver(ns, 1, 0.0)
    assert sent["b"] == [ns] and d.switch.drops[1]["ra-guard"] == 1
    stream = d.watching.trace({})
    capture = d.watching.capture({"points": ["a"]})
    d.ports[1].deliver(ra, 1, 0.0)
    assert sent["b"] == [ns] and d.switch.drops[1]["ra-guard"] == 2
    assert stream.session.queue[0]["decisions"][0][1].startswith("dropped: ra-guard")
    assert capture.session.queue[0]["dir"] == "rx"  # the capture still shows what came in
    stream.close()
    capture.close()
