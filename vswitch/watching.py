"""The control socket's side of watching the datapath: ``vswitch trace``, ``vswitch capture``
and ``vswitch explain`` requests, and the swap between the plain and the watched closures
(vswitch.observe Rule 1) as sessions open and close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from vswitch.control import ControlError, Stream
from vswitch.observe import GATEWAY, INSIDE, OUTSIDE, Watch, make_session, rule_owner
from wire.filter import FilterError
from wire.vnet import NO_OFFLOAD


def reaches_gateway(lines: list[tuple[str, str, str]]) -> bool:
    """Whether the switch's decision, as explained, hands the frame to the gateway."""
    for _, text, _ in lines:
        if text == "forwarded to gateway":
            return True
        if text.startswith("flooded to ") and "gateway" in text[11:].split(" (")[0].split(","):
            return True
    return False



class Watching:
    def __init__(self, watch: Watch, switch: Any, fdb: Any, ports: list[Any],
                 router_port: Any, uplink_port: Any, name: Callable[[int], str],
                 host_uplink: bool) -> None:
        self.watch = watch
        self.switch = switch
        self.fdb = fdb
        self.ports = ports
        self.router_port = router_port
        self.uplink_port = uplink_port
        self._name = name
        self.host_uplink = host_uplink
        #: The daemon's plain delivery closure and its loop, once it runs.
        self.plain: Callable[[bytes, int, float], None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def rewire(self) -> None:
        """observe Rule 1: the watched closures while anything is armed, the plain ones
        otherwise."""
        watch, plain = self.watch, self.plain
        assert plain is not None
        deliver = watch.deliver() if watch.armed else plain
        for port in self.ports:
            if port is not None:
                port.deliver = deliver
        router_port = self.router_port
        if router_port is not None:
            router_port.__dict__.pop("dispatch", None)
            if watch.armed:
                router_port.dispatch = watch.dispatch(router_port.dispatch)  # type: ignore
        uplink = self.uplink_port
        if uplink is not None and router_port is not None and router_port.router is not None:
            reader = uplink.from_uplink
            uplink.deliver = watch.from_uplink(reader, router_port.router) if watch.armed \
                else reader

    def _points(self) -> dict[str, str]:
        """Capture points (observe Rule 4) and what each is."""
        points = {p.name: f"{p.kind} port" for p in self.ports if p is not None}
        if self.router_port is not None:
            points[GATEWAY] = "the gateway (router port)"
            if self.router_port.router is not None:
                points[INSIDE] = "routed packets on the guest side of the router (before NAT)"
        if self.uplink_port is not None:
            points[OUTSIDE] = "the raw uplink's own frames (after NAT)"
        return points

    def _watch(self, kind: str, request: dict[str, Any], points: frozenset[str]) -> Stream:
        try:
            assert self.loop is not None
            session = make_session(kind, str(request.get("filter") or ""), points,
                                   time.time() - self.loop.time())
        except FilterError as exc:
            raise ControlError(str(exc)) from None
        self.watch.sessions.append(session)
        self.rewire()

        def close() -> None:
            self.watch.sessions.remove(session)
            self.rewire()

        return Stream(session, close, {"kind": kind, "points": sorted(points)})

    def trace(self, request: dict[str, Any]) -> Stream:
        """``vswitch trace``: one record per frame the filter matches, with its decisions."""
        port = request.get("port")
        known = {p.name for p in self.ports if p is not None} | {"uplink"}
        if port is not None and port not in known:
            raise ControlError(f"no port {port!r}; ports: {', '.join(sorted(known))}")
        return self._watch("trace", request, frozenset([port] if port else []))

    def capture(self, request: dict[str, Any]) -> Stream:
        """``vswitch capture``: the frames at the asked points (observe Rule 4)."""
        available = self._points()
        wanted = [str(p) for p in request.get("points") or []]
        unknown = [p for p in wanted if p not in available]
        if not wanted or unknown:
            if OUTSIDE in unknown and self.host_uplink:
                raise ControlError("uplink-outside needs a raw uplink: with the host uplink the "
                                   "outside is this host's own sockets (tcpdump -i any shows "
                                   "them); capture uplink-inside for the guest side")
            raise ControlError(f"no capture point {', '.join(unknown) or '(none given)'}; "
                               "points: " + ", ".join(f"{k} ({v})" for k, v in
                                                      available.items()))
        return self._watch("capture", request, frozenset(wanted))

    def explain(self, request: dict[str, Any]) -> Any:
        """``vswitch explain``: what the switch would do with each frame, changing nothing."""
        names = {p.name: p.id for p in self.ports if p is not None}
        results = []
        for text in request.get("frames") or []:
            try:
                frame = bytes.fromhex(str(text))
            except ValueError:
                raise ControlError("frames are hex strings") from None
            packet = NO_OFFLOAD + frame
            port = request.get("port")
            if port is None:  # where the source MAC lives, else the first guest port
                learned = self.fdb.lookup(frame[6:12]) if len(frame) >= 12 else None
                port_id = learned if learned is not None else min(
                    (i for i in names.values() if i != 0), default=0)
            elif port in names:
                port_id = names[port]
            else:
                raise ControlError(f"no port {port!r}; ports: {', '.join(sorted(names))}")
            checks = self.watch.guard.explain(packet, port_id) \
                if port_id in self.watch.guarded else []
            if checks and checks[0][0].startswith("dropped"):  # guard: before the switch
                results.append({"port": self._name(port_id), "frame": text,
                                "decisions": [["guard", t, r] for t, r in checks]})
                continue
            lines = [(rule_owner(r), t, r) for t, r in
                     self.switch.explain(packet, port_id, self._name)]
            if port_id != 0 and self.router_port is not None and reaches_gateway(lines):
                lines += [(rule_owner(r), t, r) for t, r in self.router_port.explain(packet)]
            results.append({"port": self._name(port_id), "frame": text,
                            "decisions": [list(line) for line in lines]})
        return results
