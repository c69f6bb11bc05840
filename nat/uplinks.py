"""The uplink as the daemon sees it, whichever kind: its port forwards, its flows as ``show
conntrack`` rows, its counters for ``show router``.

``nat.egress.HostEgress`` is the host kind (forwards are listening host sockets);
``RawNat`` is the raw kind's NAT (forwards are static mappings on the uplink's own address, in
the router's conntrack, which a new DHCP lease replaces).  In route mode there is no NAT, so
no forwards and no flows.
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from nat.router import Router
from wire.packets import PROTO_NAMES


class Uplink(Protocol):
    kind: str
    """ "host" or "raw" """

    def add_forward(self, proto: int, ports: range, listen: str, guest_ip: bytes,
                    guest_port: int) -> int:
        """Forward ``ports`` to the guest's port and up; how many ports (KeyError, ValueError
        or OSError say why not)."""
        ...

    def remove_forward(self, proto: int, ports: range, listen: str) -> None:
        """Stop forwarding; flows already open go on (KeyError if there is no such forward)."""
        ...

    def forward_rows(self) -> list[dict[str, Any]]: ...

    def flow_rows(self, now: float) -> list[dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...


def endpoints(key: tuple[Any, ...]) -> str:
    _, src, sport, dst, dport = key
    return f"{socket.inet_ntoa(src)}:{sport} -> {socket.inet_ntoa(dst)}:{dport}"


class RawNat:
    """The raw uplink's NAT over ``router.conntrack`` (None in route mode, or before a lease)."""

    kind = "raw"

    def __init__(self, router: Router) -> None:
        self.router = router

    def add_forward(self, proto: int, ports: range, listen: str, guest_ip: bytes,
                    guest_port: int) -> int:
        conntrack = self.router.conntrack
        if len(guest_ip) == 16:
            raise ValueError("IPv6 forwards need the host uplink ([uplink] type = \"host\"); "
                             "a raw uplink forwards to IPv4 guests only")
        if conntrack is None:
            raise ValueError("the uplink has no address yet (or the mode is not nat)")
        if listen not in ("", "0.0.0.0"):
            raise ValueError("a raw uplink forwards from its own address: drop --listen")
        return len(conntrack.add_forward(proto, ports, guest_ip, guest_port).ext_ports)

    def remove_forward(self, proto: int, ports: range, listen: str) -> None:
        if self.router.conntrack is None:
            raise KeyError("no forwards: the uplink has no address yet")
        self.router.conntrack.remove_forward(proto, ports)

    def forward_rows(self) -> list[dict[str, Any]]:
        conntrack = self.router.conntrack
        return [] if conntrack is None else [
            {"proto": PROTO_NAMES[f.proto],
             "port": f"{f.ext_ports[0]}" + (f"-{f.ext_ports[-1]}" if len(f.ext_ports) > 1
                                            else ""),
             "to": f"{socket.inet_ntoa(f.guest_ip)}:{f.guest_port}"}
            for f in conntrack.forwards()]

    def flow_rows(self, now: float) -> list[dict[str, Any]]:
        conntrack = self.router.conntrack
        return [] if conntrack is None else [
            {"proto": PROTO_NAMES.get(r.original[0], str(r.original[0])), "kind": r.kind,
             "state": r.state, "original": endpoints(r.original), "reply": endpoints(r.reply),
             "seconds_left": round(r.seconds_left),
             "packets": [r.packets_original, r.packets_reply],
             "bytes": [r.bytes_original, r.bytes_reply]}
            for r in conntrack.entries(now)]

    def stats(self) -> dict[str, Any]:
        conntrack = self.router.conntrack
        return {"uplink": "raw", "conntrack": len(conntrack) if conntrack is not None else 0}
