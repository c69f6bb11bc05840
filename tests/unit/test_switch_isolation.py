"""Port isolation (switch Rule 5) and storm control (Rule 6), with a hand-advanced clock."""

import pytest

from vswitch.config import ConfigError, parse_config
from vswitch.fdb import ForwardingTable
from vswitch.switch import (
    ISOLATED,
    ISOLATED_FLOOD,
    STORM,
    STORM_LIMIT,
    StormBucket,
    Switch,
    storm_burst,
)
from wire.vnet import wrap

GW = bytes.fromhex("525400000000")
A = bytes.fromhex("525400000001")
B = bytes.fromhex("525400000002")
C = bytes.fromhex("525400000003")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("333300000001")


def frame(dst: bytes, src: bytes) -> bytes:
    return wrap(dst + src + b"\x08\x06" + bytes(46))


def name(port: int) -> str:
    return ["gateway", "a", "b", "c"][port]


def isolated_switch(storm_limit: int = 0) -> Switch:
    """Port 0 the gateway, 1 and 2 isolated, 3 not; every station learned."""
    sw = Switch(ForwardingTable(aging=300))
    sw.add_port(0, storm_limit=storm_limit)
    sw.add_port(1, isolated=True, storm_limit=storm_limit)
    sw.add_port(2, isolated=True, storm_limit=storm_limit)
    sw.add_port(3, storm_limit=storm_limit)
    for port, mac in enumerate((GW, A, B, C)):
        sw.fdb.learn(mac, port, 0.0)
    return sw


# -- Rule 5: isolation -----------------------------------------------------------------------


def test_isolated_ports_reach_the_gateway_and_the_others_but_not_each_other():
    sw = isolated_switch()
    assert sw.receive(frame(GW, A), 1, now=1) == (0,)
    assert sw.receive(frame(C, A), 1, now=1) == (3,)
    assert sw.receive(frame(B, A), 1, now=1) == (), "B is known, on another isolated port"
    assert sw.receive(frame(A, B), 2, now=1) == ()
    assert sw.drops[1][ISOLATED] == 1 and sw.drops[2][ISOLATED] == 1
    # the other way round is allowed: the gateway and a plain port reach isolated ports
    assert sw.receive(frame(A, GW), 0, now=1) == (1,)
    assert sw.receive(frame(B, C), 3, now=1) == (2,)
    assert not sw.drops[0] and not sw.drops[3]


def test_floods_from_an_isolated_port_skip_the_other_isolated_ports_and_are_counted():
    sw = isolated_switch()
    assert sw.receive(frame(BCAST, A), 1, now=1) == (0, 3)
    assert sw.receive(frame(MCAST, B), 2, now=1) == (0, 3)
    unknown = bytes.fromhex("5254000000ee")
    assert sw.receive(frame(unknown, A), 1, now=1) == (0, 3)
    assert sw.drops[1][ISOLATED_FLOOD] == 2 and sw.drops[2][ISOLATED_FLOOD] == 1
    # floods from the gateway and the plain port reach everyone
    assert sw.receive(frame(BCAST, GW), 0, now=1) == (1, 2, 3)
    assert sw.receive(frame(BCAST, C), 3, now=1) == (0, 1, 2)


def test_a_lone_isolated_port_withholds_nothing_and_the_gateway_is_never_isolated():
    sw = Switch(ForwardingTable(aging=300))
    sw.add_port(0, isolated=True)  # ignored: the router port is never isolated
    sw.add_port(1, isolated=True)
    sw.add_port(2, isolated=True, up=False)
    assert not sw.is_isolated(0)
    assert sw.receive(frame(BCAST, A), 1, now=1) == (0,)
    assert not sw.drops[1], "the other isolated port is down: nothing was withheld"
    sw.set_up(2, True)
    assert sw.receive(frame(BCAST, A), 1, now=2) == (0,)
    assert sw.drops[1][ISOLATED_FLOOD] == 1
    sw.remove_port(2)
    assert sw.receive(frame(BCAST, A), 1, now=3) == (0,)
    assert sw.drops[1][ISOLATED_FLOOD] == 1


