"""Configuration: TOML, validated at load with one clear error per mistake.

Rule 1: every key is checked when the file is loaded; an unknown key or a bad value raises
        ``ConfigError`` naming the key (``port[1].mtu``) and what would fix it.
Rule 2: with no file, the embedded ``default.toml`` is used, so ``vswitch run`` works as is.
Rule 3: defaults that depend on the machine (socket paths) are resolved here, once.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
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
COMMON_PORT_KEYS = {"name", "type", "mtu", "mac_limit"}


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


@dataclass(frozen=True, slots=True)
class Config:
    name: str = "vsw0"
    """Switch name: names the control socket."""
    mac_aging: float = 300.0
    """Seconds an unrefreshed FDB entry lives."""
    mac_limit: int = 8192
    """Most FDB entries in the whole switch."""
    socket: str = ""
    """Control socket path."""
    ports: tuple[PortConfig, ...] = field(default_factory=tuple)
    """The ports, in config order (port ids are 1, 2, ... in that order)."""
    source: str = "<embedded default>"
    """Where this config came from."""


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
    _only(data, "", {"switch", "control", "port"})
    switch = _table(data, "switch")
    _only(switch, "switch.", {"name", "mac_aging", "mac_limit"})
    name = _get(switch, "switch.name", str, "vsw0")
    if not IFNAME.match(name):
        raise ConfigError("switch.name", f"{name!r} must be 1-15 letters, digits, '.', '_' or '-'")
    aging = _number(switch, "switch.mac_aging", 300.0, 1.0, 1e6)
    mac_limit = int(_number(switch, "switch.mac_limit", 8192, 1, 10_000_000, integer=True))
    control = _table(data, "control")
    _only(control, "control.", {"socket"})
    sock = _get(control, "control.socket", str, default_socket(name))
    raw_ports = data.get("port", [])
    if not isinstance(raw_ports, list):
        raise ConfigError("port", "must be an array of tables: write each port as [[port]]")
    ports = tuple(_port(raw, i) for i, raw in enumerate(raw_ports))
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
    return Config(name, aging, mac_limit, sock, ports, source)


def _port(raw: Any, i: int) -> PortConfig:
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
    kw: dict[str, Any] = {"name": name, "type": kind, "mtu": mtu, "mac_limit": limit}
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
        return (resolve_user if what == "owner" else resolve_group)(value)
    except KeyError:
        raise ConfigError(key, f"no such {what} {value!r} on this host") from None


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
