"""The DHCP adapter: the lease state machine on the gateway's UDP port 67, and the lease file.

Lease times are wall-clock (``time.time()``) so the lease file means the same after a restart;
timers are converted to the loop's clock when armed.  Lease changes are appended to the lease
journal once per loop iteration (``dhcp.leases`` Rule 4), and the journal is compacted by an
atomic rewrite when it has grown to twice the live leases: rewriting the whole file for every
change cost most of the DHCP time once thousands of leases existed (bench/services.py).

Each MAC may send ``requests_per_second`` DHCP and DHCPv6 messages per second, twice that at
once (``nat.ratelimit`` Rule 2, at most ``BUDGET_MACS`` remembered); what is over is dropped
before the server sees it and counted ``rate_limited``, so one guest flooding the server
neither fills the journal's write queue nor delays another guest's lease (issue 13).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhcp.dhcp6 import SERVER_PORT6, Dhcp6Config, Dhcp6Server
from dhcp.explain import explain_dhcp
from dhcp.leases import (
    AddressDeclined,
    LeaseExpired,
    LeaseFileError,
    LeaseGranted,
    LeaseReleased,
    LeaseState,
    address_text,
    append_leases,
    compact_after,
    load_leases,
    quarantine,
    save_leases,
)
from dhcp.server import SERVER_PORT, DhcpConfig, DhcpServer, StaticHost
from nat.ratelimit import KeyedBuckets
from vswitch.config import NetworkConfig
from vswitch.ports.router import RouterPort
from wire.errors import MalformedPacket
from wire.packets import PROTO_UDP, format_mac

log = logging.getLogger("vswitch.dhcp")
#: MACs whose DHCP budgets are remembered (the least recently heard forgotten first).
BUDGET_MACS = 4096


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


#: Lease addresses from here up are IPv6 (dhcp.leases Rule 7).
V6_LEASES = 1 << 32


def dhcp6_config(net: NetworkConfig, gateway_mac: bytes) -> Dhcp6Config | None:
    """The DHCPv6 server's config, when [dhcp] has a range6."""
    if net.dhcp_range6 is None or net.subnet6 is None or net.gateway6 is None:
        return None
    return Dhcp6Config(
        gateway_mac, net.gateway6.packed, int(net.dhcp_range6[0]), int(net.dhcp_range6[1]),
        int(net.subnet6.network_address), net.subnet6.prefixlen,
        {bytes.fromhex(h.mac.replace(":", "")): int(h.ip6) for h in net.dhcp_hosts
         if h.mac and h.ip6 is not None},
        domain=net.domain if net.dns else "", lease_time=net.lease_time)


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
                 loop: asyncio.AbstractEventLoop, config6: Dhcp6Config | None = None,
                 requests_per_second: int = 0) -> None:
        """``requests_per_second``: each MAC's budget (0: no limit)."""
        #: Per-MAC budgets (the module's docstring); None: no limit.
        self.budget: KeyedBuckets[bytes] | None = None if requests_per_second <= 0 else \
            KeyedBuckets(requests_per_second, 2 * requests_per_second, BUDGET_MACS)
        self.rate_limited = 0
        self.lease_file = lease_file
        lease_file.parent.mkdir(parents=True, exist_ok=True)
        leases = load_or_quarantine(lease_file, time.time())
        self.server = DhcpServer(config, [x for x in leases if x.ip < V6_LEASES])
        #: DHCPv6 (dhcp.dhcp6), when the network has a range6; its leases share the journal
        self.server6 = None if config6 is None else Dhcp6Server(
            config6, [x for x in leases if x.ip >= V6_LEASES])
        save_leases(lease_file, self._saved())  # start from a compact journal
        self._journal_lines = len(self.server.table)
        self._dirty: set[int] = set()
        self.router = router
        self.loop = loop
        self.malformed = 0
        #: Called when leases (and so the DNS names) change; the daemon points it at DNS.
        self.on_change: Callable[[], None] | None = None
        #: Called with the addresses whose leases changed; the daemon binds them for the port
        #: guards (vswitch.guard Rules 5-6: DHCP snooping from the server's own table).
        self.on_leases: Callable[[set[int]], None] | None = None
        self._save_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self.prefix6 = config6.prefix_len if config6 is not None else 0
        router.gateway.udp[SERVER_PORT] = self.udp
        if self.server6 is not None and router.gateway.v6 is not None:
            router.gateway.v6.udp[SERVER_PORT6] = self.udp6
        router.gateway.explainers[PROTO_UDP, SERVER_PORT] = (
            lambda mac, ip, payload: explain_dhcp(self.server, payload, mac, ip, time.time()))
        self._rearm()

    def _over_budget(self, mac: bytes, now: float) -> bool:
        if self.budget is None or self.budget.take(mac, now):
            return False
        self.rate_limited += 1
        return True

    def udp(self, mac: bytes, ip: bytes, port: int, dst: bytes, payload: bytes,
            now: float) -> list[bytes]:
        if self._over_budget(mac, now):
            return []
        try:
            replies = self.server.handle(payload, mac, ip, time.time())
        except MalformedPacket:
            self.malformed += 1
            return []
        self._events(self.server.pop_events())
        gateway = self.router.gateway
        return [gateway.udp_frame(r.dst_mac, r.dst_ip, SERVER_PORT, r.dst_port, r.payload)
                for r in replies]

    def udp6(self, mac: bytes, ip: bytes, port: int, dst: bytes, payload: bytes,
             now: float) -> list[bytes]:
        """DHCPv6 from a guest: the answer goes to its link-local source, from ours
        (RFC 8415 18.3.10)."""
        server6, v6 = self.server6, self.router.gateway.v6
        assert server6 is not None and v6 is not None
        if self._over_budget(mac, now):
            return []
        reply = server6.handle(payload, mac, time.time())
        changed = server6.dirty.copy()
        server6.dirty.clear()
        for address in changed:
            lease = server6.table.by_ip(address)
            if lease is not None and lease.state is LeaseState.BOUND:
                log.info("lease %s to %s%s", address_text(address), format_mac(lease.mac),
                         f" ({lease.hostname})" if lease.hostname else "")
        self._changed(changed)
        if reply is None:
            return []
        return [v6.udp_frame(mac, ip, SERVER_PORT6, port, reply, source=v6.link_local)]

    def _changed(self, addresses: set[int]) -> None:
        """Leases changed: DNS names follow, the journal is written once per loop turn."""
        if not addresses:
            return
        self._dirty.update(addresses)
        if self.on_leases is not None:
            self.on_leases(addresses)
        if self.on_change is not None:
            self.on_change()
        if not self._save_pending:
            self._save_pending = True
            self.loop.call_soon(self._save)
        self._rearm()

    def bound(self, ip: int) -> bytes | None:
        """The MAC holding ``ip`` (IPv4, or IPv6 from ``V6_LEASES`` up) in a BOUND lease."""
        lease = self._table(ip).by_ip(ip)
        return lease.mac if lease is not None and lease.state is LeaseState.BOUND else None

    def _saved(self) -> list[Any]:
        """The leases the journal keeps, both families."""
        six = self.server6.leases() if self.server6 is not None else []
        return [*self.server.leases(), *six]

    def _table(self, ip: int) -> Any:
        return self.server6.table if ip >= V6_LEASES and self.server6 is not None \
            else self.server.table

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
        self._changed({event.ip for event in events})
        self._rearm()

    def _save(self) -> None:
        """Append what changed; compact when the journal has grown too long."""
        self._save_pending = False
        changed, freed = [], []
        for ip in self._dirty:
            lease = self._table(ip).by_ip(ip)
            if lease is not None and lease.state is not LeaseState.OFFERED:
                changed.append(lease)
            else:
                freed.append(ip)
        self._dirty.clear()
        try:
            self._journal_lines += append_leases(self.lease_file, changed, freed)
            saved = self._saved()
            if self._journal_lines > compact_after(len(saved)):
                save_leases(self.lease_file, saved)
                self._journal_lines = len(saved)
        except OSError as exc:
            log.error("cannot write lease file %s: %s", self.lease_file, exc)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadlines = [self.server.next_deadline(),
                     self.server6.table.next_deadline() if self.server6 is not None else None]
        deadline = min((d for d in deadlines if d is not None), default=None)
        if deadline is not None:
            delay = max(0.0, deadline - time.time())
            self._timer = self.loop.call_at(self.loop.time() + delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = time.time()
        if self.server6 is not None:
            for lease in self.server6.expire(now):
                log.info("lease %s of %s expired", address_text(lease.ip), format_mac(lease.mac))
            self._changed(self.server6.dirty.copy())
            self.server6.dirty.clear()
        self._events(self.server.expire(now))

    def rows(self) -> list[dict[str, Any]]:
        """Leases as `virsh net-dhcp-leases` shows them."""
        now = time.time()
        return [{"expires": lease.expires, "expires_in": round(lease.expires - now),
                 "mac": format_mac(lease.mac), "ip": ip_text(lease.ip),
                 "prefix": self.server.config.prefix,
                 "hostname": lease.hostname or "", "state": str(lease.state),
                 "client_id": lease.client.hex(":"), "protocol": "ipv4"}
                for lease in self.server.leases()] + [
            {"expires": lease.expires, "expires_in": round(lease.expires - now),
             "mac": format_mac(lease.mac), "ip": address_text(lease.ip),
             "prefix": self.prefix6, "hostname": lease.hostname or "", "state": str(lease.state),
             "client_id": lease.client[1:-4].hex(":"), "iaid": lease.client[-4:].hex(),
             "protocol": "ipv6"}
            for lease in (self.server6.leases() if self.server6 is not None else [])]

    def stats(self) -> dict[str, Any]:
        """``show dhcp``: the server's counters, malformed messages, leases held."""
        six = {} if self.server6 is None else {
            f"v6-{k}": v for k, v in self.server6.counters.items()} | {
            "leases6": len(self.server6.leases())}
        return dict(self.server.counters) | {"malformed": self.malformed,
                                             "leases": len(self.server.leases()),
                                             "rate_limited": self.rate_limited} | six

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._save_pending:
            self._save()