def test_explain_says_why_isolation_dropped_or_trimmed():
    sw = isolated_switch()
    lines = sw.explain(frame(B, A), 1, name)
    assert lines[-1][1] == "switch Rule 5" and "dropped: isolated" in lines[-1][0]
    assert "a and b are both isolated" in lines[-1][0]
    lines = sw.explain(frame(BCAST, A), 1, name)
    assert lines[-2] == ("flooded to gateway,c (broadcast)", "switch Rule 2")
    assert lines[-1] == ("not to b: a is isolated from them (isolated-flood)", "switch Rule 5")
    assert sw.explain(frame(C, A), 1, name)[-1] == ("forwarded to c", "switch step 5")
    assert not sw.drops[1], "explain changes nothing"


# -- Rule 6: storm control -------------------------------------------------------------------


def test_the_default_limit_and_its_burst():
    assert STORM_LIMIT == 1000 and storm_burst(STORM_LIMIT) == 200
    assert storm_burst(3) == 1


def test_a_bucket_gives_its_burst_then_its_rate():
    bucket = StormBucket(10)  # burst 2
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(100.0625) is False  # 0.625 of a token
    assert bucket.left(100.125) >= 1.0 and bucket.take(100.125) is True
    assert [bucket.take(1000.0) for _ in range(3)] == [True, True, False]  # capped at burst


def test_floods_over_the_limit_are_dropped_known_unicast_never_is():
    sw = isolated_switch(storm_limit=50)  # burst 10
    outs = [sw.receive(frame(BCAST, C), 3, now=10.0) for _ in range(15)]
    assert outs.count((0, 1, 2)) == 10 and outs.count(()) == 5
    assert sw.drops[3][STORM] == 5
    # multicast and unknown unicast share the same bucket
    assert sw.receive(frame(MCAST, C), 3, now=10.0) == ()
    assert sw.receive(frame(bytes.fromhex("5254000000ee"), C), 3, now=10.0) == ()
    assert sw.drops[3][STORM] == 7
    # known unicast goes on regardless
    assert all(sw.receive(frame(A, C), 3, now=10.0) == (1,) for _ in range(1000))
    # 1/8 s later: 6.25 more tokens
    outs = [sw.receive(frame(BCAST, C), 3, now=10.125) for _ in range(8)]
    assert outs.count((0, 1, 2)) == 6


def test_a_storm_is_held_to_its_limit_over_time():
    sw = isolated_switch(storm_limit=100)  # burst 20
    passed, now = 0, 0.0
    for _ in range(10_000):  # 10 000 broadcasts in 2 s: 5000/s against 100/s
        now += 0.0002
        passed += bool(sw.receive(frame(BCAST, C), 3, now=now))
    assert 20 + 100 * 2 - 2 <= passed <= 20 + 100 * 2 + 1
    assert sw.drops[3][STORM] == 10_000 - passed
    # another port's floods have their own bucket
    assert sw.receive(frame(BCAST, A), 1, now=now) == (0, 3)


def test_the_gateway_is_exempt_and_zero_means_off():
    sw = Switch(ForwardingTable(aging=300))
    sw.add_port(0, storm_limit=5)
    sw.add_port(1, storm_limit=0)
    sw.add_port(2, storm_limit=5)
    assert sw.storm_limit(0) == 0 and sw.storm_limit(1) == 0 and sw.storm_limit(2) == 5
    assert all(sw.receive(frame(BCAST, GW), 0, now=1.0) for _ in range(1000))
    assert all(sw.receive(frame(BCAST, A), 1, now=1.0) for _ in range(1000))
    assert not sw.drops[0] and not sw.drops[1]


def test_explain_says_when_storm_control_would_drop():
    sw = isolated_switch(storm_limit=5)  # burst 1
    assert sw.explain(frame(BCAST, C), 3, name, now=5.0)[-1][1] == "switch Rule 2"
    assert sw.receive(frame(BCAST, C), 3, now=5.0)
    line = sw.explain(frame(BCAST, C), 3, name, now=5.0)[-1]
    assert line == ("dropped: storm-control (broadcast: c floods at most 5/s, 1 at once, and "
                    "is over)", "switch Rule 6")
    assert sw.explain(frame(BCAST, C), 3, name)[-1][1] == "switch Rule 6", "as left at 5.0"
    assert sw.explain(frame(BCAST, C), 3, name, now=5.25)[-1][1] == "switch Rule 2"
    assert "unknown unicast" in sw.explain(frame(bytes(5) + b"\x09", C), 3, name, now=5.0)[-1][0]
    assert not sw.drops[3]


# -- the config keys and their wiring ----------------------------------------------------------


