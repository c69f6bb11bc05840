"""Configuration: TOML, validated at load with one clear error per mistake.

Rule 1: every key is checked when the file is loaded; an unknown key or a bad value raises
        ``ConfigError`` naming the key (``port[1].mtu``) and what would fix it.
Rule 2: with no file, the embedded ``default.toml`` is used, so ``vswitch run`` works as is.
Rule 3: defaults that depend on the machine (socket paths) are resolved here, once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
)
from pathlib import Path
from typing import Any

PORT_TYPES = ("tap", "internal", "attach", "stream", "dgram")
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # Linux IFNAMSIZ - 1, no '/' or spaces

#: Keys each port type accepts beyond the common ones.
PORT_KEYS: dict[str, set[str]] = {
    "tap": {"owner", "group", "persistent"},
    "internal": {"netns"},
    "attach": {"interface"},
    "stream": {"path", "mode", "connect"},
    "dgram": {"path", "peer", "mode"},
}
COMMON_PORT_KEYS = {"name", "type", "mtu", "mac_limit", "ra_guard", "guard", "macs", "isolated",
                    "storm_limit"}
#: ``guard`` values (vswitch.guard): off, on (Rules 1-3), strict (Rules 1-6).
GUARDS = (False, True, "strict")


class ConfigError(ValueError):
    """A bad config: ``key`` names the offending key, the message says what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class PortConfig:
    name: str
    """Port name; for tap and internal ports also the host interface name."""
    type: str
    """One of PORT_TYPES."""
    mtu: int = 1500
    """Largest non-GSO frame payload accepted from and sent to this port."""
    mac_limit: int | None = None
    """Most FDB entries this port may hold (None: only the switch limit applies)."""
    ra_guard: bool = True
    """Drop router advertisements, redirects and DHCPv6 server messages the guest sends
    (RFC 6105): one guest cannot become every guest's router.  vswitch.guard Rule 3; false
    exempts the port from that rule alone (the other guards stay as ``guard`` says)."""
    guard: bool | str = True
    """vswitch.guard: True (Rules 1-3: nobody speaks for the gateway, no rogue DHCP or
    routers), "strict" (also Rules 4-6: only its MACs and their leased or static addresses),
    False (none; ``ra_guard`` is then moot).  Default: ``[switch] guard``."""
    macs: tuple[str, ...] = ()
    """strict: the MACs the port may send from (lowercase colon form); empty: the first it
    sends from."""
    owner: int | None = None
    """tap: uid allowed to open the TAP (qemu as that user needs no root); names resolved."""
    group: int | None = None
    """tap: gid allowed to open the TAP; names resolved at load."""
    persistent: bool = False
    """tap: keep the TAP when vswitch stops."""
    netns: str | None = None
    """internal: move the interface into this network namespace."""
    interface: str | None = None
    """attach: the existing host interface to join."""
    path: str | None = None
    """stream/dgram: the unix socket vswitch listens on."""
    peer: str | None = None
    """dgram: qemu's socket path (default: whoever sent last)."""
    mode: int = 0o660
    """stream/dgram: permission bits of the socket file."""
    connect: bool = False
    """stream: connect to qemu's listening socket (server=on) instead of listening."""
    isolated: bool = False
    """Reach only the gateway and ports that are not isolated (libvirt's ``<port
    isolated='yes'/>``; vswitch.switch Rule 5)."""
    storm_limit: int | None = None
    """Broadcast, multicast and unknown-unicast frames per second this port may flood, 0: no
    limit (vswitch.switch Rule 6).  None: ``[switch] storm_limit``."""


MODES = ("nat", "route", "isolated", "open")


@dataclass(frozen=True, slots=True)
class StaticHost:
    mac: str | None
    """Hardware address, lowercase colon form (DHCP hosts only)."""
    ip: IPv4Address
    """IPv4 address in the subnet."""
    name: str | None
    """Host name served by DNS."""
    ip6: IPv6Address | None = None
    """IPv6 address in ``subnet6`` (DHCPv6), if any."""


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    mode: str = "nat"
    """nat, route, isolated or open, as libvirt's forward modes."""
    subnet: IPv4Network = IPv4Network("192.168.122.0/24")
    """The guest network."""
    gateway: IPv4Address = IPv4Address("192.168.122.1")
    """The router port's address: gateway, DHCP server and DNS server for the guests."""
    gateway_mac: str = ""
    """The router port's MAC (default: derived from the switch name, in 52:54:00)."""
    dhcp: bool = True
    """Serve DHCP."""
    dhcp_range: tuple[IPv4Address, IPv4Address] = (IPv4Address("192.168.122.2"),
                                                   IPv4Address("192.168.122.254"))
    """First and last address handed out."""
    lease_time: int = 3600
    """Seconds a lease lasts."""
    lease_file: str = ""
    """Where leases survive restarts."""
    authoritative: bool = False
    """NAK INIT-REBOOT requests from unknown clients instead of staying silent."""
    max_leases: int = 0
    """Lease table cap (0: the pool size)."""
    dhcp_hosts: tuple[StaticHost, ...] = ()
    """Fixed addresses by MAC."""
    dns: bool = True
    """Serve DNS."""
    subnet6: IPv6Network | None = None
    """The guest network's IPv6 prefix: RA, DHCPv6 and AAAA (none: IPv4 only)."""
    gateway6: IPv6Address | None = None
    """The router port's IPv6 address (default: the prefix's ::1)."""
    dhcp_range6: tuple[IPv6Address, IPv6Address] | None = None
    """Stateful DHCPv6: first and last address handed out (none: SLAAC only)."""
    domain: str = "vsw.internal"
    """Local DNS domain for guest names."""
    forwarders: tuple[tuple[str, int], ...] | None = None
    """Upstream resolvers (None: the host's /etc/resolv.conf)."""
    dns_hosts: tuple[StaticHost, ...] = ()
    """Extra names served by DNS."""
    dhcp_requests_per_second: int = 10
    """DHCP (and DHCPv6) messages one MAC may send per second, twice that at once; over it
    they are dropped and counted (0: no limit)."""
    dns_queries_per_second: int = 100
    """DNS queries one guest address may send per second, twice that at once; over it they
    are answered REFUSED and counted (0: no limit)."""


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    interface: str = ""
    """raw: the L2 interface the router stands on as a host of its own."""
    address: IPv4Interface | None = None
    """raw: the router's address there and its network (None with ``dhcp``)."""
    dhcp: bool = False
    """raw: lease the address as a DHCP client (``address = "dhcp"``)."""
    gateway: IPv4Address | None = None
    """raw: the next hop for everything off both networks (None with dhcp: the lease's)."""
    mac: str = ""
    """raw: the router's MAC there (default: derived from the switch name)."""
    mtu: int = 1500
    """raw: largest IP packet sent there; DF packets above it get ICMP 3/4."""
    type: str = "host"
    """"host" (the default: the host's own sockets, no privileges) or "raw"."""
    host_address: IPv4Address | None = None
    """host: the guest-network address that stands for the host's loopback (None: none)."""
    buffer_mib: int = 256
    """host: MiB of TCP data all flows may hold together before their windows narrow."""
    address6: str = ""
    """raw: how the uplink's IPv6 station gets its global address (``nat.uplink6``): "slaac"
    (from the routers' advertisements), "dhcp" (DHCPv6, when an advertisement sets M),
    "static" (``address6_static``), or "" (no IPv6 on the uplink)."""
    address6_static: IPv6Interface | None = None
    """raw: the static IPv6 address and its on-link prefix (``address6 = "2001:db8:1::2/64"``);
    None unless ``address6`` is "static"."""
    gateway6: IPv6Address | None = None
    """raw: the IPv6 next hop, required with a static address6 (link-local or in its prefix);
    None otherwise: SLAAC and DHCPv6 take the advertising router."""


