"""Prometheus metrics: the daemon's ``show`` views as an exposition, served over HTTP.

``ViewCollector.collect`` reads the views (``Daemon.views``: a name -> a zero-argument callable
returning what ``vswitch show NAME --json`` prints) at each scrape and turns them into metric
families; ``MetricsServer`` answers ``GET /metrics`` on the daemon's own event loop, so every
view is read in the loop thread between two frames, as the control socket reads them, and no
thread or lock is needed.

Rule 1: names follow the Prometheus conventions: the ``vswitch_`` prefix, ``_total`` on
        counters, ``_bytes`` and ``_seconds`` for units, one family per meaning with labels for
        the rest (``vswitch_port_drops_total{port,reason}``).
Rule 2: a view that is absent shows nothing; a view that fails is logged and left out of that
        scrape, and the rest is served.
Rule 3: the HTTP side trusts nothing it reads: the request head is bounded in bytes, lines and
        time, connections in number; a bad request gets a 4xx or a closed connection, never an
        exception in the loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger("vswitch")

Views = Mapping[str, Callable[[], Any]]

MAX_LINE: Final = 4096  # bytes in one request line or header line
MAX_HEADERS: Final = 64  # header lines in one request
MAX_CLIENTS: Final = 16  # connections served at once; more are closed at once
TIMEOUT: Final = 5.0  # seconds to send the request head, and to take the answer

# -- the collector ---------------------------------------------------------------------------

PORT_COUNTERS: Final = (
    ("rx_frames", "vswitch_port_rx_frames", "Frames received from the port's device or peer."),
    ("rx_bytes", "vswitch_port_rx_bytes", "Bytes received from the port's device or peer."),
    ("tx_frames", "vswitch_port_tx_frames", "Frames sent to the port's device or peer."),
    ("tx_bytes", "vswitch_port_tx_bytes", "Bytes sent to the port's device or peer."),
)
FDB_COUNTERS: Final = (
    ("learned", "vswitch_fdb_learned", "MAC addresses learned (Rule 1 of vswitch/fdb.py)."),
    ("moved", "vswitch_fdb_moved", "MAC addresses that moved to another port."),
    ("evicted", "vswitch_fdb_evicted", "MAC table entries evicted by a table or port limit."),
    ("aged", "vswitch_fdb_aged", "MAC table entries that aged out."),
    ("flooded", "vswitch_switch_flooded_frames",
     "Frames flooded: broadcast, multicast or unknown unicast."),
)
DNS_COUNTERS: Final = {
    "queries": ("vswitch_dns_queries", "Client queries received."),
    "local": ("vswitch_dns_local_answers", "Queries answered from local names."),
    "cache_hits": ("vswitch_dns_cache_hits", "Queries answered from the cache."),
    "forwarded": ("vswitch_dns_forwarded", "Queries sent upstream, retries included."),
    "merged": ("vswitch_dns_merged", "Queries joined to an identical pending one."),
    "spoofed": ("vswitch_dns_spoofed_replies",
                "Upstream replies ignored: wrong server, port, ID or question."),
    "malformed": ("vswitch_dns_malformed", "Undecodable queries and replies."),
    "servfail": ("vswitch_dns_servfail", "SERVFAIL answers sent."),
    "pending_full": ("vswitch_dns_pending_full",
                     "Queries refused because too many were pending upstream."),
    "timeouts": ("vswitch_dns_upstream_timeouts",
                 "Upstream attempts that got no accepted reply in time."),
    "memo_hits": ("vswitch_dns_memo_hits", "Repeat queries answered from remembered bytes."),
    "rate_limited": ("vswitch_dns_rate_limited",
                     "Queries over their guest's budget, answered REFUSED."),
}
#: ``show router`` keys that are levels, not counts: (family, help, labels).
ROUTER_GAUGES: Final = {
    "arp_guests": ("vswitch_router_arp_entries", "Entries in the router's ARP caches.",
                   {"side": "guests"}),
    "arp_outside": ("vswitch_router_arp_entries", "Entries in the router's ARP caches.",
                    {"side": "outside"}),
    "flows": ("vswitch_uplink_flows", "Flows the uplink holds (host sockets or NAT entries).",
              {}),
    "conntrack": ("vswitch_uplink_flows", "Flows the uplink holds (host sockets or NAT entries).",
                  {}),
    "max_flows": ("vswitch_uplink_flows_limit", "Most flows the uplink takes.", {}),
    "max_per_guest": ("vswitch_uplink_flows_per_guest_limit",
                      "Most flows one guest address may hold.", {}),
    "guests_with_flows": ("vswitch_uplink_guests_with_flows",
                          "Guest addresses holding flows.", {}),
    "tcp_buffered": ("vswitch_uplink_tcp_buffered_bytes",
                     "TCP data the host uplink's flows hold.", {}),
    "tcp_buffer_budget": ("vswitch_uplink_tcp_buffer_budget_bytes",
                          "TCP data all flows may hold before their windows narrow.", {}),
}
#: ``show router`` keys that name the uplink, as labels of ``vswitch_uplink_info``.
ROUTER_INFO: Final = {"uplink": "kind", "uplink_address": "address",
                      "host_address": "host_address", "ping": "ping"}
#: Router keys that are drops without a ``drop-`` prefix: packets held for an ARP answer that
#: never came (or that found the hold queue full), and undecodable packets.
ROUTER_DROPS: Final = {"held_dropped": "arp-unresolved", "malformed": "malformed",
                       "malformed-from-uplink": "malformed-from-uplink"}


def _number(value: Any) -> float | None:
    """A view's number, or None for what is not one (text, lists, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _snake(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key).lower()


