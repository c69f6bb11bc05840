"""The `vswitch` command: run the daemon, look inside it, and help plug qemu in."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from vswitch.config import Config, ConfigError, default_socket, load_config
from vswitch.control import ControlError, request
from wire.packets import format_mac, qemu_mac


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vswitch", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("run", help="run the switch in the foreground")
    p.add_argument("config", nargs="?", help="TOML config (default: the embedded default)")
    p.add_argument("-v", "--verbose", action="store_true", help="also log debug events")

    p = sub.add_parser("show", help="show ports, the MAC table (fdb), DHCP leases, DNS or "
                       "switch counters, the topology")
    p.add_argument("what", choices=["ports", "fdb", "leases", "dhcp", "dns", "conntrack",
                                    "forwards", "router", "switch", "topology"])
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable output")
    form.add_argument("--dot", action="store_true", help="topology: as a Graphviz graph")
    form.add_argument("--mermaid", action="store_true", help="topology: as a Mermaid flowchart")
    p.add_argument("--socket", help="control socket (default: $VSWITCH_SOCKET or "
                   f"{default_socket()})")

    p = sub.add_parser("forward", help="add or remove a port forward at run time")
    p.add_argument("action", choices=["add", "del", "remove"], help="remove is del")
    p.add_argument("proto", choices=["tcp", "udp"])
    p.add_argument("port", help="external port or range, e.g. 8080 or 8080-8090")
    p.add_argument("to", nargs="?", help="guest_ip:port, or [guest_ipv6]:port with a host "
                   "uplink or a raw one with an address6 (for add)")
    p.add_argument("--listen", help="host uplink: the host address to listen on, IPv4 or IPv6 "
                   "(default 0.0.0.0)")
    p.add_argument("--socket", help="control socket")

    p = sub.add_parser("qemu-args", help="print the qemu flags that plug a guest into PORT")
    p.add_argument("port")
    p.add_argument("config", nargs="?", help="TOML config (default: the embedded default)")
    p.add_argument("--mac", help="guest MAC (default: derived from the port name)")

    p = sub.add_parser("check", help="validate a config file and print the result")
    p.add_argument("config", nargs="?")

    p = sub.add_parser("top", help="a live view: port rates, MAC table, flows, leases, forwards")
    p.add_argument("--socket", help="control socket (default: $VSWITCH_SOCKET or "
                   f"{default_socket()})")
    p.add_argument("--interval", type=seconds, default=1.0, metavar="SECONDS",
                   help="time between polls (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame (two polls one "
                   "interval apart, so rates exist) and exit")

    p = sub.add_parser("trace", help="live: every decision the switch, gateway, router, NAT, "
                       "DHCP and DNS make, one line each, naming the rule",
                       description="FILTER is a small tcpdump-like language: host, src/dst "
                       "host, net, port, ether host/src/dst, arp, ip, icmp, tcp, udp, and, or, "
                       "not, parentheses (wire/filter.py documents it).")
    p.add_argument("filter", nargs="*", help="e.g. icmp, or tcp and port 80")
    p.add_argument("--port", help="only frames entering the switch from this port "
                   "(\"uplink\": the raw uplink's)")
    p.add_argument("-c", "--count", type=int, help="stop after N frames")
    p.add_argument("--json", action="store_true", help="one JSON object per decision")
    p.add_argument("--socket", help="control socket")

    p = sub.add_parser("capture", help="write the frames at capture points as pcapng (or "
                       "pcap), or print them")
    p.add_argument("points", help="comma-separated: a port name, gateway, uplink-inside "
                   "(before NAT), uplink-outside (after NAT, raw uplink)")
    p.add_argument("filter", nargs="*", help="as for trace")
    p.add_argument("-w", dest="file", help="write to FILE, or - for stdout "
                   "(vswitch capture vm1 -w - | tcpdump -nr -)")
    p.add_argument("-c", "--count", type=int, help="stop after N frames")
    p.add_argument("--pcap", action="store_true", help="classic pcap instead of pcapng")
    p.add_argument("--socket", help="control socket")

    p = sub.add_parser("explain", help="what the running switch would do with a frame, "
                       "changing nothing")
    p.add_argument("frame", nargs="?", help="a scapy expression, e.g. "
                   "\"Ether(src='52:54:00:00:00:05', dst='ff:ff:ff:ff:ff:ff')/ARP()\", or hex")
    p.add_argument("--pcap", help="explain every frame of this pcap/pcapng file instead")
    p.add_argument("--port", help="the port the frame comes in on (default: where its source "
                   "MAC was learned, else the first guest port)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--socket", help="control socket")

    p = sub.add_parser("demo", help="two namespace guests on a switch: ping and the MAC table")
    p.add_argument("--keep", action="store_true", help="(debug) leave the lab up for a look")

    args, extra = parser.parse_known_args(argv)
    if extra and args.verb in ("trace", "capture") and not any(w.startswith("-") for w in extra):
        args.filter += extra  # filter words after the options: capture vm1 -w f tcp port 80
    elif extra:
        parser.parse_args(argv)  # says which arguments it does not know, and exits
    try:
        return VERBS[args.verb](args)
    except (ConfigError, ControlError) as exc:
        print(f"vswitch: {exc}", file=sys.stderr)
        return 2


def cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    config = load_config(args.config)
    from vswitch.daemon import run

    run(config)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{config.source}: ok, switch {config.name}, {len(config.ports)} ports, "
          f"control socket {config.socket}")
    for pc in config.ports:
        print(f"  {pc.name:<15} {pc.type}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    path = args.socket or os.environ.get("VSWITCH_SOCKET") or default_socket()
    if (args.dot or args.mermaid) and args.what != "topology":
        print(f"vswitch: --dot and --mermaid draw the topology; use `vswitch show topology "
              f"--{'dot' if args.dot else 'mermaid'}` (or drop the flag for {args.what})",
              file=sys.stderr)
        return 2
    result = request(path, "show", what=args.what)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.dot or args.mermaid:
        from vswitch.topology import render_dot, render_mermaid

        print((render_dot if args.dot else render_mermaid)(result))
    else:
        print(FORMATTERS[args.what](result))
    return 0


def format_ports(rows: list[dict[str, Any]]) -> str:
    table = [["PORT", "TYPE", "STATE", "MTU", "MACS", "POLICY", "RX FRAMES", "RX BYTES",
              "TX FRAMES", "TX BYTES", "OFFLOADS", "SOFTWARE", "DROPS", "DETAIL"]]
    for r in rows:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(r["drops"].items())) or "-"
        limit = f"/{r['mac_limit']}" if r.get("mac_limit") else ""
        # switch Rules 5 and 6: isolation, and the flood limit per second
        policy = ", ".join([*(["isolated"] if r.get("isolated") else []),
                            *([f"storm {r['storm_limit']}/s"] if r.get("storm_limit") else [])])
        soft = r["software"]
        software = (f"gso={soft['segmented']}, csum={soft['checksummed']}"
                    if soft["segmented"] or soft["checksummed"] else "-")
        table.append([r["name"], r["type"], r["state"], str(r["mtu"]), f"{r['macs']}{limit}",
                      policy or "-", str(r["rx_frames"]), str(r["rx_bytes"]), str(r["tx_frames"]),
                      str(r["tx_bytes"]), ",".join(r["offloads"]) or "none", software, drops,
                      r["detail"]])
    return render(table)


def format_fdb(rows: list[dict[str, Any]]) -> str:
    table = [["MAC", "PORT", "AGEING (s)"]]
    table += [[r["mac"], r["port"], f"{r['ageing']:.0f}"] for r in
              sorted(rows, key=lambda r: (r["port_id"], r["mac"]))]
    return render(table) + f"\n{len(rows)} entries"


def format_conntrack(rows: list[dict[str, Any]]) -> str:
    """Like `conntrack -L`: protocol, state, original and reply tuples, time left, counters."""
    table = [["PROTO", "KIND", "STATE", "ORIGINAL", "REPLY", "TTL", "PACKETS", "BYTES"]]
    for r in rows:
        table.append([r["proto"], r["kind"], r["state"], r["original"], r["reply"],
                      str(r["seconds_left"]), "/".join(map(str, r["packets"])),
                      "/".join(map(str, r["bytes"]))])
    return render(table) + f"\n{len(rows)} flows"


def format_forwards(rows: list[dict[str, Any]]) -> str:
    return render([["PROTO", "LISTEN", "PORT", "TO"]]
                  + [[r["proto"], r.get("listen", "uplink"), r["port"], r["to"]] for r in rows])


def format_leases(rows: list[dict[str, Any]]) -> str:
    """Like `virsh net-dhcp-leases`: expiry, MAC, protocol, address, hostname, client id."""
    import time

    table = [["EXPIRY TIME", "MAC ADDRESS", "PROTOCOL", "IP ADDRESS", "HOSTNAME", "STATE",
              "CLIENT ID"]]
    for r in rows:
        expiry = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["expires"]))
        table.append([expiry, r["mac"], r.get("protocol", "ipv4"), f"{r['ip']}/{r['prefix']}",
                      r["hostname"] or "-",
                      r["state"], r["client_id"]])
    return render(table) + f"\n{len(rows)} leases"


def format_switch(info: dict[str, Any]) -> str:
    return "\n".join(f"{k:<14} {v}" for k, v in info.items())


def format_topology(topo: dict[str, Any]) -> str:
    from vswitch.topology import render_text

    return render_text(topo)


FORMATTERS = {"ports": format_ports, "fdb": format_fdb, "leases": format_leases,
              "dhcp": format_switch, "dns": format_switch, "switch": format_switch,
              "conntrack": format_conntrack, "forwards": format_forwards,
              "router": format_switch, "topology": format_topology}


def render(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)


def guest_mac(port: str) -> str:
    """A stable locally administered MAC in qemu's 52:54:00 range, from the port name."""
    return format_mac(qemu_mac(port))


