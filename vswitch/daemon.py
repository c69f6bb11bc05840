"""The composition root: builds the switch and its ports from a Config and runs them.

Nothing else wires objects together.  Per frame, the work is one synchronous call chain from a
port's reader callback: read -> ``Switch.receive`` -> ``Port.send`` on each output port; no queue,
future or task sits in between (docs/architecture.md: one asyncio hop costs more than the decision).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhcp.client import Bound, DhcpClient
from dhcp.client6 import Dhcp6Client
from dhcp.dns import DnsResponder
from nat.conntrack import Conntrack, Timeouts
from nat.egress import HostEgress
from nat.gateway import Gateway
from nat.gateway6 import Gateway6
from nat.router import Out, Router, UplinkAddress
from nat.uplink6 import StaticAddress6, UplinkStation6
from nat.uplinks import RawNat, Uplink
from vswitch.config import Config, PortConfig
from vswitch.control import ControlError, ControlServer
from vswitch.dhcp_service import V6_LEASES, DhcpService, dhcp6_config, dhcp_config, ip_text
from vswitch.dns_service import DnsService, host_resolvers, ipv6_names
from vswitch.events import MacAged, MacEvicted, MacFlapping, MacMoved
from vswitch.fdb import Event, ForwardingTable
from vswitch.guard import Guard
from vswitch.observe import Mirror, Watch
from vswitch.ports.attach import AttachPort
from vswitch.ports.base import Port
from vswitch.ports.dgram import DgramPort
from vswitch.ports.internal import InternalPort
from vswitch.ports.router import RouterPort
from vswitch.ports.stream import StreamPort
from vswitch.ports.tap import TapPort
from vswitch.ports.uplink import RawUplink
from vswitch.privileges import drop_privileges
from vswitch.switch import Switch
from vswitch.watching import Watching
from wire.ipv6 import Ipv6, shifted
from wire.packets import format_ip, format_mac, qemu_mac
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN

if TYPE_CHECKING:  # imported when [metrics] asks for it: prometheus_client takes ~70 ms
    from vswitch.metrics import MetricsServer

log = logging.getLogger("vswitch")
TICK = 1.0  # link polling and FDB ageing granularity, seconds


def make_port(port_id: int, pc: PortConfig) -> Port:
    if pc.type == "tap":
        return TapPort(port_id, pc.name, pc.mtu, pc.mac_limit, pc.owner, pc.group,
                       pc.persistent)
    if pc.type == "internal":
        return InternalPort(port_id, pc.name, pc.mtu, pc.mac_limit, pc.netns)
    if pc.type == "attach":
        assert pc.interface is not None
        return AttachPort(port_id, pc.name, pc.mtu, pc.mac_limit, pc.interface)
    assert pc.path is not None
    if pc.type == "stream":
        return StreamPort(port_id, pc.name, pc.mtu, pc.mac_limit, pc.path, pc.mode, pc.connect)
    return DgramPort(port_id, pc.name, pc.mtu, pc.mac_limit, pc.path, pc.peer, pc.mode)


def gateway_mac(config: Config) -> bytes:
    """The configured gateway MAC, or a stable one in qemu's 52:54:00 range from the name."""
    assert config.network is not None
    if config.network.gateway_mac:
        return bytes.fromhex(config.network.gateway_mac.replace(":", ""))
    return derived_mac(config, "gateway")


PROTOS = {"tcp": 6, "udp": 17}
SHOWABLE = ("ports", "fdb", "leases", "dhcp", "dns", "conntrack", "forwards", "router",
            "switch", "topology")


def derived_mac(config: Config, role: str) -> bytes:
    """A stable MAC in qemu's 52:54:00 range for one of the router's own stations."""
    return qemu_mac(f"{role}:{config.name}")


def uplink_mac(config: Config) -> bytes:
    assert config.uplink is not None
    if config.uplink.mac:
        return bytes.fromhex(config.uplink.mac.replace(":", ""))
    return derived_mac(config, "uplink")