def port_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    up = GaugeMetricFamily("vswitch_port_up", "1 if the port's link is up (carrier, peer).",
                           labels=["port", "type"])
    macs = GaugeMetricFamily("vswitch_port_mac_entries", "MAC table entries on the port.",
                             labels=["port"])
    mtu = GaugeMetricFamily("vswitch_port_mtu_bytes", "The port's MTU.", labels=["port"])
    counters = {key: CounterMetricFamily(name, text, labels=["port"])
                for key, name, text in PORT_COUNTERS}
    segmented = CounterMetricFamily("vswitch_port_software_segmented",
                                    "Super-frames cut in software for the port's device.",
                                    labels=["port"])
    checksummed = CounterMetricFamily("vswitch_port_software_checksummed",
                                      "Checksums finished in software for the port's device.",
                                      labels=["port"])
    drops = CounterMetricFamily("vswitch_port_drops", "Frames dropped, by port and reason.",
                                labels=["port", "reason"])
    for row in rows:
        port = str(row["name"])
        up.add_metric([port, str(row.get("type", ""))], 1.0 if row.get("state") == "up" else 0.0)
        macs.add_metric([port], _number(row.get("macs")) or 0.0)
        mtu.add_metric([port], _number(row.get("mtu")) or 0.0)
        for key, family in counters.items():
            family.add_metric([port], _number(row.get(key)) or 0.0)
        software = row.get("software") or {}
        segmented.add_metric([port], _number(software.get("segmented")) or 0.0)
        checksummed.add_metric([port], _number(software.get("checksummed")) or 0.0)
        for reason, count in sorted((row.get("drops") or {}).items()):
            drops.add_metric([port, str(reason)], _number(count) or 0.0)
    yield from (up, *counters.values(), drops, macs, mtu, segmented, checksummed)


def switch_families(info: dict[str, Any]) -> Iterator[Metric]:
    if not info:
        return
    name = GaugeMetricFamily("vswitch_switch_info", "The switch's name.", labels=["name"])
    name.add_metric([str(info.get("name", ""))], 1.0)
    yield name
    for key, family, text in (("mac_entries", "vswitch_fdb_entries", "MAC table entries."),
                              ("mac_limit", "vswitch_fdb_entries_limit",
                               "Most MAC table entries the switch holds."),
                              ("mac_aging", "vswitch_fdb_aging_seconds",
                               "Seconds an unrefreshed MAC table entry lives.")):
        value = _number(info.get(key))
        if value is not None:
            yield GaugeMetricFamily(family, text, value=value)
    for key, family, text in FDB_COUNTERS:
        value = _number(info.get(key))
        if value is not None:
            yield CounterMetricFamily(family, text, value=value)