def three_ports(**switch) -> dict:
    return {"switch": switch, "network": {"subnet": "10.7.0.0/24"},
            "port": [{"name": "a", "type": "stream", "path": "/tmp/vsw-iso-a.sock",
                      "isolated": True},
                     {"name": "b", "type": "stream", "path": "/tmp/vsw-iso-b.sock",
                      "isolated": True, "storm_limit": 0},
                     {"name": "c", "type": "stream", "path": "/tmp/vsw-iso-c.sock",
                      "storm_limit": 50}]}


def test_the_keys_reach_the_switch():
    from vswitch.daemon import Daemon

    config = parse_config(three_ports(storm_limit=300))
    assert config.storm_limit == 300 and parse_config({}).storm_limit == STORM_LIMIT
    assert [p.isolated for p in config.ports] == [True, True, False]
    assert [p.storm_limit for p in config.ports] == [None, 0, 50]
    sw = Daemon(config).switch
    assert [sw.is_isolated(i) for i in range(4)] == [False, True, True, False]
    assert [sw.storm_limit(i) for i in range(4)] == [0, 300, 0, 50]


@pytest.mark.parametrize(("where", "value", "key"), [
    ("switch", -1, "switch.storm_limit"),
    ("switch", "fast", "switch.storm_limit"),
    ("port", 2.5, "port[0].storm_limit"),
    ("port", True, "port[0].storm_limit"),
])
def test_a_bad_storm_limit_is_one_error_naming_the_key_and_the_fix(where, value, key):
    data = three_ports()
    if where == "switch":
        data["switch"]["storm_limit"] = value
    else:
        data["port"][0]["storm_limit"] = value
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == key and "0 for no limit" in str(err.value)


def test_isolated_must_be_true_or_false():
    data = three_ports()
    data["port"][1]["isolated"] = "yes"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == "port[1].isolated" and "must be true" in str(err.value)


def test_show_ports_has_a_policy_column():
    from vswitch.cli import format_ports

    row = {"name": "a", "type": "stream", "state": "up", "mtu": 1500, "macs": 1,
           "rx_frames": 0, "rx_bytes": 0, "tx_frames": 0, "tx_bytes": 0, "offloads": [],
           "software": {"segmented": 0, "checksummed": 0}, "drops": {}, "detail": ""}
    text = format_ports([row | {"isolated": True, "storm_limit": 1000},
                         row | {"name": "b", "isolated": False, "storm_limit": 0}, row])
    lines = text.splitlines()
    assert "POLICY" in lines[0]
    assert "isolated, storm 1000/s" in lines[1]


def test_mirror_ports_copy_what_isolation_keeps_apart(tmp_path):
    """A mirror target is no switch port: it gets its copies whatever Rules 5 and 6 decide."""
    import asyncio

    from vswitch.daemon import Daemon

    config = parse_config({
        "control": {"socket": str(tmp_path / "ctl.sock")},
        "network": {"subnet": "10.7.0.0/24"},
        "dhcp": {"lease_file": str(tmp_path / "leases")},
        "port": [{"name": n, "type": "stream", "path": str(tmp_path / f"{n}.sock"),
                  "isolated": n != "c"} for n in ("a", "b", "c", "span")],
        "mirror": [{"from": ["a"], "to": "span"}]})
    d = Daemon(config)
    loop = asyncio.new_event_loop()
    try:
        d.loop = loop
        sent: dict[str, list[bytes]] = {n: [] for n in ("gateway", "a", "b", "c", "span")}
        for port in d.ports:
            assert port is not None
            if port.name in sent:
                port.send = sent[port.name].append
            if port.name != "span":
                d.switch.set_up(port.id, True)
        deliver = d.watch.deliver()
        ids = {p.name: p.id for p in d.ports if p is not None}
        deliver(frame(BCAST, B), ids["b"], 1.0)  # b's MAC learned on b
        unicast, broadcast = frame(B, A), frame(BCAST, A)
        deliver(unicast, ids["a"], 1.0)
        deliver(broadcast, ids["a"], 1.0)
        assert sent["b"] == [], "isolated from a"
        assert sent["c"] == [frame(BCAST, B), broadcast]
        assert sent["span"] == [unicast, broadcast], "the mirror copies all a received"
        assert d.switch.drops[ids["a"]][ISOLATED] == 1
    finally:
        loop.close()