@dataclass(frozen=True, slots=True)
class NatConfig:
    port_range: tuple[int, int] = (1024, 65535)
    """External ports for mappings, as libvirt's <nat><port start end>."""
    filtering: str = "address-dependent"
    """Who may use a mapping: "address-dependent" (hosts the guest talked to) or
    "endpoint-independent" (anyone), RFC 4787 REQ-8."""
    max_entries: int = 262144
    """Conntrack table size."""
    max_per_guest: int = 65536
    """Flows one guest address may hold (a connlimit; default: a quarter of max_entries)."""
    tcp_established: int = 7440
    """Seconds (RFC 5382 REQ-5: at least 2 h 4 min)."""
    tcp_transitory: int = 240
    """Seconds (RFC 5382 REQ-5: 4 min)."""
    udp: int = 300
    """Seconds (RFC 4787 REQ-5: at least 2 min)."""
    icmp: int = 60
    """Seconds (RFC 5508 REQ-2)."""
    fragments: int = 30
    """Seconds a fragmented datagram waits for its missing fragments (Linux's ipfrag_time)."""


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    proto: str
    """"tcp" or "udp"."""
    ports: tuple[int, int]
    """First and last external port."""
    to_ip: IPv4Address | IPv6Address
    """Guest address: IPv4 in network.subnet, or IPv6 in network.subnet6 (written
    ``"[fd42:0:0:1::10]:22"``; through the host uplink, or a raw uplink with an
    ``address6``, whose NAT66 forwards from that address)."""
    to_port: int
    """Guest port for the first external port (the rest follow in order)."""
    listen: IPv4Address | IPv6Address | None = None
    """host uplink: the host address the forward listens on (IPv4 or IPv6; default 0.0.0.0);
    None with a raw uplink, which forwards from its own address."""


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    sources: tuple[str, ...]
    """The ports whose frames are copied (``from``)."""
    to: str
    """The port the copies leave by; it is taken out of switching."""
    direction: str = "both"
    """"rx" (what the sources send into the switch), "tx" (what the switch sends them), or
    "both"."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    host: IPv4Address | IPv6Address
    """The address the Prometheus endpoint listens on."""
    port: int
    """Its TCP port."""

    @property
    def listen(self) -> str:
        """host:port as written in the config (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Config:
    name: str = "vsw0"
    """Switch name: names the control socket."""
    mac_aging: float = 300.0
    """Seconds an unrefreshed FDB entry lives."""
    mac_limit: int = 8192
    """Most FDB entries in the whole switch."""
    storm_limit: int = 1000
    """``[switch] storm_limit``: the ports' default flood limit per second (vswitch.switch
    Rule 6, ``STORM_LIMIT``); 0: none."""
    socket: str = ""
    """Control socket path."""
    user: int | None = None
    """``[switch] user``: the uid the daemon changes to once its ports and sockets are open,
    as root (vswitch.privileges); names resolved at load.  None: it stays who it is."""
    group: int | None = None
    """``[switch] group``: the gid it changes to (default: the user's own group)."""
    socket_group: int | None = None
    """``[switch] socket_group``: the control socket's group; its members may read (show,
    trace, capture, explain) and the socket is then mode 0660 (None: 0600)."""
    ports: tuple[PortConfig, ...] = field(default_factory=tuple)
    """The ports, in config order (port ids are 1, 2, ... in that order)."""
    network: NetworkConfig | None = None
    """The router port and its services; None: a plain switch."""
    uplink: UplinkConfig | None = None
    """Where routed traffic leaves; None: nothing leaves the guest network."""
    nat: NatConfig = NatConfig()
    """Conntrack settings (mode nat)."""
    forwards: tuple[ForwardConfig, ...] = ()
    """Port forwards (DNAT) from the uplink address to guests."""
    metrics: MetricsConfig | None = None
    """The Prometheus endpoint; None: no endpoint."""
    mirrors: tuple[MirrorConfig, ...] = ()
    """Mirror (SPAN) ports: copies of some ports' frames out of another."""
    guard: bool | str = True
    """``[switch] guard``: the ports' default ``guard`` (True, "strict" or False)."""
    source: str = "<embedded default>"
    """Where this config came from."""


def state_dir() -> Path:
    """Where lease files live: /var/lib/vswitch as root, else $XDG_STATE_HOME/vswitch."""
    if os.geteuid() == 0:
        return Path("/var/lib/vswitch")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(base) / "vswitch"


def runtime_dir() -> Path:
    """Where sockets go: /run/vswitch as root, else $XDG_RUNTIME_DIR/vswitch (or /tmp)."""
    if os.geteuid() == 0:
        return Path("/run/vswitch")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/vswitch-{os.getuid()}"
    return Path(base) / "vswitch"


def default_socket(name: str = "vsw0") -> str:
    return str(runtime_dir() / f"{name}.sock")


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file, or the embedded default when ``path`` is None."""
    if path is None:
        text = resources.files("vswitch").joinpath("default.toml").read_text()
        source = "<embedded default>"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read config file: {exc.strerror}") from exc
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    return parse_config(data, source)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> Config:
    _only(data, "", {"switch", "control", "port", "network", "dhcp", "dns", "uplink", "nat",
                     "forward", "metrics", "mirror"})
    switch = _table(data, "switch")
    _only(switch, "switch.", {"name", "mac_aging", "mac_limit", "storm_limit", "guard", "user",
                              "group", "socket_group"})
    user, group, socket_group = _identity(switch)
    guard = _guard(switch, "switch.guard", True)
    name = _get(switch, "switch.name", str, "vsw0")
    if not IFNAME.match(name):
        raise ConfigError("switch.name", f"{name!r} must be 1-15 letters, digits, '.', '_' or '-'")
    aging = _number(switch, "switch.mac_aging", 300.0, 1.0, 1e6)
    mac_limit = int(_number(switch, "switch.mac_limit", 8192, 1, 10_000_000, integer=True))
    storm_limit = _storm_limit(switch, "switch.storm_limit", 1000)
    control = _table(data, "control")
    _only(control, "control.", {"socket"})
    sock = _get(control, "control.socket", str, default_socket(name))
    raw_ports = data.get("port", [])
    if not isinstance(raw_ports, list):
        raise ConfigError("port", "must be an array of tables: write each port as [[port]]")
    ports = tuple(_port(raw, i, guard) for i, raw in enumerate(raw_ports))
    seen: dict[str, int] = {}
    for i, port in enumerate(ports):
        if port.name in seen:
            raise ConfigError(f"port[{i}].name",
                              f"{port.name!r} is already the name of port[{seen[port.name]}]")
        seen[port.name] = i
    paths = [p.path for p in ports if p.path]
    for i, port in enumerate(ports):
        if port.path and paths.count(port.path) > 1:
            raise ConfigError(f"port[{i}].path", f"{port.path!r} is used by another port")
    network = _network(data, name) if "network" in data else None
    for section in ("dhcp", "dns", "uplink", "nat", "forward"):
        if network is None and section in data:
            raise ConfigError("network", f"missing; [{section}] needs the [network] it serves")
    uplink = _uplink(data, network) if network is not None else None
    forwards = tuple(_forward(raw, i, network, uplink)
                     for i, raw in enumerate(_array(data, "forward")))
    metrics = _metrics(data) if "metrics" in data else None
    mirrors = _mirrors(data, [p.name for p in ports])
    return Config(name=name, mac_aging=aging, mac_limit=mac_limit, storm_limit=storm_limit,
                  socket=sock, ports=ports,
                  network=network, uplink=uplink, nat=_nat(data), forwards=forwards,
                  metrics=metrics, mirrors=mirrors, guard=guard, user=user, group=group,
                  socket_group=socket_group, source=source)


def _identity(switch: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """``[switch] user``, ``group`` and ``socket_group``, resolved to numbers; the group
    defaults to the user's own (vswitch.privileges)."""
    import pwd

    user = _owner({"user": switch.get("user")}, "switch.user", "user")
    group = _owner({"group": switch.get("group")}, "switch.group", "group")
    socket_group = _owner({"group": switch.get("socket_group")}, "switch.socket_group",
                          "group")
    if group is not None and user is None:
        raise ConfigError("switch.group", "needs switch.user: the group vswitch changes to "
                          "with that user")
    if user is not None and group is None:
        try:
            group = pwd.getpwuid(user).pw_gid
        except KeyError:
            raise ConfigError("switch.group", f"missing; user {user} has no entry in the "
                              "user database to take its group from: name one") from None
    return user, group, socket_group


def _guard(table: dict[str, Any], key: str, default: bool | str) -> bool | str:
    """``guard``: true, false or "strict" (vswitch.guard)."""
    value = table.get(key.rsplit(".", 1)[-1], default)
    if value not in GUARDS or (value in (0, 1) and not isinstance(value, bool)):
        raise ConfigError(key, f"{value!r} must be true (the guards, the default), \"strict\" "
                          "(also only its own MACs and addresses) or false (none)")
    return value  # type: ignore[no-any-return]


def _macs(raw: dict[str, Any], key: str, guard: bool | str) -> tuple[str, ...]:
    """``macs``: the MACs a strict port may send from."""
    value = raw.get("macs")
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise ConfigError(key, 'must be a list of MACs, e.g. macs = ["52:54:00:12:34:56"]')
    if guard != "strict":
        raise ConfigError(key, 'only a strict port keeps to its MACs; add guard = "strict" '
                          "to this port (or [switch] guard = \"strict\") or remove macs")
    return tuple(_mac(m if isinstance(m, str) else repr(m), key) for m in value)


def _port(raw: Any, i: int, guard: bool | str = True) -> PortConfig:
    key = f"port[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a table: write each port as [[port]]")
    kind = _get(raw, f"{key}.type", str, None,
                required="every port needs a type: one of " + ", ".join(PORT_TYPES))
    if kind not in PORT_TYPES:
        raise ConfigError(f"{key}.type", f"{kind!r} is not a port type; use one of "
                          + ", ".join(PORT_TYPES))
    _only(raw, f"{key}.", COMMON_PORT_KEYS | PORT_KEYS[kind],
          hint=f"a {kind} port takes " + ", ".join(sorted(COMMON_PORT_KEYS | PORT_KEYS[kind])))
    name = _get(raw, f"{key}.name", str, None, required="every port needs a name")
    if not IFNAME.match(name):
        raise ConfigError(f"{key}.name", f"{name!r} must be 1-15 letters, digits, '.', '_' or '-' "
                          "(it names a host interface)")
    mtu = int(_number(raw, f"{key}.mtu", 1500, 68, 65521, integer=True))
    limit = raw.get("mac_limit")
    if limit is not None:
        limit = int(_number(raw, f"{key}.mac_limit", None, 1, 10_000_000, integer=True))
    kw: dict[str, Any] = {"name": name, "type": kind, "mtu": mtu, "mac_limit": limit,
                          "ra_guard": _get(raw, f"{key}.ra_guard", bool, True)}
    kw["guard"] = _guard(raw, f"{key}.guard", guard)
    kw["macs"] = _macs(raw, f"{key}.macs", kw["guard"])
    kw["isolated"] = raw.get("isolated", False)
    if not isinstance(kw["isolated"], bool):
        raise ConfigError(f"{key}.isolated", f"{kw['isolated']!r} must be true (the port reaches "
                          "only the gateway and ports that are not isolated) or false")
    if "storm_limit" in raw:
        kw["storm_limit"] = _storm_limit(raw, f"{key}.storm_limit", None)
    if kind == "tap":
        kw["owner"] = _owner(raw, f"{key}.owner", "owner")
        kw["group"] = _owner(raw, f"{key}.group", "group")
        kw["persistent"] = _get(raw, f"{key}.persistent", bool, False)
    elif kind == "internal":
        kw["netns"] = _get(raw, f"{key}.netns", str, None)
    elif kind == "attach":
        kw["interface"] = _get(raw, f"{key}.interface", str, None, required="the host interface "
                               "to join, e.g. interface = \"eth1\"")
    else:
        path = _get(raw, f"{key}.path", str, str(runtime_dir() / f"{name}.sock"))
        if len(path.encode()) > 107:
            raise ConfigError(f"{key}.path", "unix socket paths are limited to 107 bytes")
        kw["path"] = path
        kw["mode"] = int(_number(raw, f"{key}.mode", 0o660, 0, 0o777, integer=True))
        if kind == "dgram":
            kw["peer"] = _get(raw, f"{key}.peer", str, None)
        else:
            kw["connect"] = _get(raw, f"{key}.connect", bool, False)
    return PortConfig(**kw)