def conntrack_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    yield GaugeMetricFamily("vswitch_conntrack_entries", "Flows in show conntrack.",
                            value=float(len(rows)))
    by_state = GaugeMetricFamily("vswitch_conntrack_entries_by_state",
                                 "Flows in show conntrack, by protocol and state.",
                                 labels=["proto", "state"])
    counts = Counter((str(r.get("proto", "")), str(r.get("state", ""))) for r in rows)
    for (proto, state), count in sorted(counts.items()):
        by_state.add_metric([proto, state], float(count))
    yield by_state


def forward_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    yield GaugeMetricFamily("vswitch_forwards", "Port forwards to guests.",
                            value=float(len(rows)))


def lease_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    leases = GaugeMetricFamily("vswitch_dhcp_leases",
                               "DHCP lease table entries, by state (bound: leased).",
                               labels=["state"])
    counts = Counter(str(r.get("state", "")) for r in rows)
    counts["bound"] += 0  # the usual series exists from the start, at 0
    for state, count in sorted(counts.items()):
        leases.add_metric([state], float(count))
    yield leases


def dhcp_families(stats: dict[str, Any]) -> Iterator[Metric]:
    sent = CounterMetricFamily("vswitch_dhcp_replies", "DHCP replies sent, by message type.",
                               labels=["type"])
    events = CounterMetricFamily("vswitch_dhcp_events",
                                 "DHCP requests left unanswered (by reason), releases, "
                                 "declines, expiries, malformed messages.", labels=["event"])
    replies: Counter[str] = Counter({"offer": 0, "ack": 0, "nak": 0})
    for key, value in sorted(stats.items()):
        number = _number(value)
        if number is None or key == "leases":  # the lease count is vswitch_dhcp_leases
            continue
        if key.startswith("sent_"):
            replies[key.removeprefix("sent_")] += int(number)
        else:
            events.add_metric([key], number)
    for kind, count in sorted(replies.items()):
        sent.add_metric([kind], float(count))
    yield sent
    yield events


def dns_families(stats: dict[str, Any]) -> Iterator[Metric]:
    for key, value in sorted(stats.items()):
        number = _number(value)
        if number is None:
            continue
        if key == "cache_entries":
            yield GaugeMetricFamily("vswitch_dns_cache_entries", "Answers in the DNS cache.",
                                    value=number)
            continue
        name, text = DNS_COUNTERS.get(key, (f"vswitch_dns_{_snake(key)}",
                                            f"DNS counter {key} (vswitch show dns)."))
        yield CounterMetricFamily(name, text, value=number)


def router_families(stats: dict[str, Any]) -> Iterator[Metric]:
    if not stats:
        return
    drops = CounterMetricFamily("vswitch_router_drops", "Packets the router dropped, by reason.",
                                labels=["reason"])
    events = CounterMetricFamily("vswitch_router_events",
                                 "Router and uplink counters other than drops (vswitch show "
                                 "router).", labels=["event"])
    gauges: dict[str, GaugeMetricFamily] = {}
    info: dict[str, str] = {}
    for key, value in sorted(stats.items()):
        if key in ROUTER_INFO:
            info[ROUTER_INFO[key]] = str(value)
            continue
        number = _number(value)
        if number is None:
            continue
        if key in ROUTER_GAUGES:
            name, text, labels = ROUTER_GAUGES[key]
            family = gauges.setdefault(name, GaugeMetricFamily(name, text, labels=list(labels)))
            family.add_metric(list(labels.values()), number)
        elif key.startswith("drop-"):
            drops.add_metric([key.removeprefix("drop-")], number)
        elif key in ROUTER_DROPS:
            drops.add_metric([ROUTER_DROPS[key]], number)
        else:
            events.add_metric([key], number)
    yield drops
    yield events
    yield from gauges.values()
    if info:
        names = sorted(info)
        uplink = GaugeMetricFamily("vswitch_uplink_info", "The uplink: kind, addresses, ping "
                                   "mode.", labels=names)
        uplink.add_metric([info[k] for k in names], 1.0)
        yield uplink


