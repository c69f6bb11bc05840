"""``vswitch show topology``: who is plugged in where, as data and as text, Graphviz or Mermaid.

``topology`` joins what the other views show into one structure: the switch, its ports, the
guests seen on each port (a MAC from the MAC table, with the address and name of its DHCP lease,
else of the router's ARP cache and the static hosts), the gateway, the uplink and the forwards.
The renderers are pure functions of that structure (the JSON ``show topology --json`` prints),
so the CLI renders what a daemon sent and tests render what they build.

A guest here is a MAC the switch learned on a port: a station that sent nothing for the ageing
time (300 s) is gone from the MAC table, and from the topology, until it speaks again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Port rows of ``show ports`` that are not switch ports with guests behind them: the gateway's
#: own port (shown as the gateway) and a raw uplink's packet socket (shown as the uplink).
NOT_GUEST_PORTS = frozenset({"router", "uplink"})


def topology(switch: str, ports: list[dict[str, Any]], fdb: list[dict[str, Any]],
             leases: list[dict[str, Any]], neighbours: Iterable[tuple[str, str]],
             static_names: Mapping[str, str], gateway: dict[str, Any] | None,
             uplink: dict[str, Any] | None, forwards: list[dict[str, Any]]) -> dict[str, Any]:
    """The topology from the views' rows: ``ports``, ``fdb``, ``leases`` and ``forwards`` as
    ``show`` returns them; ``neighbours`` the router's guest ARP cache as (IPv4, MAC) text;
    ``static_names`` names from the config by MAC or by IPv4 address; ``gateway`` and
    ``uplink`` as the daemon describes them (None when there is none)."""
    by_mac: dict[str, dict[str, Any]] = {}
    for lease in sorted(leases, key=lambda r: r.get("state") != "bound"):  # bound ones win
        by_mac.setdefault(str(lease["mac"]), lease)
    arp = {mac: ip for ip, mac in neighbours}
    gateway_mac = gateway["mac"] if gateway is not None else None
    guests: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(fdb, key=lambda r: str(r["mac"])):
        mac = str(row["mac"])
        if mac == gateway_mac:
            continue
        held = by_mac.get(mac)
        ip = str(held["ip"]) if held is not None else arp.get(mac)
        name = (held or {}).get("hostname") or static_names.get(mac) \
            or (static_names.get(ip) if ip is not None else None)
        guests.setdefault(str(row["port"]), []).append({"mac": mac, "ip": ip, "name": name})
    return {
        "switch": switch,
        "gateway": gateway,
        "uplink": uplink,
        "ports": [{"name": p["name"], "type": p["type"], "state": p["state"],
                   "guests": guests.get(str(p["name"]), [])}
                  for p in ports if p["type"] not in NOT_GUEST_PORTS],
        "forwards": [{"proto": f["proto"], "port": str(f["port"]), "listen": f.get("listen"),
                      "to": f["to"]} for f in forwards],
    }


# -- words shared by the renderers -----------------------------------------------------------

def _uplink_words(uplink: dict[str, Any]) -> list[str]:
    if uplink["kind"] == "host":
        host = uplink.get("address")
        return ["uplink: host sockets", f"the host is {host}" if host else "no host address"]
    lines = [f"uplink: raw on {uplink.get('interface')}",
             str(uplink.get("address") or "no address yet")]
    if uplink.get("next_hop"):
        lines.append(f"via {uplink['next_hop']}")
    return lines


def _gateway_words(gateway: dict[str, Any]) -> list[str]:
    return [f"gateway {gateway['ip']}", str(gateway["mac"]),
            f"{gateway.get('subnet', '?')}, mode {gateway.get('mode', '?')}"]


def _guest_words(guest: dict[str, Any]) -> list[str]:
    return [w for w in (guest.get("name"), guest.get("ip"), guest["mac"]) if w]


def _forward_words(forward: dict[str, Any]) -> str:
    listen = f"{forward['listen']}:" if forward.get("listen") else ""
    return f"{forward['proto']} {listen}{forward['port']} → {forward['to']}"


def _forward_target(topo: dict[str, Any], forward: dict[str, Any]) -> tuple[int, int] | None:
    """(port index, guest index) of the guest a forward goes to, if it is in the topology."""
    ip = str(forward["to"]).rpartition(":")[0].strip("[]")  # [IPv6]:port too
    for i, port in enumerate(topo["ports"]):
        for j, guest in enumerate(port["guests"]):
            if guest.get("ip") == ip:
                return i, j
    return None


# -- text ------------------------------------------------------------------------------------

def render_text(topo: dict[str, Any]) -> str:
    """The default ``show topology``: an indented tree, switch first."""
    lines = [f"switch {topo['switch']}"]
    if topo.get("gateway"):
        gw = topo["gateway"]
        lines.append(f"  gateway {gw['ip']}  {gw['mac']}  "
                     f"({gw.get('subnet', '?')}, mode {gw.get('mode', '?')})")
        if topo.get("uplink"):
            lines.append("    " + ", ".join(_uplink_words(topo["uplink"])))
    for port in topo["ports"]:
        lines.append(f"  port {port['name']}  ({port['type']}, {port['state']})")
        for guest in port["guests"]:
            lines.append(f"    {guest.get('name') or '-':<16} {guest.get('ip') or '-':<16} "
                         f"{guest['mac']}".rstrip())
    for forward in topo["forwards"]:
        target = _forward_target(topo, forward)
        guest = topo["ports"][target[0]]["guests"][target[1]] if target else {}
        lines.append(f"  forward {_forward_words(forward).replace('→', '->')}"
                     + (f" ({guest['name']})" if guest.get("name") else ""))
    return "\n".join(lines)


# -- Graphviz dot ----------------------------------------------------------------------------

def _dot_label(lines: list[str]) -> str:
    text = "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines)
    return f'"{text}"'


def render_dot(topo: dict[str, Any]) -> str:
    """An undirected Graphviz graph, left to right: uplink, gateway, switch, ports, guests;
    forwards as dashed arrows from the uplink (``dot -Tsvg``)."""
    label = _dot_label
    out = ["graph topology {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];',
           f"  switch [shape=box3d, label={label(['switch ' + str(topo['switch'])])}];"]
    gateway, uplink = topo.get("gateway"), topo.get("uplink")
    if gateway:
        out.append(f"  gateway [shape=hexagon, label={label(_gateway_words(gateway))}];")
        out.append("  gateway -- switch;")
        if uplink:
            out.append(f"  uplink [shape=ellipse, label={label(_uplink_words(uplink))}];")
            out.append("  uplink -- gateway;")
    for i, port in enumerate(topo["ports"]):
        words = [str(port["name"]), f"{port['type']}, {port['state']}"]
        out.append(f"  p{i} [style=rounded, label={label(words)}];")
        out.append(f"  switch -- p{i}" + ("" if port["state"] == "up" else " [style=dashed]")
                   + ";")
        for j, guest in enumerate(port["guests"]):
            out.append(f"  g{i}_{j} [label={label(_guest_words(guest))}];")
            out.append(f"  p{i} -- g{i}_{j};")
    source = "uplink" if gateway and uplink else "switch"
    for k, forward in enumerate(topo["forwards"]):
        target = _forward_target(topo, forward)
        node = f"g{target[0]}_{target[1]}" if target else f"f{k}"
        if target is None:
            out.append(f"  f{k} [shape=plaintext, label={label([str(forward['to'])])}];")
        out.append(f"  {source} -- {node} [style=dashed, dir=forward, "
                   f"label={label([_forward_words(forward)])}];")
    out.append("}")
    return "\n".join(out)


# -- Mermaid ---------------------------------------------------------------------------------

def _mermaid_label(lines: list[str]) -> str:
    escaped = (line.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
               for line in lines)
    return '"' + "<br/>".join(escaped) + '"'


def render_mermaid(topo: dict[str, Any]) -> str:
    """A Mermaid flowchart (``graph LR``), as GitHub renders a ```mermaid block: the same
    nodes and edges as ``render_dot``; down ports and forwards are dotted."""
    label = _mermaid_label
    out = ["graph LR", f"  switch[[{label(['switch ' + str(topo['switch'])])}]]"]
    gateway, uplink = topo.get("gateway"), topo.get("uplink")
    if gateway:
        out.append("  gateway{{" + label(_gateway_words(gateway)) + "}}")
        if uplink:
            out.append(f"  uplink(({label(_uplink_words(uplink))}))")
            out.append("  uplink --- gateway")
        out.append("  gateway --- switch")
    for i, port in enumerate(topo["ports"]):
        words = [str(port["name"]), f"{port['type']}, {port['state']}"]
        out.append(f"  p{i}([{label(words)}])")
        out.append(f"  switch {'---' if port['state'] == 'up' else '-.-'} p{i}")
        for j, guest in enumerate(port["guests"]):
            out.append(f"  g{i}_{j}[{label(_guest_words(guest))}]")
            out.append(f"  p{i} --- g{i}_{j}")
    source = "uplink" if gateway and uplink else "switch"
    for k, forward in enumerate(topo["forwards"]):
        target = _forward_target(topo, forward)
        node = f"g{target[0]}_{target[1]}" if target else f"f{k}"
        if target is None:
            out.append(f"  f{k}[{label([str(forward['to'])])}]")
        out.append(f"  {source} -.->|{label([_forward_words(forward)])}| {node}")
    return "\n".join(out)


RENDERERS = {"text": render_text, "dot": render_dot, "mermaid": render_mermaid}
