"""Property tests of the switch core, the stream port's framing, the control protocol and the
config loader (issue 13, "fuzzing every parser").

``Switch.receive`` and ``ForwardingTable`` under random sequences of frames, port changes and
time: never raise, never send a frame back, to a down port or between isolated ports; the table
stays within its limits and holds only MACs of ports that are up. ``StreamDecoder``: frames
come back in any chunking, garbage raises ``MalformedPacket`` only. ``ControlServer.handle_line``:
never raises, answers every line with a JSON object, calls nothing "internal" but a handler's
bug. ``parse_config``: random TOML-like tables raise ``ConfigError`` and nothing else.
"""

from __future__ import annotations

import copy
import datetime
import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fuzzing import budget
from vswitch.config import ConfigError, parse_config
from vswitch.control import ControlError, ControlServer
from vswitch.fdb import ForwardingTable
from vswitch.ports.stream import MAX_FRAME, StreamDecoder, encode_frame
from vswitch.switch import Switch, storm_burst
from wire.errors import MalformedPacket
from wire.vnet import GSO_TCPV4, NO_OFFLOAD, encode_header

# -- the switch and its table --------------------------------------------------------------------

MACS = [bytes.fromhex(f"5254000000{i:02x}") for i in range(1, 9)]
GROUP = [b"\xff" * 6, bytes.fromhex("01005e000001"), bytes.fromhex("333300000001")]
ANY_MAC = st.one_of(st.sampled_from(MACS), st.sampled_from(MACS), st.sampled_from(GROUP),
                    st.just(bytes(6)), st.binary(min_size=6, max_size=6))
PORTS = [0, 1, 2, 3, 4]

FRAME = st.tuples(st.just("frame"), st.sampled_from(PORTS), ANY_MAC, ANY_MAC,
                  st.sampled_from([0, 4, 46, 1500, 1518, 1600, 9000]), st.booleans())
PORT_CHANGE = st.one_of(
    st.tuples(st.just("up"), st.sampled_from(PORTS), st.booleans()),
    st.tuples(st.just("remove"), st.sampled_from(PORTS[1:])),
    st.tuples(st.just("add"), st.sampled_from(PORTS[1:]), st.booleans(),
              st.sampled_from([0, 5, 50]), st.sampled_from([None, 1, 2])),
    st.tuples(st.just("wait"), st.floats(0, 400)),
    st.tuples(st.just("expire")),
)
STEPS = st.lists(st.one_of(FRAME, FRAME, FRAME, PORT_CHANGE), min_size=1, max_size=60)


