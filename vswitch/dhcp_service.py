"""The DHCP adapter: the lease state machine on the gateway's UDP port 67, and the lease file.

Lease times are wall-clock (``time.time()``) so the lease file means the same after a restart;
timers are converted to the loop's clock when armed.  Lease changes are appended to the lease
journal once per loop iteration (``dhcp.leases`` Rule 4), and the journal is compacted by an
atomic rewrite when it has grown to twice the live leases: rewriting the whole file for every
change cost most of the DHCP time once thousands of leases existed (bench/services.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhcp.explain import explain_dhcp
from dhcp.leases import (
    AddressDeclined,
    LeaseExpired,
    LeaseFileError,
    LeaseGranted,
    LeaseReleased,
    LeaseState,
    append_leases,
    compact_after,
    load_leases,
    quarantine,
    save_leases,
)
from dhcp.server import SERVER_PORT, DhcpConfig, DhcpServer, StaticHost
from vswitch.config import NetworkConfig
from vswitch.ports.router import RouterPort
from wire.errors import MalformedPacket
from wire.packets import PROTO_UDP, format_mac

log = logging.getLogger("vswitch.dhcp")


def ip_text(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def dhcp_config(net: NetworkConfig) -> DhcpConfig:
    """The server's config from [network]/[dhcp]/[dns]: router unless isolated (libvirt's
    isolated networks give no default route), DNS on the gateway when DNS is served."""
    gateway = int(net.gateway)
    return DhcpConfig(
        server_ip=gateway, network=int(net.subnet.network_address),
        prefix=net.subnet.prefixlen,
        range_first=int(net.dhcp_range[0]), range_last=int(net.dhcp_range[1]),
        lease_time=net.lease_time, router=None if net.mode == "isolated" else gateway,
        dns_servers=(gateway,) if net.dns else (), domain=net.domain if net.dns else None,
        static_hosts=tuple(StaticHost(bytes.fromhex(h.mac.replace(":", "")), int(h.ip),
                                      h.name or "") for h in net.dhcp_hosts if h.mac),
        authoritative=net.authoritative, max_leases=net.max_leases or None)


def load_or_quarantine(path: Path, now: float) -> list[Any]:
    """Leases from the file; a corrupt file is moved aside (never overwritten) and startup
    stops with a message saying where it went."""
    try:
        return load_leases(path, now)
    except LeaseFileError as exc:
        aside = quarantine(path)
        raise SystemExit(f"vswitch: {exc}\nvswitch: the file was moved aside to {aside}; "
                         "nothing was lost. Start again to begin with no leases, or repair it "
                         "and move it back.") from exc


class DhcpService:
    def __init__(self, config: DhcpConfig, lease_file: Path, router: RouterPort,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.lease_file = lease_file
        lease_file.parent.mkdir(parents=True, exist_ok=True)
        self.server = DhcpServer(config, load_or_quarantine(lease_file, time.time()))
        save_leases(lease_file, self.server.leases())  # start from a compact journal
        self._journal_lines = len(self.server.table)
        self._dirty: set[int] = set()
        self.router = router
        self.loop = loop
        self.malformed = 0
        #: Called when leases (and so the DNS names) change; the daemon points it at DNS.
        self.on_change: Callable[[], None] | None = None
        self._save_pending = False
        self._timer: asyncio.TimerHandle | None = None
        router.gateway.udp[SERVER_PORT] = self.udp
        router.gateway.explainers[PROTO_UDP, SERVER_PORT] = (
            lambda mac, ip, payload: explain_dhcp(self.server, payload, mac, ip, time.time()))
        self._rearm()

    def udp(self, mac: bytes, ip: bytes, port: int, dst: bytes, payload: bytes,
            now: float) -> list[bytes]:
        try:
            replies = self.server.handle(payload, mac, ip, time.time())
        except MalformedPacket:
            self.malformed += 1
            return []
        self._events(self.server.pop_events())
        gateway = self.router.gateway
        return [gateway.udp_frame(r.dst_mac, r.dst_ip, SERVER_PORT, r.dst_port, r.payload)
                for r in replies]

    def _events(self, events: list[Any]) -> None:
        for event in events:
            mac = format_mac(event.mac)
            if isinstance(event, LeaseGranted) and not event.renewed:
                log.info("lease %s to %s%s", ip_text(event.ip), mac,
                         f" ({event.hostname})" if event.hostname else "")
            elif isinstance(event, LeaseReleased):
                log.info("lease %s released by %s", ip_text(event.ip), mac)
            elif isinstance(event, LeaseExpired):
                log.info("lease %s of %s expired", ip_text(event.ip), mac)
            elif isinstance(event, AddressDeclined):
                log.warning("%s declined %s: another host uses it; not offered until later",
                            mac, ip_text(event.ip))
        self._dirty.update(event.ip for event in events)
        if events and self.on_change is not None:
            self.on_change()
        if events and not self._save_pending:
            self._save_pending = True
            self.loop.call_soon(self._save)
        self._rearm()

    def _save(self) -> None:
        """Append what changed; compact when the journal has grown too long."""
        self._save_pending = False
        changed, freed = [], []
        for ip in self._dirty:
            lease = self.server.table.by_ip(ip)
            if lease is not None and lease.state is not LeaseState.OFFERED:
                changed.append(lease)
            else:
                freed.append(ip)
        self._dirty.clear()
        try:
            self._journal_lines += append_leases(self.lease_file, changed, freed)
            if self._journal_lines > compact_after(len(self.server.table)):
                save_leases(self.lease_file, self.server.leases())
                self._journal_lines = len(self.server.table)
        except OSError as exc:
            log.error("cannot write lease file %s: %s", self.lease_file, exc)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.server.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - time.time())
            self._timer = self.loop.call_at(self.loop.time() + delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._events(self.server.expire(time.time()))

    def rows(self) -> list[dict[str, Any]]:
        """Leases as `virsh net-dhcp-leases` shows them."""
        now = time.time()
        return [{"expires": lease.expires, "expires_in": round(lease.expires - now),
                 "mac": format_mac(lease.mac), "ip": ip_text(lease.ip),
                 "prefix": self.server.config.prefix,
                 "hostname": lease.hostname or "", "state": str(lease.state),
                 "client_id": lease.client.hex(":")}
                for lease in self.server.leases()]

    def stats(self) -> dict[str, Any]:
        """``show dhcp``: the server's counters, malformed messages, leases held."""
        return dict(self.server.counters) | {"malformed": self.malformed,
                                             "leases": len(self.server.leases())}

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._save_pending:
            self._save()
