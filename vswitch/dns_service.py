"""The DNS adapter: the responder core on the gateway's port 53 (UDP and TCP), and host sockets
toward the upstream resolvers.

Per Rule 3 of ``dhcp.dns``: each forwarded query leaves from a fresh socket on a random port
(the kernel's choice, bind to port 0), reported back with ``sent_from``; ``Release`` closes it.
Guest-side TCP runs on ``nat.tcp_server``; upstream TCP (for queries that came over TCP) uses
asyncio streams: rare, and control-plane speed is plenty for it.

Each guest address may ask ``queries_per_second`` queries per second, twice that at once, over
UDP and TCP together (``nat.ratelimit`` Rule 2, at most ``BUDGET_GUESTS`` remembered); a query
over it never reaches the responder and is answered REFUSED (RFC 1035 4.1.1, rcode 5) with its
question, so the guest's resolver gives up at once instead of retrying into the flood; counted
``rate_limited`` (issue 13: one guest cannot take the DNS server from the others).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from dataclasses import asdict
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from dhcp.dns import DnsResponder
from dhcp.dns_actions import Answer, Forward, Release
from dhcp.dnsmsg import (
    HEADER_SIZE,
    RCODE_REFUSED,
    TcpFramer,
    encode_tcp_frame,
    header_only_response,
)
from dhcp.explain import explain_dns
from nat.ratelimit import KeyedBuckets
from nat.tcp_server import Key, TcpServer
from vswitch.config import NetworkConfig
from vswitch.ports.router import RouterPort
from wire.errors import MalformedPacket
from wire.packets import PROTO_UDP

log = logging.getLogger("vswitch.dns")
DNS_PORT = 53
#: Guest addresses whose DNS budgets are remembered (the least recently heard forgotten first).
BUDGET_GUESTS = 4096


def refused(query: bytes) -> bytes | None:
    """REFUSED for ``query``: its ID, opcode, RD and its one question as asked, QR set (RFC
    1035 4.1.1; a stub resolver such as glibc's takes only an answer whose question matches);
    the header alone when there is not exactly one plain question; None for what is no query
    (shorter than a header, or a response: dropped, as ``dhcp.dns`` Rule 9 drops them).
    Built from the bytes, decoding nothing: it answers a flood, so it must cost less than the
    answer it replaces."""
    if len(query) < HEADER_SIZE or query[2] & 0x80:
        return None
    end = 0
    if query[4:6] == b"\x00\x01":  # walk the question's labels to its type and class
        pos = HEADER_SIZE
        while pos < len(query) and not query[pos] & 0xC0:
            if not query[pos]:
                end = pos + 5
                break
            pos += query[pos] + 1
    if not end or end > len(query):
        return header_only_response(query, RCODE_REFUSED)
    flags = 0x8000 | (query[2] << 8 | query[3]) & 0x7900 | RCODE_REFUSED
    return query[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + query[HEADER_SIZE:end]


class DnsService:
    def __init__(self, responder: DnsResponder, router: RouterPort,
                 loop: asyncio.AbstractEventLoop, static_names: frozenset[str] = frozenset(),
                 queries_per_second: int = 0) -> None:
        """``queries_per_second``: each guest address's budget (0: no limit)."""
        #: Per-guest budgets (the module's docstring); None: no limit.
        self.budget: KeyedBuckets[bytes] | None = None if queries_per_second <= 0 else \
            KeyedBuckets(queries_per_second, 2 * queries_per_second, BUDGET_GUESTS)
        self.rate_limited = 0
        self.responder = responder
        self.router = router
        self.loop = loop
        self.tcp = TcpServer(DNS_PORT, self._tcp_data)
        self._framers: dict[Key, TcpFramer] = {}
        self._sockets: dict[int, socket.socket] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None  # the deadline ``_timer`` is set for
        router.gateway.udp[DNS_PORT] = self.udp
        router.gateway.tcp[DNS_PORT] = self.tcp
        if router.gateway.v6 is not None:  # the same services on the IPv6 addresses
            router.gateway.v6.udp[DNS_PORT] = self.udp
            router.gateway.v6.tcp[DNS_PORT] = self.tcp  # one server, both families
        router.gateway.explainers[PROTO_UDP, DNS_PORT] = (
            lambda mac, ip, payload: explain_dns(responder, payload, loop.time(), static_names))

    # -- from guests ---------------------------------------------------------------------

    def _over_budget(self, guest: bytes, now: float) -> bool:
        if self.budget is None or self.budget.take(guest, now):
            return False
        self.rate_limited += 1
        return True

    def udp(self, mac: bytes, ip: bytes, port: int, dst: bytes, payload: bytes,
            now: float) -> list[bytes]:
        if self._over_budget(ip, now):
            answer = refused(payload)
            return [] if answer is None else \
                self._answer_frames(Answer(("udp", mac, ip, port), answer, "udp"), now)
        actions = self.responder.handle_query(payload, ("udp", mac, ip, port), "udp", now)
        return self._perform(actions, now)

    def _tcp_data(self, key: Key, data: bytes, now: float) -> bytes:
        framer = self._framers.setdefault(key, TcpFramer())
        try:
            messages = framer.feed(data)
        except MalformedPacket:
            self._framers.pop(key, None)
            return b""
        out = b""
        for message in messages:
            if self._over_budget(key[0], now):
                answer = refused(message)
                out += b"" if answer is None else encode_tcp_frame(answer)
                continue
            actions = self.responder.handle_query(message, ("tcp", key), "tcp", now)
            immediate = [a for a in actions if isinstance(a, Answer)]
            out += b"".join(encode_tcp_frame(a.payload) for a in immediate)
            self._perform([a for a in actions if not isinstance(a, Answer)], now)
        return out

    # -- performing the core's actions ----------------------------------------------------

    def _perform(self, actions: list[Any], now: float) -> list[bytes]:
        """Frames for answers due now; forwards and releases are carried out here."""
        frames: list[bytes] = []
        for action in actions:
            if isinstance(action, Answer):
                frames += self._answer_frames(action, now)
            elif isinstance(action, Forward):
                self._forward(action)
            elif isinstance(action, Release):
                self._release(action.key)
        self._rearm()
        return frames

    def _answer_frames(self, answer: Answer, now: float) -> list[bytes]:
        client = answer.client
        if client[0] == "udp":
            _, mac, ip, port = client
            gateway = self.router.gateway
            if len(ip) == 16 and gateway.v6 is not None:  # asked over IPv6
                return [gateway.v6.udp_frame(mac, ip, DNS_PORT, port, answer.payload)]
            return [gateway.udp_frame(mac, ip, DNS_PORT, port, answer.payload)]
        return self.tcp.send(client[1], encode_tcp_frame(answer.payload), now)

    def _emit(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.router.emit(frame)

    def _forward(self, fwd: Forward) -> None:
        if fwd.transport == "tcp":
            self._tasks[fwd.key] = self.loop.create_task(self._forward_tcp(fwd))
            return
        v6 = ":" in fwd.upstream[0]
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.bind(("::" if v6 else "0.0.0.0", 0))
            sock.sendto(fwd.payload, fwd.upstream)
        except OSError as exc:
            log.debug("forward to %s failed: %s", fwd.upstream, exc)
            sock.close()
            return  # the core times the attempt out and retries or answers SERVFAIL
        self.responder.sent_from(fwd.key, sock.getsockname()[1])
        self._sockets[fwd.key] = sock
        self.loop.add_reader(sock.fileno(), self._upstream_readable, sock)

    def _upstream_readable(self, sock: socket.socket) -> None:
        try:
            data, server = sock.recvfrom(65535)
        except OSError:
            return
        now = self.loop.time()
        self._emit(self._perform(self.responder.handle_reply(
            data, server, sock.getsockname()[1], now), now))

    async def _forward_tcp(self, fwd: Forward) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*fwd.upstream), self.responder.timeout)
            self.responder.sent_from(fwd.key, writer.get_extra_info("sockname")[1])
            writer.write(encode_tcp_frame(fwd.payload))
            length = int.from_bytes(await reader.readexactly(2), "big")
            data = await reader.readexactly(length)
            writer.close()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return
        now = self.loop.time()
        self._emit(self._perform(self.responder.handle_reply(
            data, fwd.upstream, writer.get_extra_info("sockname")[1], now), now))

    def _release(self, key: int) -> None:
        sock = self._sockets.pop(key, None)
        if sock is not None:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        task = self._tasks.pop(key, None)
        if task is not None and asyncio.current_task() is not task:
            task.cancel()

    # -- timers ---------------------------------------------------------------------------

    def _rearm(self) -> None:
        """One timer for the earliest deadline; left alone when that did not change (most
        answers change nothing, and a timer costs more than the answer from the memo)."""
        queries, connections = self.responder.next_deadline(), self.tcp.next_deadline()
        deadline = (queries if connections is None else connections if queries is None
                    else min(queries, connections))
        if deadline == self._armed_for and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._armed_for = None
        now = self.loop.time()
        frames = self._perform(self.responder.expire(now), now)
        self._emit(frames + self.tcp.expire(now))
        self._rearm()

    def stats(self) -> dict[str, Any]:
        """``show dns``: the responder's counters and its cache's size."""
        return asdict(self.responder.stats) | {"cache_entries": self.responder.cache_size_now(),
                                               "rate_limited": self.rate_limited}

    def close(self) -> None:
        for key in list(self._sockets) + list(self._tasks):
            self._release(key)
        if self._timer is not None:
            self._timer.cancel()