@budget(200)
@given(STEPS, st.sampled_from([3, 4, 8192]))
def test_the_switch_never_sends_where_the_rules_forbid_and_its_table_stays_bounded(steps, limit):
    fdb = ForwardingTable(aging=300, limit=limit)
    events: list[object] = []
    switch = Switch(fdb, on_event=events.append)
    present = {0: True}
    isolated: set[int] = set()
    port_limits: dict[int, int | None] = {}
    switch.add_port(0)
    for port in PORTS[1:]:
        switch.add_port(port, isolated=port % 2 == 1, storm_limit=5 if port == 4 else 0)
        present[port] = True
        if port % 2:
            isolated.add(port)
    now = 0.0
    floods: dict[int, list[float]] = {port: [] for port in PORTS}
    for step in steps:
        kind = step[0]
        if kind == "frame":
            _, port, dst, src, size, gso = step
            if port not in present:
                continue
            header = encode_header(0, GSO_TCPV4, 54, 1448) if gso else NO_OFFLOAD
            packet = (header + dst + src + b"\x08\x00" + bytes(size))[:max(0, size + 10)]
            table_before = {m: tuple(e) for m, e in fdb.table.items()}
            explained = switch.explain(packet, port, str, now)  # a replay: changes nothing
            assert isinstance(explained, list)
            assert {m: tuple(e) for m, e in fdb.table.items()} == table_before
            out = switch.receive(packet, port, now)
            assert port not in out and len(set(out)) == len(out)
            assert all(present.get(q) for q in out), "sent to a down or removed port"
            if port in isolated:
                assert not any(q in isolated for q in out), "Rule 5"
            if len(out) > 1 or (out and dst[0] & 1):
                floods[port].append(now)
        elif kind == "up":
            _, port, up = step
            if port in present:
                switch.set_up(port, up)
                present[port] = up
        elif kind == "remove":
            _, port = step
            switch.remove_port(port)
            present.pop(port, None)
            isolated.discard(port)
        elif kind == "add":
            _, port, iso, storm, mac_limit = step
            if port in present:  # the daemon adds a port once, its limit before it learns
                continue
            switch.add_port(port, isolated=iso, storm_limit=storm)
            present[port] = True
            if iso:
                isolated.add(port)
            else:
                isolated.discard(port)
            fdb.set_port_limit(port, mac_limit)
            port_limits[port] = mac_limit
            floods[port] = []
        elif kind == "wait":
            now += step[1]
        else:
            deadline = fdb.next_deadline()
            assert deadline is None or all(seen + fdb.aging >= deadline
                                           for _, seen in fdb.table.values())
            fdb.expire(now)
        assert len(fdb) <= limit
        for mac, (port, _) in fdb.table.items():
            assert present.get(int(port)), "a MAC learned on a port that is down or gone"
            assert not mac[0] & 1 and mac != bytes(6), "Rule 3: a group or zero MAC learned"
        for port, mac_limit in port_limits.items():
            assert mac_limit is None or fdb.count(port) <= mac_limit
    for port in (4,):  # Rule 6: no more floods than the bucket allows (5/s, a burst of 1)
        times = floods[port]
        for i, t in enumerate(times):
            later = [u for u in times[i:] if u - t <= 1.0]
            assert len(later) <= storm_burst(5) + 5 + 1


# -- the stream port's framing -------------------------------------------------------------------


@budget(150)
@given(st.lists(st.binary(min_size=14, max_size=1600), max_size=8),
       st.lists(st.integers(1, 700), max_size=30))
def test_stream_frames_come_back_in_any_chunking(frames, cuts):
    stream = b"".join(encode_frame(f) for f in frames)
    decoder, out, at = StreamDecoder(), [], 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[at:at + cut])
        at += cut
        assert decoder.pending <= 4 + MAX_FRAME
    assert out == frames and decoder.pending == 0


@budget(300)
@given(st.lists(st.one_of(st.binary(max_size=40),
                          st.builds(lambda n, b: struct.pack(">I", n) + b,
                                    st.one_of(st.integers(0, 20), st.integers(0, 2**32 - 1)),
                                    st.binary(max_size=30))), max_size=8))
def test_stream_garbage_raises_only_malformed_and_holds_at_most_one_frame(chunks):
    decoder = StreamDecoder()
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert 14 <= len(frame) <= MAX_FRAME
            assert decoder.pending < 4 + MAX_FRAME
    except MalformedPacket:
        pass


# -- the control protocol ------------------------------------------------------------------------


def _handlers() -> dict:
    def refuse(request):
        raise ControlError(f"no: {request.get('why')!r}")

    return {"ping": lambda request: "pong", "echo": lambda request: request.get("arg"),
            "refuse": refuse}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)
LINES = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda cmd, extra: json.dumps({"cmd": cmd, **extra}).encode(),
              st.one_of(st.sampled_from(["ping", "echo", "refuse", "show", ""]), JSON),
              st.dictionaries(st.sampled_from(["arg", "why", "what"]), JSON, max_size=2)),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n),
    st.builds(lambda b, at: b[:at], JSON.map(lambda v: json.dumps({"cmd": v}).encode()),
              st.integers(0, 20)),
)


