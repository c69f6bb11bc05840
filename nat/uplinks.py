"""The uplink as the daemon sees it, whichever kind: its port forwards, its flows as ``show
conntrack`` rows, its counters for ``show router``.

``nat.egress.HostEgress`` is the host kind (forwards are listening host sockets);
``RawNat`` is the raw kind's NAT (forwards are static mappings on the uplink's own address, in
the router's conntrack, which a new DHCP lease replaces).  In route mode there is no NAT, so
no forwards and no flows.
"""

from __future__ import annotations

from typing import Any, Protocol

from nat.conntrack import Conntrack
from nat.router import Router
from nat.router6 import Router6
from wire.packets import PROTO_NAMES, address_port


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
    return f"{address_port(src, sport)} -> {address_port(dst, dport)}"


class RawNat:
    """The raw uplink's NAT over ``router.conntrack`` and, for IPv6 (NAT66), over
    ``router6.conntrack`` (each None in route mode, or before the uplink has an address)."""

    kind = "raw"

    def __init__(self, router: Router, router6: Router6 | None = None) -> None:
        self.router = router
        self.router6 = router6

    def _conntrack(self, guest_ip: bytes) -> Conntrack | None:
        if len(guest_ip) == 4:
            return self.router.conntrack
        return self.router6.conntrack if self.router6 is not None else None

    def _conntracks(self) -> list[Conntrack]:
        both = [self.router.conntrack, self.router6.conntrack if self.router6 else None]
        return [c for c in both if c is not None]

    def add_forward(self, proto: int, ports: range, listen: str, guest_ip: bytes,
                    guest_port: int) -> int:
        conntrack = self._conntrack(guest_ip)
        if conntrack is None:
            raise ValueError("the uplink has no address of that family yet (or the mode is "
                             "not nat)")
        if listen not in ("", "0.0.0.0", "::"):
            raise ValueError("a raw uplink forwards from its own address: drop --listen")
        return len(conntrack.add_forward(proto, ports, guest_ip, guest_port).ext_ports)

    def remove_forward(self, proto: int, ports: range, listen: str) -> None:
        """Both families' forwards of ``ports`` (KeyError when neither has one)."""
        removed = False
        for conntrack in self._conntracks():
            try:
                conntrack.remove_forward(proto, ports)
                removed = True
            except KeyError:
                pass
        if not removed:
            raise KeyError(f"no forward of port {ports[0]}")

    def forward_rows(self) -> list[dict[str, Any]]:
        return [
            {"proto": PROTO_NAMES[f.proto],
             "port": f"{f.ext_ports[0]}" + (f"-{f.ext_ports[-1]}" if len(f.ext_ports) > 1
                                            else ""),
             "to": address_port(f.guest_ip, f.guest_port)}
            for conntrack in self._conntracks() for f in conntrack.forwards()]

    def flow_rows(self, now: float) -> list[dict[str, Any]]:
        return [
            {"proto": PROTO_NAMES.get(r.original[0], str(r.original[0])), "kind": r.kind,
             "state": r.state, "original": endpoints(r.original), "reply": endpoints(r.reply),
             "seconds_left": round(r.seconds_left),
             "packets": [r.packets_original, r.packets_reply],
             "bytes": [r.bytes_original, r.bytes_reply]}
            for conntrack in self._conntracks() for r in conntrack.entries(now)]

    def stats(self) -> dict[str, Any]:
        return {"uplink": "raw", "conntrack": sum(len(c) for c in self._conntracks())}