def _owner(raw: dict[str, Any], key: str, what: str) -> int | None:
    from .ports.tun import resolve_group, resolve_user

    value = raw.get(what)
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ConfigError(key, f"must be a {what} name or number")
    try:
        return (resolve_user if what in ("owner", "user") else resolve_group)(value)
    except KeyError:
        raise ConfigError(key, f"no such {what} {value!r} on this host") from None


def _storm_limit(table: dict[str, Any], key: str, default: int | None) -> int:
    """A storm limit (vswitch.switch Rule 6): whole frames per second, 0 for none."""
    value = table.get(key.rsplit(".", 1)[-1], default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000_000:
        raise ConfigError(key, f"{value!r} is not a storm limit; use whole frames per second "
                          "from 1 to 10000000 (the default is 1000), or 0 for no limit")
    return value


def _only(table: dict[str, Any], prefix: str, allowed: set[str], hint: str = "") -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}", "unknown key; "
                              + (hint or "valid keys are " + ", ".join(sorted(allowed))))


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table: write [{key}]")
    return value


def _get(table: dict[str, Any], key: str, kind: type, default: Any, required: str = "") -> Any:
    name = key.rsplit(".", 1)[-1]
    if name not in table:
        if required:
            raise ConfigError(key, "missing; " + required)
        return default
    value = table[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(key, f"{value!r} must be a {kind.__name__}")
    return value


def _number(table: dict[str, Any], key: str, default: Any, low: float, high: float,
            integer: bool = False) -> float:
    name = key.rsplit(".", 1)[-1]
    value = table.get(name, default)
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise ConfigError(key, f"{value!r} must be {'an integer' if integer else 'a number'}")
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is out of range; use {low:g} to {high:g}")
    return float(value)


def _network(data: dict[str, Any], switch_name: str) -> NetworkConfig:
    import netaddr

    net = _table(data, "network")
    _only(net, "network.", {"mode", "subnet", "gateway", "gateway_mac", "subnet6",
                            "gateway6"})
    mode = _get(net, "network.mode", str, "nat")
    if mode not in MODES:
        raise ConfigError("network.mode", f"{mode!r} is not a mode; use one of " + ", ".join(MODES))
    text = _get(net, "network.subnet", str, "192.168.122.0/24")
    try:
        subnet = netaddr.IPNetwork(text, version=4)
    except (netaddr.AddrFormatError, ValueError):
        raise ConfigError("network.subnet", f"{text!r} is not a valid IPv4 network") from None
    if subnet.prefixlen > 30:
        raise ConfigError("network.subnet", f"{text!r} leaves no room for guests; use /30 or "
                          "shorter")
    subnet = IPv4Network(str(subnet.cidr))
    gateway = _address(net, "network.gateway", subnet.network_address + 1, subnet)
    mac = _get(net, "network.gateway_mac", str, "")
    if mac:
        mac = _mac(mac, "network.gateway_mac")

    dhcp = _table(data, "dhcp")
    _only(dhcp, "dhcp.", {"enabled", "range", "lease_time", "lease_file", "authoritative",
                          "max_leases", "host", "range6", "requests_per_second"})
    subnet6, gateway6, range6 = _ipv6(net, dhcp, switch_name)
    first, last = subnet.network_address + 2, subnet.broadcast_address - 1
    raw_range = dhcp.get("range", [str(first), str(last)])
    if not (isinstance(raw_range, list) and len(raw_range) == 2):
        raise ConfigError("dhcp.range", "must be [first, last], e.g. "
                          f'["{first}", "{last}"]')
    lo = _address({"range": raw_range[0]}, "dhcp.range", "", subnet)
    hi = _address({"range": raw_range[1]}, "dhcp.range", "", subnet)
    if lo > hi:
        raise ConfigError("dhcp.range", f"first {lo} is after last {hi}")
    if lo <= gateway <= hi:
        raise ConfigError("dhcp.range", f"includes the gateway {gateway}; start after it")
    lease_time = int(_number(dhcp, "dhcp.lease_time", 3600, 120, 10**7, integer=True))
    lease_file = _get(dhcp, "dhcp.lease_file", str, str(state_dir() / f"{switch_name}.leases"))
    hosts = []
    for i, raw in enumerate(_array(dhcp, "dhcp.host")):
        key = f"dhcp.host[{i}]"
        _only(raw, key + ".", {"mac", "ip", "name", "ip6"})
        hosts.append(StaticHost(_mac(_get(raw, key + ".mac", str, None, required="the guest's "
                                          "MAC, e.g. mac = \"52:54:00:00:00:10\""), key + ".mac"),
                                _address(raw, key + ".ip", None, subnet),
                                _hostname(raw, key + ".name"),
                                _address6(raw, key + ".ip6", subnet6)))
    dns = _table(data, "dns")
    _only(dns, "dns.", {"enabled", "domain", "forwarders", "host", "queries_per_second"})
    domain = _get(dns, "dns.domain", str, "vsw.internal").strip(".").lower()
    if not DOMAIN.match(domain):
        raise ConfigError("dns.domain", f"{domain!r} is not a DNS domain name")
    forwarders = None
    if "forwarders" in dns:
        if not isinstance(dns["forwarders"], list):
            raise ConfigError("dns.forwarders", 'must be a list, e.g. ["192.0.2.53"]')
        forwarders = tuple(_server(v, f"dns.forwarders[{i}]")
                           for i, v in enumerate(dns["forwarders"]))
    dns_hosts = []
    for i, raw in enumerate(_array(dns, "dns.host")):
        key = f"dns.host[{i}]"
        _only(raw, key + ".", {"name", "ip"})
        ip = _ipv4(_get(raw, key + ".ip", str, None,
                        required="the address the name resolves to"), key + ".ip")
        dns_hosts.append(StaticHost(None, ip, _hostname(raw, key + ".name", required=True)))
    return NetworkConfig(
        mode=mode, subnet=subnet, gateway=gateway, gateway_mac=mac,
        dhcp=_get(dhcp, "dhcp.enabled", bool, True), dhcp_range=(lo, hi),
        lease_time=lease_time, lease_file=lease_file,
        authoritative=_get(dhcp, "dhcp.authoritative", bool, False),
        max_leases=int(_number(dhcp, "dhcp.max_leases", 0, 0, 10**6, integer=True)),
        dhcp_hosts=tuple(hosts), dns=_get(dns, "dns.enabled", bool, True), domain=domain,
        forwarders=forwarders, dns_hosts=tuple(dns_hosts), subnet6=subnet6, gateway6=gateway6,
        dhcp_range6=range6,
        dhcp_requests_per_second=int(_number(dhcp, "dhcp.requests_per_second", 10, 0, 100000,
                                             integer=True)),
        dns_queries_per_second=int(_number(dns, "dns.queries_per_second", 100, 0, 100000,
                                           integer=True)))


def ula_prefix(switch_name: str) -> IPv6Network:
    """``subnet6 = "auto"``: an RFC 4193 ULA /64 whose 40-bit global ID is taken from a hash
    of the switch name (stable for a switch, unlikely to collide between switches; RFC 4193
    3.2.2 draws it at random once, this draws it from the name so it survives restarts)."""
    global_id = hashlib.sha256(f"vswitch:{switch_name}".encode()).digest()[:5]
    return IPv6Network((b"\xfd" + global_id + bytes(10), 64))


def _ipv6(net: dict[str, Any], dhcp: dict[str, Any], switch_name: str) -> tuple[
        IPv6Network | None, IPv6Address | None, tuple[IPv6Address, IPv6Address] | None]:
    """[network] subnet6 and gateway6, [dhcp] range6: all three checked against each other;
    a setting that needs subnet6 without it is an error, not silence."""
    text = _get(net, "network.subnet6", str, "")
    if not text:
        for key, table in (("network.gateway6", net), ("dhcp.range6", dhcp)):
            if key.split(".")[1] in table:
                raise ConfigError(key, "needs network.subnet6 (an IPv6 prefix such as "
                                  "\"fd42:0:0:1::/64\", or \"auto\")")
        return None, None, None
    try:
        subnet6 = ula_prefix(switch_name) if text == "auto" else IPv6Network(text, strict=False)
    except ValueError:
        raise ConfigError("network.subnet6", f"{text!r} is not an IPv6 prefix; write e.g. "
                          "\"fd42:0:0:1::/64\" or \"auto\"") from None
    if "range6" not in dhcp and subnet6.prefixlen != 64:
        raise ConfigError("network.subnet6", f"{subnet6} is not a /64: SLAAC needs one; use a "
                          "/64, or give dhcp.range6 for stateful DHCPv6 only")
    if not 48 <= subnet6.prefixlen <= 120:
        raise ConfigError("network.subnet6", f"{subnet6}: use a prefix from /48 to /120")
    gateway6 = _address6(net, "network.gateway6", subnet6) or subnet6.network_address + 1
    range6 = None
    if "range6" in dhcp:
        raw = dhcp["range6"]
        if not (isinstance(raw, list) and len(raw) == 2):
            raise ConfigError("dhcp.range6", "must be [first, last], e.g. "
                              f'["{subnet6.network_address + 0x100}", '
                              f'"{subnet6.network_address + 0x1ff}"]')
        lo = _address6({"range6": raw[0]}, "dhcp.range6", subnet6)
        hi = _address6({"range6": raw[1]}, "dhcp.range6", subnet6)
        assert lo is not None and hi is not None
        if lo > hi:
            raise ConfigError("dhcp.range6", f"first {lo} is after last {hi}")
        if lo <= gateway6 <= hi:
            raise ConfigError("dhcp.range6", f"includes the gateway {gateway6}; start after it")
        range6 = (lo, hi)
    return subnet6, gateway6, range6


def _address6(table: dict[str, Any], key: str,
              subnet6: IPv6Network | None) -> IPv6Address | None:
    """An IPv6 host address of ``subnet6`` (not the subnet-router anycast address), or None
    when ``key`` is absent."""
    name = key.rsplit(".", 1)[-1]
    if name not in table:
        return None
    if subnet6 is None:
        raise ConfigError(key, "needs network.subnet6 (an IPv6 prefix such as "
                          "\"fd42:0:0:1::/64\", or \"auto\")")
    text = table[name]
    try:
        address = IPv6Address(str(text))
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IPv6 address") from None
    if address not in subnet6 or address == subnet6.network_address:
        raise ConfigError(key, f"{address} is not a host address of network.subnet6 "
                          f"{subnet6}")
    return address


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
LABEL = re.compile(rf"^{_LABEL}$")


def _array(table: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = table.get(key.rsplit(".", 1)[-1], [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(key, f"must be an array of tables: write each as [[{key}]]")
    return value


def _address(table: dict[str, Any], key: str, default: Any, subnet: IPv4Network) -> IPv4Address:
    """An IPv4 host address of ``subnet`` (not its network or broadcast address)."""
    text = _get(table, key, str, None if default is None else str(default),
                required="" if default else "an IPv4 address")
    addr = _ipv4(text, key)
    if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
        raise ConfigError(key, f"{text} is not a host address in {subnet}")
    return addr


def _ipv4(text: str, key: str) -> IPv4Address:
    import netaddr

    try:
        return IPv4Address(str(netaddr.IPAddress(text, version=4)))
    except (netaddr.AddrFormatError, ValueError):
        raise ConfigError(key, f"{text!r} is not an IPv4 address") from None


def _mac(text: str, key: str) -> str:
    mac = text.lower().replace("-", ":")
    if not MAC.match(mac):
        raise ConfigError(key, f"{text!r} is not a MAC address like 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise ConfigError(key, f"{text} is a multicast address; a station needs a unicast one")
    return mac


def _hostname(table: dict[str, Any], key: str, required: bool = False) -> str | None:
    raw = _get(table, key, str, None, required="a host name" if required else "")
    if raw is None:
        return None
    name = str(raw).lower()
    if not LABEL.match(name):
        raise ConfigError(key, f"{name!r} must be one DNS label: letters, digits and '-', "
                          "at most 63")
    return name


def _server(value: Any, key: str) -> tuple[str, int]:
    """A DNS upstream: "192.0.2.53", "192.0.2.53:5353", "2001:db8::53" or
    "[2001:db8::53]:5353"."""
    hint = ("is not an IP address with an optional port: \"192.0.2.53\", \"192.0.2.53:5353\", "
            "\"2001:db8::53\" or \"[2001:db8::53]:5353\"")
    if not isinstance(value, str):
        raise ConfigError(key, f"{value!r} {hint}")
    host, port = value, ""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError(key, f"{value!r} {hint}")
        port = rest[1:]
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        address = ip_address(host)
        number = int(port) if port else 53
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(key, f"{value!r} {hint}") from None
    return str(address), number


def _uplink(data: dict[str, Any], network: NetworkConfig) -> UplinkConfig | None:
    """Where routed traffic leaves.  No [uplink] in nat mode means the host's own sockets, as
    libslirp and passt do; route and open modes keep guest addresses, so they need a raw
    uplink on a network that routes the subnet back; isolated mode sends nothing out."""
    import netaddr

    up = _table(data, "uplink")
    kind = _get(up, "uplink.type", str, "raw" if "interface" in up else "host")
    if kind not in ("host", "raw"):
        raise ConfigError("uplink.type", f"{kind!r}: use \"host\" (the host's own sockets) or "
                          "\"raw\" (an address of its own on an L2 interface)")
    if kind == "host":
        for key in ("address6", "gateway6"):
            if key in up:
                raise ConfigError(f"uplink.{key}", "only a raw uplink has an IPv6 address of "
                                  "its own; a host uplink uses the host's IPv6: remove it, or "
                                  "set type = \"raw\" with an interface")
        _only(up, "uplink.", {"type", "host_address", "buffer_mib"},
              hint="a host uplink takes type, host_address and buffer_mib")
        buffer_mib = int(_number(up, "uplink.buffer_mib", 256, 1, 1 << 20, integer=True))
        if network.mode in ("route", "open") and "uplink" in data:
            raise ConfigError("uplink.type", f"mode {network.mode!r} keeps guest addresses, "
                              "which host sockets cannot; use type = \"raw\" or mode \"nat\"")
        if network.mode != "nat":
            return None
        host = None
        if up.get("host_address", str(network.gateway)) != "":
            host = _address(up, "uplink.host_address", network.gateway, network.subnet)
            first, last = network.dhcp_range
            if host != network.gateway and first <= host <= last:
                raise ConfigError("uplink.host_address", f"{host} is in the DHCP range; pick "
                                  "an address outside it, or the gateway (the default)")
        return UplinkConfig(type="host", host_address=host, buffer_mib=buffer_mib)
    _only(up, "uplink.", {"type", "interface", "address", "gateway", "mac", "mtu", "address6",
                          "gateway6"})
    interface = _get(up, "uplink.interface", str, None, required="the L2 interface, e.g. "
                     "interface = \"eth1\"")
    address = _get(up, "uplink.address", str, None, required="the router's own address there, "
                   "e.g. address = \"203.0.113.2/24\"")
    mac = _get(up, "uplink.mac", str, "")
    mac = _mac(mac, "uplink.mac") if mac else ""
    mtu = int(_number(up, "uplink.mtu", 1500, 576, 65521, integer=True))
    six = _uplink_address6(up, network)
    if six["address6"] and mtu < 1280:
        raise ConfigError("uplink.mtu", f"{mtu} is below 1280, the least a link carrying IPv6 "
                          "may have (RFC 8200 5); use mtu = 1280 or more, or remove "
                          "uplink.address6")
    if address == "dhcp":
        if "gateway" in up:
            raise ConfigError("uplink.gateway", "comes from the DHCP lease with address = "
                              "\"dhcp\"; remove it, or give a static address")
        return UplinkConfig(interface=interface, dhcp=True, mac=mac, mtu=mtu, type="raw", **six)
    try:
        net = netaddr.IPNetwork(address, version=4)
    except (netaddr.AddrFormatError, ValueError):
        raise ConfigError("uplink.address", f"{address!r} is not an IPv4 address with a "
                          "prefix, like 203.0.113.2/24") from None
    own = IPv4Interface(str(net))
    gateway = _address(up, "uplink.gateway", None, own.network)
    return UplinkConfig(interface=interface, address=own, gateway=gateway, mac=mac, mtu=mtu,
                        type="raw", **six)


def _uplink_address6(up: dict[str, Any], network: NetworkConfig) -> dict[str, Any]:
    """A raw uplink's address6 and gateway6, as UplinkConfig fields: "slaac", "dhcp" or a
    static global address with its prefix; gateway6 with a static one, and only then."""
    text = _get(up, "uplink.address6", str, "")
    gateway = _get(up, "uplink.gateway6", str, None)
    if text and network.subnet6 is None:
        raise ConfigError("uplink.address6", "routes the guests' IPv6, and the guest network "
                          "has none: add network.subnet6 (e.g. \"auto\"), or remove address6")
    if text and network.mode == "isolated":
        raise ConfigError("uplink.address6", "routes the guests' IPv6, and mode \"isolated\" "
                          "routes nothing out: remove address6, or set network.mode")
    if text in ("", "slaac", "dhcp"):
        if gateway is not None:
            how = f"with address6 = {text!r} the next hop is the router advertising on the " \
                "link" if text else "it needs a static address6"
            raise ConfigError("uplink.gateway6", f"only with a static address6 "
                              f"(\"2001:db8:1::2/64\"); {how}: remove it")
        return {"address6": text}
    hint = "use \"slaac\", \"dhcp\", or a global address with its prefix, like " \
        "\"2001:db8:1::2/64\""
    try:
        if "/" not in text:
            raise ValueError
        own = IPv6Interface(text)
    except ValueError:
        raise ConfigError("uplink.address6", f"{text!r}: {hint}") from None
    ip = own.ip
    if ip.scope_id is not None or ip.is_link_local or ip.is_multicast or ip.is_unspecified \
            or ip.is_loopback or ip.ipv4_mapped is not None \
            or (own.network.prefixlen < 127 and ip == own.network.network_address):
        raise ConfigError("uplink.address6", f"{text} is not a host address the station can "
                          f"take (the link-local one comes from the MAC); {hint}")
    subnet6 = network.subnet6
    if subnet6 is not None and own.network.overlaps(subnet6):
        raise ConfigError("uplink.address6", f"{own.network} overlaps the guest network's "
                          f"network.subnet6 {subnet6}; the uplink needs a prefix of its own")
    if gateway is None:
        raise ConfigError("uplink.gateway6", "missing; a static address6 needs its next hop, "
                          "e.g. gateway6 = \"fe80::1\" or an address in "
                          f"{own.network}")
    try:
        hop = IPv6Address(gateway)
    except ValueError:
        raise ConfigError("uplink.gateway6", f"{gateway!r} is not an IPv6 address, like "
                          "\"fe80::1\" or \"2001:db8:1::1\"") from None
    if hop.scope_id is not None or hop.is_multicast or hop.is_unspecified or hop == ip \
            or not (hop.is_link_local or hop in own.network):
        raise ConfigError("uplink.gateway6", f"{gateway} is not a neighbour's address: give "
                          f"the router's link-local address or one in {own.network} (not "
                          "the uplink's own)")
    return {"address6": "static", "address6_static": own, "gateway6": hop}


def _nat(data: dict[str, Any]) -> NatConfig:
    nat = _table(data, "nat")
    timeouts = ("tcp_established", "tcp_transitory", "udp", "icmp", "fragments")
    _only(nat, "nat.", {"port_range", "filtering", "max_entries", "max_per_guest", *timeouts})
    ports = nat.get("port_range", [1024, 65535])
    if (not isinstance(ports, list) or len(ports) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
            or not 1 <= ports[0] <= ports[1] <= 65535):
        raise ConfigError("nat.port_range", f"{ports!r} must be [first, last] within 1-65535, "
                          "e.g. [1024, 65535]")
    filtering = _get(nat, "nat.filtering", str, "address-dependent")
    if filtering not in ("address-dependent", "endpoint-independent"):
        raise ConfigError("nat.filtering", f"{filtering!r}: use \"address-dependent\" or "
                          "\"endpoint-independent\"")
    defaults = NatConfig()
    values = {t: int(_number(nat, f"nat.{t}", getattr(defaults, t), 1, 10**7, integer=True))
              for t in timeouts}
    if values["tcp_established"] < 7440:
        raise ConfigError("nat.tcp_established", "must be at least 7440 (2 h 4 min, RFC 5382 "
                          "REQ-5)")
    if values["udp"] < 120:
        raise ConfigError("nat.udp", "must be at least 120 (RFC 4787 REQ-5)")
    max_entries = int(_number(nat, "nat.max_entries", 262144, 16, 10**8, integer=True))
    max_per_guest = int(_number(nat, "nat.max_per_guest", max_entries // 4, 1, 10**8,
                                integer=True))
    if max_per_guest > max_entries:
        raise ConfigError("nat.max_per_guest", f"{max_per_guest} is above nat.max_entries "
                          f"({max_entries}); use at most {max_entries}, or raise max_entries")
    return NatConfig(port_range=(ports[0], ports[1]), filtering=filtering,
                     max_entries=max_entries, max_per_guest=max_per_guest, **values)


def _forward(raw: dict[str, Any], i: int, network: NetworkConfig | None,
             uplink: UplinkConfig | None) -> ForwardConfig:
    key = f"forward[{i}]"
    _only(raw, key + ".", {"proto", "port", "to", "listen"})
    if network is not None and network.mode != "nat":
        why = "nothing leaves the guest network" if network.mode == "isolated" \
            else "guests keep their addresses: reach them directly"
        raise ConfigError(key, f"mode {network.mode!r} has no NAT, so a forward does nothing "
                          f"({why}); remove it, or set network.mode = \"nat\"")
    listen = None
    if uplink is not None and uplink.type == "host":
        listen = parse_listen(_get(raw, key + ".listen", str, "0.0.0.0"), key + ".listen")
    elif "listen" in raw:
        raise ConfigError(key + ".listen", "only a host uplink listens; a raw uplink forwards "
                          "from its own address")
    proto = _get(raw, key + ".proto", str, None, required="\"tcp\" or \"udp\"")
    if proto not in ("tcp", "udp"):
        raise ConfigError(key + ".proto", f"{proto!r}: use \"tcp\" or \"udp\"")
    ports = parse_ports(raw.get("port"), key + ".port")
    to = _get(raw, key + ".to", str, None, required="the guest, e.g. to = \"192.168.122.10:80\" "
              "or \"[fd42:0:0:1::10]:80\"")
    addr, guest_port = parse_forward_target(to, key + ".to", network, ports)
    if addr.version == 6 and uplink is not None and uplink.type != "host" \
            and not uplink.address6:  # a raw uplink forwards IPv6 by its NAT66
        raise ConfigError(key + ".to", f"{addr} is IPv6: a raw uplink forwards IPv6 from its "
                          "own IPv6 address; give it one (uplink.address6 = \"slaac\", \"dhcp\" "
                          "or \"2001:db8::2/64\" with uplink.gateway6)")
    return ForwardConfig(proto, ports, addr, guest_port, listen)


def parse_forward_target(text: str, key: str, network: NetworkConfig | None,
                         ports: tuple[int, int] = (1, 1)) -> tuple[IPv4Address | IPv6Address, int]:
    """A forward's guest, ``"guest_ip:port"`` or ``"[guest_ipv6]:port"``, as (address, port):
    a host address of network.subnet, or of network.subnet6 for IPv6 (no network: an IPv4
    address is not checked, an IPv6 one has no prefix to be in); the guest ports for the
    external ``ports`` (first, last) follow the first in order, and must all exist.  The
    config's ``[[forward]] to`` and ``vswitch forward add``'s use it."""
    import netaddr

    host, _, port = text.rpartition(":")
    addr: IPv4Address | IPv6Address
    try:
        guest_port = int(port)
        if not 0 < guest_port < 65536 or guest_port + ports[1] - ports[0] > 65535:
            raise ValueError
        if host.startswith("[") and host.endswith("]"):
            addr = IPv6Address(host[1:-1])
            if addr.scope_id is not None:
                raise ValueError
        else:
            addr = IPv4Address(str(netaddr.IPAddress(host, version=4)))
    except (netaddr.AddrFormatError, ValueError):
        raise ConfigError(key, f"{text!r} must be \"guest_ip:port\" or "
                          "\"[guest_ipv6]:port\", e.g. \"192.168.122.10:22\" or "
                          "\"[fd42:0:0:1::10]:22\"") from None
    if isinstance(addr, IPv4Address):
        if network is not None and addr not in network.subnet:
            raise ConfigError(key, f"{host} is not in the guest network {network.subnet}")
        return addr, guest_port
    subnet6 = network.subnet6 if network is not None else None
    if subnet6 is None:
        raise ConfigError(key, f"{addr} is IPv6 but the guest network has no IPv6 prefix: set "
                          "network.subnet6 (e.g. \"fd42:0:0:1::/64\", or \"auto\")")
    if addr not in subnet6 or addr == subnet6.network_address:
        raise ConfigError(key, f"{addr} is not a host address of network.subnet6 {subnet6}; "
                          "forward to a guest's IPv6 address in it")
    return addr, guest_port


def _mirrors(data: dict[str, Any], names: list[str]) -> tuple[MirrorConfig, ...]:
    """[[mirror]]: from = ["vm1", ...], to = "PORT", direction = "both" | "rx" | "tx".  A
    target is a port of its own (it leaves switching), never a source, never two mirrors'."""
    mirrors: list[MirrorConfig] = []
    known = set(names) | {"gateway"}
    for i, raw in enumerate(_array(data, "mirror")):
        key = f"mirror[{i}]"
        _only(raw, key + ".", {"from", "to", "direction"})
        sources = raw.get("from")
        if not isinstance(sources, list) or not sources \
                or not all(isinstance(x, str) for x in sources):
            raise ConfigError(key + ".from", "must be a list of port names, e.g. "
                              "from = [\"vm1\"]")
        to = _get(raw, key + ".to", str, None, required="the port the copies leave by, e.g. "
                  "to = \"span0\"")
        direction = _get(raw, key + ".direction", str, "both")
        if direction not in ("both", "rx", "tx"):
            raise ConfigError(key + ".direction", f"{direction!r}: use \"both\", \"rx\" or "
                              "\"tx\"")
        for name in (*sources, to):
            if name not in known:
                raise ConfigError(key, f"no port {name!r}; ports: {', '.join(sorted(known))}")
        if to == "gateway" or to in sources:
            raise ConfigError(key + ".to", f"{to!r} cannot take copies: the target must be a "
                              "port of its own, not the gateway or one of the sources")
        if any(to == m.to or to in m.sources or m.to in sources for m in mirrors):
            raise ConfigError(key + ".to", f"{to!r} is already another mirror's target or "
                              "source; give each mirror a target of its own")
        mirrors.append(MirrorConfig(tuple(sources), to, direction))
    return tuple(mirrors)


METRICS_LISTEN = "127.0.0.1:9469"


def _metrics(data: dict[str, Any]) -> MetricsConfig:
    """[metrics]: where the Prometheus endpoint listens, an address literal and a port."""
    metrics = _table(data, "metrics")
    _only(metrics, "metrics.", {"listen"})
    text = _get(metrics, "metrics.listen", str, METRICS_LISTEN)
    host, sep, port = text.rpartition(":")
    try:
        if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError
        if host.startswith("["):  # [v6]:port; a bare v6 address has a ':' too many
            if not host.endswith("]"):
                raise ValueError
            address: IPv4Address | IPv6Address = IPv6Address(host[1:-1])
        else:
            address = IPv4Address(host)
    except ValueError:
        raise ConfigError("metrics.listen", f"{text!r} is not host:port; write listen = "
                          f"\"{METRICS_LISTEN}\" (IPv6: \"[::1]:9469\")") from None
    return MetricsConfig(address, int(port))


def parse_listen(value: str, key: str) -> IPv4Address | IPv6Address:
    """A host address to listen on, IPv4 or IPv6 ("0.0.0.0", "::", "127.0.0.1", "::1")."""
    import netaddr

    try:
        return ip_address(str(netaddr.IPAddress(value.strip("[]"))))
    except (netaddr.AddrFormatError, ValueError):
        raise ConfigError(key, f"{value!r} is not an IPv4 or IPv6 address, e.g. \"0.0.0.0\" "
                          "or \"::\"") from None


def parse_ports(value: Any, key: str) -> tuple[int, int]:
    """A port (8080) or a range ("8080-8090") as (first, last)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            first = last = value
        else:
            a, _, b = str(value).partition("-")
            first, last = int(a), int(b or a)
        if not 0 < first <= last < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(key, f"{value!r} must be a port (8080) or a range (\"8080-8090\")") \
            from None
    return first, last
