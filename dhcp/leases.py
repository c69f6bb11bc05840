"""The lease table, its events and the lease file.

Rule 1: at most one lease per address and one per client key; putting a lease for a client
        replaces the client's other lease (one binding per client, RFC 2131 section 4.2).
Rule 2: a lease is ``offered`` (an address held briefly after an OFFER), ``bound`` (ACKed) or
        ``declined`` (an address quarantined after a DECLINE; it has no owner: client key b"").
Rule 3: times are wall-clock seconds since the epoch, because they are written to the lease file
        and must mean the same after a restart.
Rule 4: the lease file is a journal of JSON lines: a lease line sets the lease of its address
        (bound or declined; offers are not saved, a restarted server simply offers again), a
        ``{"ip": ..., "free": true}`` line frees it, and later lines win.  Changes are appended
        in one write per batch (``append_leases``): cheap under load, and a crash of the process
        (kill -9) loses nothing already written; appends are not fsynced, so a power loss may
        lose the last batches, never the file's consistency.  When the journal grows past
        ``compact_after(live)`` lines it is rewritten (``save_leases``) atomically: a temporary
        file in the same directory, fsync, ``os.replace``, fsync of the directory, so a crash
        leaves the old file or the new one, never a torn one.  A torn last line (a crash in
        the middle of an append: no newline at the end) is ignored.
Rule 5: a file that does not parse raises ``LeaseFileError`` naming the file and line.  The
        caller must not overwrite it: the daemon moves it aside with ``quarantine(path)`` (to
        ``path.corrupt-<timestamp>``), logs the new name and starts with an empty table.
Rule 6: leases that have expired by load time are dropped at load.
Rule 7: DHCPv6 leases (``dhcp.dhcp6``) share the journal: their addresses are IPv6 text, their
        integers are at least 2**32, so a loader tells them apart by size.
"""

from __future__ import annotations

import heapq
import ipaddress
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar

from wire.packets import format_mac

_T = TypeVar("_T")


class LeaseState(StrEnum):
    OFFERED = "offered"
    BOUND = "bound"
    DECLINED = "declined"


@dataclass(frozen=True, slots=True)
class Lease:
    """One address and who holds it until when."""

    ip: int
    """The IPv4 address as an integer."""
    client: bytes
    """Client key: client-id (option 61) if sent, else htype + chaddr; b"" for a declined one."""
    mac: bytes
    """The client hardware address (chaddr) of the last message for this lease."""
    hostname: str
    """The client's name as a DNS label (``hostname_label``), or "" if it gave none."""
    expires: float
    """Wall-clock time (seconds since the epoch) at which the lease ends."""
    state: LeaseState
    """Offered, bound or declined (Rule 2)."""


@dataclass(frozen=True, slots=True)
class LeaseGranted:
    """An ACK bound or extended a lease."""

    mac: bytes
    """The client's hardware address."""
    ip: int
    """The leased address."""
    hostname: str
    """The client's name, "" if none."""
    expires: float
    """When the lease ends (wall clock)."""
    renewed: bool
    """True when the client already held this lease bound (a renewal, not a new binding)."""


@dataclass(frozen=True, slots=True)
class LeaseReleased:
    """The client gave its address back (DHCPRELEASE)."""

    mac: bytes
    """The client's hardware address."""
    ip: int
    """The address that is free again."""
    hostname: str
    """The client's name, "" if none."""


@dataclass(frozen=True, slots=True)
class LeaseExpired:
    """A bound lease ran out without being renewed."""

    mac: bytes
    """The client's hardware address."""
    ip: int
    """The address that is free again."""
    hostname: str
    """The client's name, "" if none."""


@dataclass(frozen=True, slots=True)
class AddressDeclined:
    """A client found its address in use (DHCPDECLINE); the address is quarantined."""

    mac: bytes
    """The client that declined it."""
    ip: int
    """The address in conflict: some other station uses it."""
    until: float
    """When the quarantine ends and the address may be offered again (wall clock)."""


LeaseEvent = LeaseGranted | LeaseReleased | LeaseExpired | AddressDeclined