#: view name -> what turns its data into metric families.
SECTIONS: Final[tuple[tuple[str, Callable[[Any], Iterable[Metric]]], ...]] = (
    ("switch", switch_families),
    ("ports", port_families),
    ("conntrack", conntrack_families),
    ("forwards", forward_families),
    ("leases", lease_families),
    ("dhcp", dhcp_families),
    ("dns", dns_families),
    ("router", router_families),
)


class ViewCollector:
    """A prometheus_client collector over the daemon's views, read at each scrape."""

    def __init__(self, views: Callable[[], Views]) -> None:
        self.views = views

    def collect(self) -> Iterator[Metric]:
        views = self.views()
        for name, families in SECTIONS:
            view = views.get(name)
            if view is None:  # Rule 2: the part is not there
                continue
            try:
                built = list(families(view()))
            except Exception:  # Rule 2: one broken view must not blank the whole scrape
                log.exception("metrics: the %s view failed; left out of this scrape", name)
                continue
            yield from built


def exposition(views: Callable[[], Views]) -> bytes:
    """The text exposition (format 0.0.4) of ``views``, as ``GET /metrics`` answers it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(views))
    return generate_latest(registry)


# -- the HTTP endpoint -----------------------------------------------------------------------

def url(host: str, port: int) -> str:
    """The endpoint's URL for a log line (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  431: "Request Header Fields Too Large", 500: "Internal Server Error"}


class BadRequest(Exception):
    """A request we answer with ``status`` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class MetricsServer:
    """``GET /metrics`` over HTTP/1.x on the daemon's loop; one request per connection."""

    def __init__(self, views: Callable[[], Views], host: str, port: int) -> None:
        self.views = views
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None
        self.clients = 0

    async def start(self) -> tuple[str, int]:
        """Listen; the address bound (the port is the kernel's choice when 0 was asked)."""
        self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                 limit=MAX_LINE, reuse_address=True)
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:  # Rule 3
            writer.close()
            return
        self.clients += 1
        try:
            try:
                async with asyncio.timeout(TIMEOUT):
                    method = await self._request(reader)
                status, body = 200, exposition(self.views)
            except BadRequest as exc:
                status, body, method = exc.status, f"{REASONS[exc.status]}\n".encode(), "GET"
            head = (f"HTTP/1.1 {status} {REASONS[status]}\r\n"
                    f"Content-Type: {CONTENT_TYPE_PLAIN_0_0_4 if status == 200 else 'text/plain'}"
                    f"\r\nContent-Length: {len(body)}\r\n"
                    + ("Allow: GET, HEAD\r\n" if status == 405 else "")
                    + "Connection: close\r\n\r\n")
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            async with asyncio.timeout(TIMEOUT):
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled: nothing to answer
        except Exception:  # Rule 3: a bug here must not take the loop's other work down
            log.exception("metrics: request failed")
        finally:
            self.clients -= 1
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> str:
        """Read the request head; its method, or BadRequest with the status to answer."""
        try:
            line = await reader.readline()
            if not line:  # connected and closed: nobody to answer
                raise asyncio.IncompleteReadError(b"", None)
            for _ in range(MAX_HEADERS):  # headers are read to their end and ignored
                header = await reader.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
            else:
                raise BadRequest(431)
        except ValueError:  # a line longer than MAX_LINE (the stream's limit)
            raise BadRequest(431) from None
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(400)
        method, target, _ = parts
        if target.partition("?")[0] != "/metrics":
            raise BadRequest(404)
        if method not in ("GET", "HEAD"):
            raise BadRequest(405)
        return method

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