def host_resolvers(path: str = "/etc/resolv.conf") -> tuple[tuple[str, int], ...]:
    """The host's nameservers, IPv4 and IPv6, the default DNS upstreams (as dnsmasq reads
    resolv.conf)."""
    found = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ()
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            if "%" in fields[1]:
                continue  # a scoped fe80::1%eth0: its zone means nothing to our sockets
            try:
                address = ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            found.append((str(address), 53))
    return tuple(found)


def ipv6_names(net: NetworkConfig | None, router_port: RouterPort | None,
               dhcp: Any) -> dict[str, tuple[IPv6Address, ...]]:
    """Guests' names -> their IPv6 addresses for DNS: a static host's ip6, and the
    addresses in subnet6 the gateway heard from a MAC that has a name (a static host's,
    or a DHCP lease's hostname), as dnsmasq's ra-names."""
    v6 = router_port.gateway.v6 if router_port is not None else None
    if net is None or v6 is None or net.subnet6 is None:
        return {}
    heard: dict[bytes, list[IPv6Address]] = {}
    for address, (mac, _) in v6.neighbours.items():
        ip = IPv6Address(address)
        if ip in net.subnet6:
            heard.setdefault(mac, []).append(ip)
    names: dict[str, list[IPv6Address]] = {}
    if dhcp is not None and dhcp.server6 is not None:
        for lease in dhcp.server6.leases():  # DHCPv6 leases with a client FQDN
            if lease.hostname:
                names.setdefault(lease.hostname, []).append(IPv6Address(lease.ip))
    if dhcp is not None:
        for lease in dhcp.server.leases():
            if lease.hostname and lease.mac in heard:
                names.setdefault(lease.hostname, []).extend(heard[lease.mac])
    for host in net.dhcp_hosts:
        if host.name and host.mac:
            found = names.setdefault(host.name, [])
            found.extend(heard.get(bytes.fromhex(host.mac.replace(":", "")), []))
            if host.ip6 is not None and host.ip6 not in found:
                found.insert(0, host.ip6)
    return {n: tuple(dict.fromkeys(a)) for n, a in names.items() if a}