def build_conntrack(config: Config, external: bytes) -> Conntrack:
    """The conntrack for one external address, with the configured forwards."""
    n = config.nat
    conntrack = Conntrack(external, n.port_range,
                          Timeouts(n.tcp_established, n.tcp_transitory, n.udp, n.icmp,
                                   n.fragments),
                          n.max_entries, n.filtering, max_per_guest=n.max_per_guest)
    for f in config.forwards:
        if len(f.to_ip.packed) == len(external):  # IPv4 forwards here, IPv6 ones in NAT66's
            conntrack.add_forward(PROTOS[f.proto], range(f.ports[0], f.ports[1] + 1),
                                  f.to_ip.packed, f.to_port)
    return conntrack


def build_station6(config: Config) -> UplinkStation6:
    """The raw uplink's own IPv6 station: a static address, SLAAC, or a DHCPv6 lease."""
    up = config.uplink
    assert up is not None and up.address6
    static = None
    if up.address6 == "static":
        assert up.address6_static is not None and up.gateway6 is not None
        static = StaticAddress6(up.address6_static.ip.packed,
                                up.address6_static.network.prefixlen, up.gateway6.packed)
    client = Dhcp6Client(uplink_mac(config)) if up.address6 == "dhcp" else None
    return UplinkStation6(uplink_mac(config), up.address6, static=static, client=client,
                          link_mtu=up.mtu)


def build_nat(config: Config, gateway: Gateway) -> tuple[Conntrack | None, Router]:
    """The router behind the gateway, with a conntrack in nat mode (both once the uplink has
    an address: at once when static, on the first lease with DHCP)."""
    net, up = config.network, config.uplink
    assert net is not None and up is not None
    subnet = (int(net.subnet.network_address), net.subnet.prefixlen)
    if up.type == "host" or up.dhcp:  # host: the egress is built by run()
        return None, Router(gateway, net.mode, subnet, None, None)
    assert up.address is not None and up.gateway is not None
    uplink = UplinkAddress(up.address.ip.packed, up.address.network.prefixlen,
                           uplink_mac(config), up.gateway.packed, up.mtu)
    conntrack = build_conntrack(config, uplink.ip) if net.mode == "nat" else None
    return conntrack, Router(gateway, net.mode, subnet, uplink, conntrack)


def build_gateway(config: Config) -> Gateway:
    """The gateway's own station; a host uplink's host address other than the gateway's own
    is an alias of it (nat.gateway Rule 5)."""
    net, up = config.network, config.uplink
    assert net is not None
    host = up.host_address if up is not None and up.type == "host" else None
    aliases = frozenset({host.packed}) if host is not None and host != net.gateway \
        else frozenset()
    gateway = Gateway(gateway_mac(config), net.gateway.packed, net.subnet.prefixlen, aliases)
    if net.subnet6 is not None and net.gateway6 is not None:
        gateway.v6 = Gateway6(gateway.mac, net.gateway6.packed,
                              net.subnet6.network_address.packed, net.subnet6.prefixlen,
                              managed=net.dhcp_range6 is not None,
                              isolated=net.mode == "isolated", domain=net.domain)
        # gateway6 Rule 12: a default route only where IPv6 leaves (the host uplink, or a
        # raw one with an IPv6 address of its own)
        gateway.v6.default_route = up is not None and (up.type == "host" or bool(up.address6))
    return gateway