class LeaseTable:
    """Leases indexed by address and by client key, with expiry in deadline order."""

    def __init__(self) -> None:
        self._by_ip: dict[int, Lease] = {}
        self._by_client: dict[bytes, int] = {}
        # (expires, ip); entries made stale by a renewal or removal are skipped when popped.
        self._deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._by_ip)

    def __iter__(self) -> Iterator[Lease]:
        return iter(self._by_ip.values())

    def by_ip(self, ip: int) -> Lease | None:
        return self._by_ip.get(ip)

    def by_client(self, client: bytes) -> Lease | None:
        ip = self._by_client.get(client)
        return None if ip is None else self._by_ip[ip]

    def put(self, lease: Lease) -> None:
        """Add or replace the lease at ``lease.ip``, dropping the client's other lease (Rule 1)."""
        old = self._by_ip.get(lease.ip)
        if old is not None and old.client != lease.client:
            self.remove(lease.ip)
        if lease.client:
            other = self._by_client.get(lease.client)
            if other is not None and other != lease.ip:
                self.remove(other)
            self._by_client[lease.client] = lease.ip
        self._by_ip[lease.ip] = lease  # a renewal keeps its place in iteration order
        heapq.heappush(self._deadlines, (lease.expires, lease.ip))
        if len(self._deadlines) > 2 * len(self._by_ip) + 64:
            self._deadlines = [(held.expires, held.ip) for held in self._by_ip.values()]
            heapq.heapify(self._deadlines)

    def remove(self, ip: int) -> Lease | None:
        lease = self._by_ip.pop(ip, None)
        if lease is not None and self._by_client.get(lease.client) == ip:
            del self._by_client[lease.client]
        return lease

    def next_deadline(self) -> float | None:
        """When ``expire`` next has something to remove."""
        heap = self._deadlines
        while heap and not self._current(*heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[Lease]:
        """Remove and return every lease whose end is at or before ``now``."""
        gone = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            expires, ip = heapq.heappop(heap)
            if self._current(expires, ip):
                gone.append(self._by_ip[ip])
                self.remove(ip)
        return gone

    def _current(self, expires: float, ip: int) -> bool:
        lease = self._by_ip.get(ip)
        return lease is not None and lease.expires == expires


# -- names ----------------------------------------------------------------------------------------

_NOT_LABEL: Final = re.compile(r"[^a-z0-9-]+")


def hostname_label(raw: bytes | str) -> str:
    """A client-supplied name as a DNS label (RFC 1035 2.3.1, RFC 1123 2.1): the first label,
    lowercased, runs of other characters turned into "-", no "-" at either end, <= 63 chars."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    label = _NOT_LABEL.sub("-", text.split(".", 1)[0].lower()).strip("-")
    return label[:63].rstrip("-")


# -- the lease file -------------------------------------------------------------------------------


class LeaseFileError(ValueError):
    """The lease file is unreadable; it must be moved aside (``quarantine``), not overwritten."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: corrupt lease file: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


def address_text(ip: int) -> str:
    """A lease's address as text: IPv4 below 2**32, else IPv6 (DHCPv6 leases share the
    journal; they are never in ::/96, so the two never meet)."""
    return str(ipaddress.ip_address(ip))


def encode_lease(lease: Lease) -> str:
    """One lease file line (without the newline)."""
    return json.dumps({
        "ip": address_text(lease.ip), "mac": format_mac(lease.mac),
        "client": lease.client.hex(), "hostname": lease.hostname, "expires": lease.expires,
        "state": lease.state.value,
    }, sort_keys=True)


def decode_lease(line: str) -> Lease:
    """Parse one lease file line; raises ValueError saying what is wrong."""
    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    ip, mac, client, hostname, expires, state = (
        _field(obj, "ip", str), _field(obj, "mac", str), _field(obj, "client", str),
        _field(obj, "hostname", str), _field(obj, "expires", (int, float)),
        _field(obj, "state", str))
    if isinstance(expires, bool) or not math.isfinite(expires):
        raise ValueError(f"'expires' {expires!r} is not a time")
    if hostname != hostname_label(hostname):
        raise ValueError(f"'hostname' {hostname!r} is not a DNS label")
    return Lease(ip=_convert("ip", ip, lambda v: int(ipaddress.ip_address(v))),
                 client=_convert("client", client, bytes.fromhex),
                 mac=_convert("mac", mac, lambda v: bytes.fromhex(v.replace(":", ""))),
                 hostname=hostname, expires=float(expires),
                 state=_convert("state", state, LeaseState))


def _convert(key: str, value: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"{key!r} has a bad value {value!r}") from None


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise ValueError(f"missing {key!r}")
    if not isinstance(obj[key], kind):
        raise ValueError(f"{key!r} has the wrong type")
    return obj[key]


def load_leases(path: Path | str, now: float) -> list[Lease]:
    """Replay the lease journal (Rule 4); a missing file is an empty table; expired leases are
    dropped (Rule 6)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    torn = lines[-1] if lines[-1].strip() else None  # no newline at the end: a torn append
    leases: dict[int, Lease] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
            freed = _freed_ip(text)
            lease = None if freed is not None else decode_lease(text)
        except (UnicodeDecodeError, ValueError) as exc:
            if raw is torn:
                break
            raise LeaseFileError(path, number, str(exc)) from None
        if freed is not None:
            leases.pop(freed, None)
        elif lease is not None:
            leases[lease.ip] = lease
    return [lease for lease in leases.values()
            if lease.state is not LeaseState.OFFERED and lease.expires > now]


def _freed_ip(line: str) -> int | None:
    """The address a ``{"ip": ..., "free": true}`` journal line frees, or None for a lease."""
    if '"free"' not in line:
        return None
    obj = json.loads(line)
    if not isinstance(obj, dict) or obj.get("free") is not True or set(obj) != {"ip", "free"}:
        raise ValueError("bad free record")
    return _convert("ip", _field(obj, "ip", str), lambda v: int(ipaddress.ip_address(v)))


def compact_after(live: int) -> int:
    """Journal lines beyond which the file is rewritten: twice the live leases, at least 1000."""
    return max(1000, 2 * live)


def append_leases(path: Path | str, changed: Iterable[Lease], freed: Iterable[int]) -> int:
    """Append lease and free records to the journal in one write (Rule 4); lines written."""
    lines = [encode_lease(lease) + "\n" for lease in changed
             if lease.state is not LeaseState.OFFERED]
    lines += [json.dumps({"ip": address_text(ip), "free": True}) + "\n" for ip in freed]
    if not lines:
        return 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(lines).encode())
    finally:
        os.close(fd)
    return len(lines)


def save_leases(path: Path | str, leases: Iterable[Lease]) -> None:
    """Replace the lease file atomically with the bound and declined leases (Rule 4)."""
    path = Path(path)
    lines = [encode_lease(lease) + "\n" for lease in leases
             if lease.state is not LeaseState.OFFERED]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def quarantine(path: Path | str, when: float | None = None) -> Path:
    """Move a corrupt lease file aside to ``path.corrupt-<UTC timestamp>``; return the new name.

    The bytes are kept as they were for a person to read; an existing name is never overwritten.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
        n += 1
    os.rename(path, target)
    return target
