"""The Prometheus endpoint: [metrics] in the config, the collector over the daemon's views
(parsed back with prometheus_client's own parser), and the HTTP server on loopback."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vswitch import metrics
from vswitch.config import ConfigError, parse_config
from vswitch.metrics import MetricsServer, exposition


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


# Shaped as the daemon's views return them (from a running daemon's `show --json`).
VIEWS = {
    "ports": lambda: [
        {"id": 0, "name": "gateway", "type": "router", "state": "up", "mtu": 1500,
         "offloads": ["csum"], "software": {"segmented": 0, "checksummed": 0},
         "rx_frames": 8, "rx_bytes": 1780, "tx_frames": 13, "tx_bytes": 2236, "drops": {},
         "detail": "10.71.0.1 52:54:00:60:7e:e2", "macs": 1, "mac_limit": None},
        {"id": 1, "name": "vm1", "type": "tap", "state": "down", "mtu": 9000,
         "offloads": [], "software": {"segmented": 2, "checksummed": 3},
         "rx_frames": 12, "rx_bytes": 1656, "tx_frames": 14, "tx_bytes": 2398,
         "drops": {"tx-link-down": 3, "runt": 1}, "detail": "", "macs": 4, "mac_limit": 8},
    ],
    "fdb": lambda: [{"mac": "52:54:00:60:7e:e2", "port": "gateway", "port_id": 0,
                     "ageing": 300.0}],
    "leases": lambda: [{"mac": "52:54:00:00:00:01", "ip": "10.71.0.5", "state": "bound"},
                       {"mac": "52:54:00:00:00:02", "ip": "10.71.0.6", "state": "bound"},
                       {"mac": "52:54:00:00:00:03", "ip": "10.71.0.7", "state": "offered"}],
    "dhcp": lambda: {"sent_offer": 3, "sent_ack": 2, "released": 1, "not_a_request": 4,
                     "malformed": 0, "leases": 3},
    "dns": lambda: {"queries": 7, "local": 2, "cache_hits": 1, "forwarded": 4, "merged": 0,
                    "spoofed": 2, "malformed": 0, "servfail": 0, "pending_full": 0,
                    "timeouts": 1, "memo_hits": 0, "cache_entries": 5},
    "conntrack": lambda: [
        {"proto": "tcp", "kind": "host", "state": "ESTABLISHED"},
        {"proto": "tcp", "kind": "host", "state": "ESTABLISHED"},
        {"proto": "udp", "kind": "host", "state": "mapped"},
    ],
    "forwards": lambda: [{"proto": "tcp", "port": "8080", "listen": "0.0.0.0",
                          "to": "10.71.0.5:80"}],
    "router": lambda: {"drop-isolated": 4, "held_dropped": 1, "malformed": 2,
                       "echo-replies": 6, "gateway-reassembly-datagrams": 1,
                       "uplink_address": "none", "arp_guests": 2, "arp_outside": 0,
                       "uplink": "host", "ping": "raw", "host_address": "10.71.0.1",
                       "flows": 3, "max_flows": 19744, "tcp_buffered": 100,
                       "tcp_buffer_budget": 268435456, "tcp-connects": 2},
    "switch": lambda: {"name": "vsw0", "mac_entries": 5, "mac_limit": 8192, "mac_aging": 300.0,
                       "learned": 9, "moved": 1, "evicted": 2, "aged": 3, "flooded": 10,
                       "config": "/etc/vswitch.toml"},
}


def test_the_collector_turns_every_view_into_conventional_families():
    text = exposition(lambda: VIEWS).decode()
    got = parse(text)
    assert got["vswitch_port_rx_frames_total"] == {(("port", "gateway"),): 8,
                                                   (("port", "vm1"),): 12}
    assert got["vswitch_port_tx_bytes_total"][(("port", "vm1"),)] == 2398
    assert got["vswitch_port_drops_total"] == {(("port", "vm1"), ("reason", "runt")): 1,
                                               (("port", "vm1"), ("reason", "tx-link-down")): 3}
    assert got["vswitch_port_up"] == {(("port", "gateway"), ("type", "router")): 1,
                                      (("port", "vm1"), ("type", "tap")): 0}
    assert got["vswitch_port_mac_entries"][(("port", "vm1"),)] == 4
    assert got["vswitch_port_mtu_bytes"][(("port", "vm1"),)] == 9000
    assert got["vswitch_port_software_segmented_total"][(("port", "vm1"),)] == 2
    assert got["vswitch_fdb_entries"][()] == 5
    assert got["vswitch_fdb_entries_limit"][()] == 8192
    assert got["vswitch_fdb_aging_seconds"][()] == 300
    for name, value in (("learned", 9), ("moved", 1), ("evicted", 2), ("aged", 3)):
        assert got[f"vswitch_fdb_{name}_total"][()] == value
    assert got["vswitch_switch_flooded_frames_total"][()] == 10
    assert got["vswitch_conntrack_entries"][()] == 3
    assert got["vswitch_conntrack_entries_by_state"] == {
        (("proto", "tcp"), ("state", "ESTABLISHED")): 2,
        (("proto", "udp"), ("state", "mapped")): 1}
    assert got["vswitch_forwards"][()] == 1
    assert got["vswitch_dhcp_leases"] == {(("state", "bound"),): 2, (("state", "offered"),): 1}
    assert got["vswitch_dhcp_replies_total"] == {(("type", "ack"),): 2, (("type", "nak"),): 0,
                                                 (("type", "offer"),): 3}
    assert got["vswitch_dhcp_events_total"] == {(("event", "malformed"),): 0,
                                                (("event", "not_a_request"),): 4,
                                                (("event", "released"),): 1}
    assert got["vswitch_dns_queries_total"][()] == 7
    assert got["vswitch_dns_spoofed_replies_total"][()] == 2
    assert got["vswitch_dns_upstream_timeouts_total"][()] == 1
    assert got["vswitch_dns_cache_entries"][()] == 5
    assert got["vswitch_router_drops_total"] == {(("reason", "isolated"),): 4,
                                                 (("reason", "arp-unresolved"),): 1,
                                                 (("reason", "malformed"),): 2}
    assert got["vswitch_router_events_total"][(("event", "echo-replies"),)] == 6
    assert got["vswitch_router_events_total"][(("event", "tcp-connects"),)] == 2
    assert got["vswitch_router_arp_entries"] == {(("side", "guests"),): 2,
                                                 (("side", "outside"),): 0}
    assert got["vswitch_uplink_flows"][()] == 3
    assert got["vswitch_uplink_flows_limit"][()] == 19744
    assert got["vswitch_uplink_tcp_buffered_bytes"][()] == 100
    assert got["vswitch_uplink_info"] == {(("address", "none"), ("host_address", "10.71.0.1"),
                                           ("kind", "host"), ("ping", "raw")): 1}
    assert got["vswitch_switch_info"] == {(("name", "vsw0"),): 1}


def test_names_follow_the_prometheus_conventions():
    for family in text_string_to_metric_families(exposition(lambda: VIEWS).decode()):
        assert family.name.startswith("vswitch_"), family.name
        assert family.documentation, f"{family.name} has no HELP"
        assert family.type in ("counter", "gauge"), family.name
        for sample in family.samples:
            assert sample.name.endswith("_total") == (family.type == "counter"), sample.name
            assert "bytes" not in sample.name or "_bytes" in sample.name


def test_a_missing_or_failing_view_leaves_out_only_its_own_families(caplog):
    def broken():
        raise RuntimeError("boom")

    views = dict(VIEWS, dns=broken)
    del views["conntrack"]
    got = parse(exposition(lambda: views).decode())
    assert not any(name.startswith("vswitch_dns_") for name in got)
    assert not any(name.startswith("vswitch_conntrack_") for name in got)
    assert got["vswitch_port_rx_frames_total"][(("port", "vm1"),)] == 12
    assert "the dns view failed" in caplog.text
    assert parse(exposition(dict).decode()) == {}  # a daemon with no parts: an empty page


def test_a_plain_switch_has_empty_router_and_service_views():
    views = dict(VIEWS, router=dict, dhcp=dict, dns=dict, leases=list, conntrack=list,
                 forwards=list)
    got = parse(exposition(lambda: views).decode())
    assert got["vswitch_dhcp_leases"] == {(("state", "bound"),): 0}
    assert got["vswitch_conntrack_entries"][()] == 0
    assert "vswitch_uplink_info" not in got and "vswitch_router_drops_total" not in got


# -- [metrics] in the config -------------------------------------------------------------------

def test_metrics_listen_parses_ipv4_ipv6_and_defaults():
    assert parse_config({}).metrics is None
    m = parse_config({"metrics": {}}).metrics
    assert m is not None and (m.host, m.port) == (IPv4Address("127.0.0.1"), 9469)
    m = parse_config({"metrics": {"listen": "0.0.0.0:9100"}}).metrics
    assert m is not None and (m.host, m.port, m.listen) == (IPv4Address("0.0.0.0"), 9100,
                                                            "0.0.0.0:9100")
    m = parse_config({"metrics": {"listen": "[::1]:9469"}}).metrics
    assert m is not None and (m.host, m.listen) == (IPv6Address("::1"), "[::1]:9469")


@pytest.mark.parametrize("value", ["x", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
                                   "127.0.0.1:65536", ":9469", "::1:9469", "[::1]", "[::1:9469",
                                   "localhost:9469", "127.0.0.1:9x", "[127.0.0.1]:9469",
                                   "1.2.3.4.5:80"])
def test_a_bad_listen_gets_one_error_naming_the_key_and_the_fix(value):
    with pytest.raises(ConfigError) as err:
        parse_config({"metrics": {"listen": value}})
    assert err.value.key == "metrics.listen"
    assert str(err.value) == (f"metrics.listen: {value!r} is not host:port; write listen = "
                              '"127.0.0.1:9469" (IPv6: "[::1]:9469")')


def test_metrics_rejects_unknown_keys_and_non_strings():
    with pytest.raises(ConfigError, match=r"^metrics.port: unknown key; valid keys are listen"):
        parse_config({"metrics": {"port": 9469}})
    with pytest.raises(ConfigError, match=r"^metrics.listen: 9469 must be a str"):
        parse_config({"metrics": {"listen": 9469}})
    with pytest.raises(ConfigError, match=r"^metrics: must be a table"):
        parse_config({"metrics": "127.0.0.1:9469"})


# -- the HTTP endpoint -------------------------------------------------------------------------

async def exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request``, read until the server closes: (head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.fixture
async def server():
    srv = MetricsServer(lambda: VIEWS, "127.0.0.1", 0)
    _, port = await srv.start()
    srv.port = port
    yield srv
    srv.close()


async def test_get_metrics_answers_the_exposition(server):
    head, body = await exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Content-Type: text/plain; version=0.0.4; charset=utf-8" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert parse(body.decode())["vswitch_port_rx_frames_total"][(("port", "vm1"),)] == 12
    head, body = await exchange(server.port, b"GET /metrics?x=1 HTTP/1.0\n\n")  # bare LF too
    assert head.startswith(b"HTTP/1.1 200 ") and b"vswitch_fdb_entries 5.0" in body
    head, body = await exchange(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b""


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET / HTTP/1.1\r\n\r\n", b"404"),
    (b"GET /metricsx HTTP/1.1\r\n\r\n", b"404"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", b"405"),
    (b"\x00\x01\xff junk\r\n\r\n", b"400"),
    (b"GET /metrics\r\n\r\n", b"400"),
    (b"GET /metrics SPDY/3\r\n\r\n", b"400"),
    (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", b"431"),
    (b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", b"431"),
])
async def test_bad_requests_get_a_status_and_the_server_goes_on(server, request_bytes, status):
    head, _ = await exchange(server.port, request_bytes)
    assert head.split(b" ")[1] == status, head
    head, _ = await exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")


async def test_silent_and_vanishing_clients_are_closed_and_bounded(server, monkeypatch):
    monkeypatch.setattr(metrics, "TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(reader.read(), 5) == b"", "a silent client is let go"
    writer.close()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.close()  # connects and leaves at once
    monkeypatch.setattr(metrics, "TIMEOUT", 30.0)  # the idle ones stay until they leave
    idle = [await asyncio.open_connection("127.0.0.1", server.port)
            for _ in range(metrics.MAX_CLIENTS)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(reader.read(), 2) == b"", "one too many is closed at once"
    writer.close()
    for _, w in idle:
        w.close()
    for _ in range(100):
        if server.clients == 0:
            break
        await asyncio.sleep(0.02)
    assert server.clients == 0
    head, _ = await exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