def build_guard(config: Config, router_port: RouterPort | None, first_port: int) -> Guard:
    """The port guards: the gateway's addresses (Rule 1), DHCP served (Rule 2), each guest
    port's setting (Rules 3-4) and the static hosts' bindings (Rules 5-6).  Leases are bound
    as they change (``Daemon._leases_changed``)."""
    net = config.network
    if router_port is None or net is None:
        guard = Guard(b"", frozenset())
    else:
        gateway = router_port.gateway
        v6 = gateway.v6
        guard = Guard(gateway.mac, frozenset({gateway.ip, *gateway.aliases}),
                      frozenset(v6.addresses) if v6 is not None else frozenset(),
                      dhcp4=net.dhcp,
                      subnet6=None if net.subnet6 is None
                      else (net.subnet6.network_address.packed, net.subnet6.prefixlen))
        if v6 is not None:
            neighbours = v6.neighbours

            def heard(address: bytes) -> bytes | None:
                entry = neighbours.get(address)
                return entry[0] if entry is not None else None

            guard.heard = heard
        for host in net.dhcp_hosts:
            if host.mac:
                mac = bytes.fromhex(host.mac.replace(":", ""))
                guard.bind_static(host.ip.packed, mac)
                if host.ip6 is not None:
                    guard.bind_static(host.ip6.packed, mac)
    for i, pc in enumerate(config.ports):
        if pc.guard is not False:
            guard.add_port(first_port + i, strict=pc.guard == "strict", ra_guard=pc.ra_guard,
                           macs=tuple(bytes.fromhex(m.replace(":", "")) for m in pc.macs))
    return guard


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.fdb = ForwardingTable(aging=config.mac_aging, limit=config.mac_limit)
        self.switch = Switch(self.fdb, on_event=self._on_event)
        # ports[id] -> Port; id 0 is the router port when there is a [network].
        self.ports: list[Port | None] = [None]
        self.router_port: RouterPort | None = None
        self.uplink_port: RawUplink | None = None  # the raw uplink's packet socket
        self.conntrack: Conntrack | None = None
        self.egress: HostEgress | None = None
        #: The uplink as show and forwards see it: the host egress, or the raw uplink's NAT.
        self.uplink: Uplink | None = None
        if config.network is not None:
            gateway = build_gateway(config)
            router = None
            if config.uplink is not None:
                self.conntrack, router = build_nat(config, gateway)
            self.router_port = RouterPort(gateway, router,
                                          fragment_timeout=config.nat.fragments)
            if config.uplink is not None and config.uplink.type == "raw":
                router6 = self.router_port.router6
                self.uplink = RawNat(router, router6)
                if config.uplink.address6 and router6 is not None:
                    router6.station = build_station6(config)
                    router6.station.on_change = self._uplink_address6
            self.ports[0] = self.router_port
            self.switch.add_port(0, up=False)
            if config.uplink is not None and config.uplink.type == "raw":
                self.uplink_port = RawUplink(config.uplink.interface, self.router_port,
                                        uplink_mac(config))
                if config.uplink.dhcp:
                    self.uplink_port.lease_by_dhcp(DhcpClient(uplink_mac(config), config.name),
                                              self._uplink_lease)
        #: The port guards (vswitch.guard) and the ports they check.
        self.guard = build_guard(config, self.router_port, len(self.ports))
        self._guarded = frozenset(self.guard.ports)
        #: Mirror targets: ports taken out of switching, that only send copies (observe).
        self._mirror_targets = {m.to for m in config.mirrors}
        for pc in config.ports:
            port = make_port(len(self.ports), pc)
            self.ports.append(port)
            if pc.name not in self._mirror_targets:
                self.switch.add_port(port.id, mtu=pc.mtu, up=False, isolated=pc.isolated,
                                     storm_limit=config.storm_limit if pc.storm_limit is None
                                     else pc.storm_limit)
            self.fdb.set_port_limit(port.id, pc.mac_limit)
        self.control = ControlServer(config.socket, {
            "show": self._show,
            "forward": self._forward,
            "trace": lambda r: self.watching.trace(r),
            "capture": lambda r: self.watching.capture(r),
            "explain": lambda r: self.watching.explain(r),
            "ping": lambda _: "pong",
        }, owner=config.user, group=config.socket_group)
        self.watch = Watch(self.switch, self.ports, self.router_port, self._name,
                           self._guarded, self.guard)
        ids = {p.name: p.id for p in self.ports if p is not None}
        self.watch.mirrors = [Mirror(frozenset(ids[n] for n in m.sources), ids[m.to],
                                     m.direction != "tx", m.direction != "rx")
                              for m in config.mirrors]
        #: The control socket's trace, capture and explain requests (vswitch.watching).
        self.watching = Watching(self.watch, self.switch, self.fdb, self.ports,
                                 self.router_port, self.uplink_port, self._name,
                                 host_uplink=config.uplink is not None
                                 and config.uplink.type == "host")
        self._evicted: Counter[int] = Counter()
        self._flapping: dict[bytes, float] = {}
        self._stop = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dhcp: DhcpService | None = None
        self.dns: DnsService | None = None
        self.metrics: MetricsServer | None = None  # the Prometheus endpoint, with [metrics]

    # -- datapath -------------------------------------------------------------------------------

    def _make_deliver(self) -> Any:
        """The delivery closure: the guards on guarded ports' frames (vswitch.guard Rule 7:
        a few byte compares for data), then the switch."""
        receive = self.switch.receive
        ports = self.ports
        guarded = self._guarded
        check = self.guard.check
        drops = self.switch.drops

        def deliver(packet: bytes, port_id: int, now: float) -> None:
            if port_id in guarded:
                reason = check(packet, port_id)
                if reason is not None:
                    drops[port_id][reason] += 1
                    return
            for out in receive(packet, port_id, now):
                ports[out].send(packet)  # type: ignore[union-attr]

        return deliver

    # -- events (one log line each, never per frame) ---------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, MacEvicted):
            self._evicted[event.port] += 1  # summarised once a tick: a flood evicts per frame
        elif isinstance(event, MacFlapping):
            assert self.loop is not None
            self._flapping[event.mac] = self.loop.time() + 60
            names = ", ".join(self._name(p) for p in event.ports)
            log.warning("MAC %s is flapping between ports %s (%d moves in 10 s): two guests "
                        "probably share this address; give each qemu its own "
                        "-device ...,mac=52:54:00:xx:xx:xx", format_mac(event.mac), names,
                        event.moves)
        elif isinstance(event, MacMoved) and event.mac not in self._flapping:
            log.info("MAC %s moved from %s to %s", format_mac(event.mac),
                     self._name(event.old_port), self._name(event.new_port))

    def _name(self, port_id: int) -> str:
        port = self.ports[port_id] if 0 <= port_id < len(self.ports) else None
        return port.name if port is not None else f"#{port_id}"

    def _on_port_state(self, port: Port, up: bool) -> None:
        if port.name not in self._mirror_targets:  # a mirror target is not switched
            self.switch.set_up(port.id, up)
        if not up:
            self.guard.link_down(port.id)  # guard Rule 4: the next guest may have another MAC
        log.info("port %s (%s) %s: %s", port.name, port.kind, "up" if up else "down",
                 port.detail())

    def _tick(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        for port in (*self.ports, self.uplink_port):
            if port is not None:
                port.poll()  # carrier, offloads, kernel drops
        deadline = self.fdb.next_deadline()
        if deadline is not None and deadline <= now:
            aged = self.fdb.expire(now)
            if isinstance(aged, MacAged):
                log.debug("%d MAC entries aged out", aged.count)
        for port_id, count in self._evicted.items():
            log.warning("MAC table full (%d entries): evicted %d entries from port %s, the port "
                        "holding the most", self.fdb.limit, count, self._name(port_id))
        self._evicted.clear()
        self._flapping = {m: t for m, t in self._flapping.items() if t > now}
        if self.router_port is not None and self.router_port.router is not None:
            self.router_port.router.expire(now)
        if self.egress is not None:
            self.egress.expire(now)
        self.loop.call_later(TICK, self._tick)

    # -- control ---------------------------------------------------------------------------

    def _show(self, request: dict[str, Any]) -> Any:
        """``vswitch show WHAT``: the view each part provides for it (``views``)."""
        view = self.views().get(str(request.get("what")))
        if view is None:
            raise ControlError(f"cannot show {request.get('what')!r}; try "
                               + ", ".join(SHOWABLE))
        return view()

    def views(self) -> dict[str, Callable[[], Any]]:
        """What each part shows, by the name ``show`` takes; a part that is not there shows
        as empty."""
        assert self.loop is not None
        loop, outside, dhcp, dns = self.loop, self.uplink, self.dhcp, self.dns
        return {
            "ports": self._ports_view,
            "fdb": lambda: [{"mac": format_mac(mac), "port": self._name(port), "port_id": port,
                             "ageing": round(left, 1)}
                            for mac, port, left in self.fdb.entries(loop.time())],
            "leases": dhcp.rows if dhcp is not None else list,
            "dhcp": dhcp.stats if dhcp is not None else dict,
            "dns": dns.stats if dns is not None else dict,
            "conntrack": (lambda: outside.flow_rows(loop.time())) if outside is not None
            else list,
            "forwards": outside.forward_rows if outside is not None else list,
            "router": self._router_view,
            "topology": self._topology_view,
            "switch": lambda: {"name": self.config.name, "mac_entries": len(self.fdb),
                               "mac_limit": self.fdb.limit, "mac_aging": self.fdb.aging,
                               "learned": self.fdb.learned, "moved": self.fdb.moved,
                               "evicted": self.fdb.evicted, "aged": self.fdb.aged,
                               "flooded": self.switch.flooded,
                               "mirror_copies": self.watch.mirror_copies,
                               "config": self.config.source},
        }

    def _ports_view(self) -> list[dict[str, Any]]:
        rows = [self._port_row(p) for p in self.ports if p is not None]
        if self.uplink_port is not None:  # not a switch port, but frames go through it too
            rows.append(self.uplink_port.describe() | {"macs": 0, "mac_limit": None})
        return rows

    def _router_view(self) -> dict[str, Any]:
        """The router's counters, the uplink's own stats, and the gateway's: its stack's
        counters (IPv4 and IPv6) and its reassembly."""
        port = self.router_port
        if port is None:
            return {}
        gateway = port.gateway
        to_gateway = {f"gateway-reassembly-{k}": v for k, v in port.reassembly.stats.items()}
        to_gateway |= {f"gateway-{k}": v for k, v in gateway.counters.items()}
        if gateway.v6 is not None:
            to_gateway |= {f"gateway6-{k}": v for k, v in gateway.v6.counters.items()}
            to_gateway |= {f"gateway6-reassembly-{k}": v
                           for k, v in gateway.v6.reassembly.stats.items()}
        if port.router6 is not None:
            to_gateway |= port.router6.stats()
        if port.router is None:
            return to_gateway
        outside = self.uplink.stats() if self.uplink is not None else {}
        return port.router.stats() | to_gateway | outside

    def _topology_view(self) -> dict[str, Any]:
        """``show topology``: the other views joined (vswitch.topology), with the gateway, the
        uplink, the router's guest ARP cache and the config's static names."""
        from vswitch.topology import topology

        assert self.loop is not None
        views, net, up = self.views(), self.config.network, self.config.uplink
        port = self.router_port
        router = port.router if port is not None else None
        gateway = uplink = None
        static: dict[str, str] = {}
        if port is not None and net is not None:
            gateway = {"ip": str(net.gateway), "mac": format_mac(port.gateway.mac),
                       "subnet": str(net.subnet), "mode": net.mode}
            for host in (*net.dns_hosts, *net.dhcp_hosts):
                if host.name:
                    static[str(host.ip)] = host.name
                    if host.mac:
                        static[host.mac] = host.name
        if up is not None and up.type == "host":
            uplink = {"kind": "host", "address": up.host_address and str(up.host_address)}
        elif up is not None and router is not None:
            own = router.uplink_address
            uplink = {"kind": "raw", "interface": up.interface,
                      "address": own and f"{socket.inet_ntoa(own.ip)}/{own.prefix}",
                      "next_hop": own and socket.inet_ntoa(own.next_hop)}
        neighbours = [] if router is None else [
            (socket.inet_ntoa(ip), format_mac(mac))
            for ip, mac in router.guest_neighbours(self.loop.time())]
        return topology(self.config.name, views["ports"](), views["fdb"](), views["leases"](),
                        neighbours, static, gateway, uplink, views["forwards"]())

    def _uplink_lease(self, bound: Bound | None) -> None:
        """The uplink's DHCP lease came, changed or went: rebind the router (and its NAT)."""
        router = self.router_port.router if self.router_port is not None else None
        config, net = self.config, self.config.network
        assert router is not None and net is not None and config.uplink is not None
        if bound is None:
            log.warning("uplink %s lost its DHCP lease: nothing leaves until a new one",
                        config.uplink.interface)
            self.conntrack = None
            router.rebind(None, None)
            return
        old = router.uplink_address
        if getattr(bound, "renewed", False) and old is not None and old.ip == bound.address:
            return
        if bound.router is None:
            log.warning("uplink DHCP lease %s has no router option: nothing can leave",
                        socket.inet_ntoa(bound.address))
            return
        uplink = UplinkAddress(bound.address, bound.prefix, uplink_mac(config), bound.router,
                        bound.mtu or config.uplink.mtu)
        self.conntrack = build_conntrack(config, bound.address) if net.mode == "nat" else None
        router.rebind(uplink, self.conntrack)
        log.info("uplink %s leased %s/%d from %s, next hop %s", config.uplink.interface,
                 socket.inet_ntoa(bound.address), bound.prefix, socket.inet_ntoa(bound.server),
                 socket.inet_ntoa(bound.router))

    def _uplink_address6(self, old: bytes | None, new: bytes | None) -> None:
        """The raw uplink's IPv6 address came (DAD passed), changed or went: NAT66 maps to
        the new one; flows of the old one are gone (Router6 Rule 6)."""
        port, config = self.router_port, self.config
        router6 = port.router6 if port is not None else None
        assert router6 is not None and config.uplink is not None and config.network is not None
        if new is None:
            log.warning("uplink %s lost its IPv6 address %s: IPv6 does not leave until it has "
                        "one", config.uplink.interface, old and format_ip(old))
        else:
            log.info("uplink %s: IPv6 address %s (%s)", config.uplink.interface,
                     format_ip(new), config.uplink.address6)
        if config.network.mode == "nat":
            router6.conntrack = build_conntrack(config, new) if new is not None else None

    def _forward(self, request: dict[str, Any]) -> Any:
        """`vswitch forward add|del|remove` ("remove" is "del", here only): forwards at run
        time, to IPv4 guests (``guest_ip:port``) or IPv6 ones (``[guest_ipv6]:port``), checked
        as the config's are (``parse_forward_target``); open flows are kept."""
        from vswitch.config import ConfigError, parse_forward_target, parse_listen, parse_ports

        outside = self.uplink
        router = self.router_port.router if self.router_port is not None else None
        if outside is None or router is None or self.config.network is None \
                or self.config.network.mode != "nat":
            raise ControlError("forwards need [network] mode = \"nat\"")
        proto = PROTOS.get(str(request.get("proto")))
        if proto is None:
            raise ControlError("proto must be tcp or udp")
        try:
            first, last = parse_ports(request.get("port"), "port")
            listen = str(parse_listen(str(request.get("listen") or "0.0.0.0"), "listen"))
        except ConfigError as exc:
            raise ControlError(str(exc)) from None
        ports = range(first, last + 1)
        what = f"{request['proto']} {listen} {request['port']}" if outside.kind == "host" \
            else f"{request['proto']} {request['port']}"
        try:
            if request.get("action") == "add":
                guest, port = parse_forward_target(str(request.get("to", "")), "to",
                                                   self.config.network, (first, last))
                count = outside.add_forward(proto, ports, listen, guest.packed, port)
                log.info("forward %s added to %s", what, request.get("to"))
                return {"added": f"{what} -> {request.get('to')}", "ports": count}
            if request.get("action") in ("del", "remove"):
                outside.remove_forward(proto, ports, listen)
                log.info("forward %s removed", what)
                return {"removed": what}
        except (KeyError, ValueError, OSError) as exc:
            raise ControlError(f"forward {request.get('action')}: {exc}") from None
        raise ControlError("action must be add or del (remove)")

    def _port_row(self, port: Port) -> dict[str, Any]:
        row = port.describe()
        drops = Counter(row["drops"])
        drops.update(self.switch.drops.get(port.id, {}))
        row["drops"] = dict(drops)
        row["macs"] = self.fdb.count(port.id)
        row["mac_limit"] = port.mac_limit
        row["isolated"] = self.switch.is_isolated(port.id)  # switch Rules 5 and 6
        row["storm_limit"] = self.switch.storm_limit(port.id)
        return row

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        deliver = self.watching.plain = self._make_deliver()
        self.watching.loop = self.loop
        if self.watch.armed:  # mirrors: watched from the start (observe Rule 1)
            deliver = self.watch.deliver()
        opened: list[Port] = []
        try:
            for port in self.ports:
                if port is None:
                    continue
                port.on_state = self._on_port_state
                try:
                    port.open(self.loop, deliver)
                except OSError as exc:
                    raise SystemExit(f"vswitch: port {port.name} ({port.kind}): {exc}") from exc
                opened.append(port)
                log.info("port %s (%s) opened: %s", port.name, port.kind, port.detail())
            self._start_services()
            self._start_host_egress()
            if self.uplink_port is not None:
                try:
                    self.uplink_port.start(self.loop)
                except OSError as exc:
                    raise SystemExit(f"vswitch: uplink {self.uplink_port.interface}: {exc}") \
                        from exc
                opened.append(self.uplink_port)
                up, net = self.config.uplink, self.config.network
                assert up is not None and net is not None
                log.info("uplink %s: %s via %s, mode %s", self.uplink_port.interface,
                         "dhcp" if up.dhcp else up.address,
                         "the lease's router" if up.dhcp else up.gateway, net.mode)
            await self.control.start()
            await self._start_metrics()
            # Everything is open: root is no longer needed ([switch] user, vswitch.privileges)
            drop_privileges(self.config, [p.name for p in opened
                                          if isinstance(p, TapPort) and p.created])
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.add_signal_handler(sig, self._stop.set)
            self.loop.call_later(TICK, self._tick)
            log.info("vswitch %s ready: %d ports, control socket %s", self.config.name,
                     len(opened), self.config.socket)
            await self._stop.wait()
            log.info("shutting down")
        finally:
            self.control.close()
            if self.metrics is not None:
                self.metrics.close()
            if self.egress is not None:
                self.egress.close()
            for service in (self.dns, self.dhcp):
                if service is not None:
                    service.close()
            for port in reversed(opened):
                port.close()

    def _start_host_egress(self) -> None:
        """The host uplink (nat.egress): built once the loop runs; forwards start listening."""
        config, net, up = self.config, self.config.network, self.config.uplink
        if up is None or up.type != "host" or self.router_port is None or self.loop is None:
            return
        router = self.router_port.router
        assert router is not None and net is not None
        loop, port = self.loop, self.router_port

        router6 = port.router6

        def emit(packets: list[bytes]) -> None:
            """Packets for guests, addressed by the router's ARP or NDP cache."""
            if router6 is not None and any(p[22:24] == b"\x86\xdd" for p in packets):
                six = [p for p in packets if p[22:24] == b"\x86\xdd"]
                port.dispatch(router6.to_guests(six, loop.time(), fragment=True))
                packets = [p for p in packets if p[22:24] != b"\x86\xdd"]
            port.dispatch(router.to_guests(packets, loop.time()))

        def deliver(packets: list[bytes]) -> None:
            port.dispatch(Out(packets, []))

        host = up.host_address.packed if up.host_address is not None else None
        n = config.nat
        self.egress = HostEgress(
            loop, emit, deliver, self.router_port.gateway.ip, host, mtu=port.mtu,
            max_flows=n.max_entries,
            endpoint_independent=n.filtering == "endpoint-independent", udp_timeout=n.udp,
            icmp_timeout=n.icmp, tcp_established=n.tcp_established,
            tcp_transitory=n.tcp_transitory, fragment_timeout=n.fragments,
            buffer_budget=up.buffer_mib << 20,
            gateway6=self.router_port.gateway.v6.address
            if self.router_port.gateway.v6 is not None else None,
            max_per_guest=n.max_per_guest)
        router.egress = self.egress  # the egress needs the loop, the router exists before it
        if self.egress.v6 is not None and router6 is not None:
            router6.egress = egress6 = self.egress.v6

            def to_host(frame: bytes, ip: Ipv6, now: float) -> bool:
                """A datagram the gateway reassembled, for the host's ::1 (gateway6 Rule 7)."""
                return egress6.from_guest(NO_OFFLOAD + frame, shifted(ip, VNET_HDR_LEN), now)

            router6.gateway.egress = to_host
        self.uplink = self.egress
        for f in config.forwards:
            try:
                self.egress.add_forward(PROTOS[f.proto], range(f.ports[0], f.ports[1] + 1),
                                        str(f.listen), f.to_ip.packed, f.to_port)
            except OSError as exc:
                raise SystemExit(f"vswitch: forward {f.proto} {f.listen} port {f.ports[0]}: "
                                 f"{exc.strerror or exc}") from exc
        log.info("host uplink: guests reach the outside through this host's sockets; host "
                 "address %s (its loopback), ping %s, %d forwards", up.host_address or "none",
                 self.egress.ping_mode, len(config.forwards))

    def _start_services(self) -> None:
        """DHCP and DNS on the gateway address (in every mode, isolated included)."""
        net = self.config.network
        if self.router_port is None or net is None or self.loop is None:
            return
        if net.dhcp:
            self.dhcp = DhcpService(dhcp_config(net), Path(net.lease_file), self.router_port,
                                    self.loop, dhcp6_config(net, self.router_port.gateway.mac),
                                    requests_per_second=net.dhcp_requests_per_second)
            log.info("DHCP on %s: %s-%s, lease file %s", net.gateway, *net.dhcp_range,
                     net.lease_file)
            self.dhcp.on_leases = self._leases_changed
            six = self.dhcp.server6.leases() if self.dhcp.server6 is not None else []
            self._leases_changed({lease.ip for lease in (*self.dhcp.server.leases(), *six)})
        if net.dns:
            upstreams = net.forwarders if net.forwarders is not None else host_resolvers()
            static = {h.name: str(h.ip) for h in (*net.dns_hosts, *net.dhcp_hosts) if h.name}
            dhcp = self.dhcp

            def hosts() -> dict[str, str]:
                names = {} if dhcp is None else {n: ip_text(a) for n, a in
                                                 dhcp.server.names().items()}
                return {**names, **static}

            responder = DnsResponder(net.domain, hosts, upstreams, subnet=net.subnet,
                                     hosts6=lambda: ipv6_names(net, self.router_port, self.dhcp),
                                     subnet6=net.subnet6)
            self.dns = DnsService(responder, self.router_port, self.loop,
                                  frozenset(n.lower() for n in static),
                                  queries_per_second=net.dns_queries_per_second)
            if dhcp is not None:
                dhcp.on_change = responder.hosts_changed
            log.info("DNS on %s: domain %s, forwarding to %s", net.gateway, net.domain,
                     ", ".join(f"{h}:{p}" for h, p in upstreams) or "nobody")

    def _leases_changed(self, addresses: set[int]) -> None:
        """Leases came, changed or went: the strict guards follow (guard Rules 5-6)."""
        dhcp, bind = self.dhcp, self.guard.bind
        assert dhcp is not None
        for ip in addresses:
            bind(ip.to_bytes(16 if ip >= V6_LEASES else 4, "big"), dhcp.bound(ip))

    async def _start_metrics(self) -> None:
        """The Prometheus endpoint ([metrics]): an HTTP server on this loop, so a scrape reads
        the views between frames, as the control socket does (vswitch.metrics)."""
        metrics = self.config.metrics
        if metrics is None:
            return
        from vswitch.metrics import MetricsServer, url

        self.metrics = MetricsServer(self.views, str(metrics.host), metrics.port)
        try:
            host, port = await self.metrics.start()
        except OSError as exc:
            raise SystemExit(f"vswitch: metrics.listen {metrics.listen}: "
                             f"{exc.strerror or exc}") from exc
        log.info("metrics on %s", url(host, port))

    def stop(self) -> None:
        self._stop.set()


def keep_large_buffers_on_the_heap() -> None:
    """glibc serves allocations above 128 KiB with mmap and gives them back with munmap, so a
    256 KiB host-socket read, and each 64 KiB frame built from it, cost fresh zeroed pages and
    their page faults every time: measured here, that halved the host uplink's download
    throughput.  Raising the mmap and trim thresholds keeps them on the (warm) heap.  The same
    as GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...; a no-op
    on other C libraries."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 4 << 20)
    mallopt(m_trim_threshold, 128 << 20)


def run(config: Config) -> None:
    import uvloop

    keep_large_buffers_on_the_heap()
    uvloop.run(Daemon(config).run())