def qemu_args(config: Config, port: str, mac: str | None = None) -> str:
    pc = next((p for p in config.ports if p.name == port), None)
    if pc is None:
        raise ConfigError("port", f"no port named {port!r} in {config.source}; ports: "
                          + ", ".join(p.name for p in config.ports))
    mac = mac or guest_mac(port)
    if pc.type == "tap":
        netdev = f"tap,id=n0,ifname={pc.name},script=no,downscript=no"
    elif pc.type == "stream":
        server = "on" if pc.connect else "off"
        netdev = f"stream,id=n0,server={server},addr.type=unix,addr.path={pc.path}"
    elif pc.type == "dgram":
        local = pc.peer or f"{pc.path}.qemu"
        netdev = (f"dgram,id=n0,local.type=unix,local.path={local},"
                  f"remote.type=unix,remote.path={pc.path}")
    else:
        raise ConfigError(f"port {port}", f"a {pc.type} port is not for qemu; use a tap, stream "
                          "or dgram port")
    return f"-netdev {netdev} -device virtio-net-pci,netdev=n0,mac={mac}"


def cmd_forward(args: argparse.Namespace) -> int:
    path = args.socket or os.environ.get("VSWITCH_SOCKET") or default_socket()
    if args.action == "add" and not args.to:
        raise ControlError("forward add needs the guest: vswitch forward add tcp 8080 "
                           "192.168.122.10:80")
    result = request(path, "forward", action=args.action, proto=args.proto, port=args.port,
                     to=args.to, listen=args.listen)
    print(" ".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def cmd_qemu_args(args: argparse.Namespace) -> int:
    print(qemu_args(load_config(args.config), args.port, args.mac))
    return 0


def seconds(text: str) -> float:
    """An --interval: a number of seconds from 0.1 to 3600."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is out of range; use 0.1 to 3600")
    return value


def cmd_top(args: argparse.Namespace) -> int:
    from vswitch.top import top  # rich is imported by this verb only

    path = args.socket or os.environ.get("VSWITCH_SOCKET") or default_socket()
    return top(path, args.interval, args.once)


def _socket(args: argparse.Namespace) -> str:
    return str(args.socket or os.environ.get("VSWITCH_SOCKET") or default_socket())


def cmd_trace(args: argparse.Namespace) -> int:
    from vswitch.control import stream
    from vswitch.display import trace_lines

    records = stream(_socket(args), "trace", filter=" ".join(args.filter), port=args.port)
    next(records)  # the header
    try:
        for line in trace_lines(records, args.json, args.count):
            print(line, flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from vswitch.control import stream
    from vswitch.display import write_capture

    points = [p for p in args.points.split(",") if p]
    records = stream(_socket(args), "capture", filter=" ".join(args.filter), points=points)
    next(records)
    try:
        if args.file is None:
            write_capture(records, None, args.pcap, args.count, sys.stdout)
        elif args.file == "-":
            write_capture(records, sys.stdout.buffer, args.pcap, args.count, sys.stderr)
        else:
            try:
                out = open(args.file, "wb")  # noqa: SIM115 - closed below
            except OSError as exc:
                print(f"vswitch: cannot write {args.file}: {exc.strerror}", file=sys.stderr)
                return 1
            with out:
                count = write_capture(records, out, args.pcap, args.count, sys.stderr)
            print(f"{count} frames written to {args.file}", file=sys.stderr)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    except OSError as exc:  # a full disk: say so; the switch is not affected
        print(f"vswitch: capture stopped: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from vswitch.display import describe, parse_frames, read_pcap_frames

    if (args.frame is None) == (args.pcap is None):
        print("vswitch: explain takes a FRAME or --pcap FILE", file=sys.stderr)
        return 2
    try:
        frames = read_pcap_frames(args.pcap) if args.pcap else parse_frames(args.frame)
    except (ValueError, OSError) as exc:
        print(f"vswitch: {exc}", file=sys.stderr)
        return 2
    results = request(_socket(args), "explain", frames=[f.hex() for f in frames],
                      port=args.port)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(f"{result['port']}: {describe(bytes.fromhex(result['frame']))}")
        for where, text, rule in result["decisions"]:
            print(f"{'':9} {where:>9}  {text}  [{rule}]")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vswitch.demo import demo

    return demo(keep=args.keep)


VERBS = {"run": cmd_run, "show": cmd_show, "qemu-args": cmd_qemu_args, "check": cmd_check,
         "demo": cmd_demo, "forward": cmd_forward, "top": cmd_top, "trace": cmd_trace,
         "capture": cmd_capture, "explain": cmd_explain}

if __name__ == "__main__":
    sys.exit(main())