@budget(300)
@given(LINES, st.sampled_from([0, 1000, 4242]), st.sampled_from([(), (77,)]))
def test_the_control_socket_answers_every_line_with_json_and_never_raises(line, uid, gids):
    server = ControlServer("/nonexistent/control.sock", _handlers(), owner=1000, group=77)
    reply = server.handle_line(line, uid, gids)
    assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
    json.dumps(reply)  # what goes back on the socket
    if not reply["ok"]:
        assert isinstance(reply["error"], str)
        assert not reply["error"].startswith("internal error"), "a client's bytes are no bug"


# -- the config loader ---------------------------------------------------------------------------

#: A config that loads, touching every table; the seed mutations start from.
FULL = {
    "switch": {"name": "fz", "mac_aging": 60, "mac_limit": 100, "storm_limit": 1000},
    "control": {"socket": "/tmp/fz.sock"},
    "port": [{"name": "t1", "type": "tap", "mtu": 1500, "mac_limit": 4},
             {"name": "s1", "type": "stream", "path": "/tmp/fz-s1.sock"},
             {"name": "d1", "type": "dgram", "path": "/tmp/fz-d1.sock", "peer": "/tmp/fz-q.sock"}],
    "network": {"mode": "nat", "subnet": "10.9.0.0/24", "gateway": "10.9.0.1",
                "subnet6": "fd42:0:0:9::/64"},
    "dhcp": {"range": ["10.9.0.10", "10.9.0.99"], "lease_time": 600,
             "host": [{"mac": "52:54:00:00:00:10", "ip": "10.9.0.10", "name": "web"}]},
    "dns": {"domain": "fz.internal", "forwarders": ["192.0.2.53"]},
    "uplink": {"type": "host"},
    "nat": {"port_range": [20000, 30000], "filtering": "address-dependent",
            "max_entries": 1000},
    "forward": [{"proto": "tcp", "port": 2222, "to": "10.9.0.10:22"}],
    "metrics": {"listen": "127.0.0.1:9469"},
    "mirror": [{"from": ["t1"], "to": "s1"}],
}

SCALARS = st.one_of(
    st.text(max_size=12), st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, -1, 65535, 65536]),
    st.floats(allow_nan=True), st.booleans(),
    st.sampled_from(["10.9.0.1", "10.9.0.0/24", "fd42::1", "[::1]:53", "52:54:00:00:00:10",
                     "tcp", "udp", "nat", "route", "open", "isolated", "raw", "host", "dhcp",
                     "slaac", "static", "tap", "stream", "dgram", "attach", "internal",
                     "1.2.3.4:5", "", "strict", "both", "rx", "tx", "10.9.0.300", "999.0.0.0/8",
                     "/", "x" * 300]),
    st.datetimes(), st.dates(), st.times(),
    st.just(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)),
)
TOML = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _paths(inner, (*path, i))


@st.composite
def configs(draw) -> dict:
    """The full config, with a few values replaced, keys deleted or added anywhere."""
    data = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.integers(0, 3))
        if action == 0:
            parent[path[-1]] = draw(TOML)
        elif action == 1:
            del parent[path[-1]]
        elif action == 2 and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(TOML)
        else:  # another valid-looking value from elsewhere in the config
            other = draw(st.sampled_from(paths))
            source = FULL
            try:
                for key in other:
                    source = source[key]
            except (KeyError, IndexError, TypeError):
                continue
            parent[path[-1]] = copy.deepcopy(source)
    return data


def test_the_seed_config_loads():
    config = parse_config(copy.deepcopy(FULL))
    assert config.name == "fz" and len(config.ports) == 3


@budget(400)
@given(st.one_of(configs(), st.dictionaries(st.sampled_from(sorted(FULL)), TOML, max_size=4)))
def test_the_config_loader_raises_only_config_error(data):
    try:
        parse_config(data)
    except ConfigError as error:
        assert str(error)
