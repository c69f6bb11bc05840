"""What the host uplink asks of host sockets beyond send and receive: the ICMP and ICMPv6
errors the host got for what a socket sent (``IP_RECVERR``, ``IPV6_RECVERR``), and the address
a socket uses, for ``show``."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable
from typing import Any, Final

BATCH: Final = 64  # error-queue reads in one call, as the adapters' reads in one wakeup
IP_RECVERR: Final = 11  # <linux/in.h>
IPV6_RECVERR: Final = 25  # <linux/in6.h>
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3  # <linux/errqueue.h>
#: struct sock_extended_err: errno, origin, type, code, pad, info, data; the offender follows
EXT_ERR: Final = struct.Struct("=IBBBBII")
#: The control message an ICMP error comes in, by (level, type): the origin it has, and the
#: offender's family, where its address starts in the sockaddr after the struct and its length
#: (sockaddr_in: family, port, address; sockaddr_in6: family, port, flow label, address).
ERROR_MESSAGES: Final = {
    (socket.IPPROTO_IP, IP_RECVERR): (SO_EE_ORIGIN_ICMP, socket.AF_INET, 4, 4),
    (socket.IPPROTO_IPV6, IPV6_RECVERR): (SO_EE_ORIGIN_ICMP6, socket.AF_INET6, 8, 16)}
#: How much of what a socket sent an error's quote is read: as much as an ICMP error carries
#: (576 bytes, RFC 1812 4.3.2.3), an ICMPv6 error (the minimum MTU, RFC 4443 2.4(c)).
QUOTE_READ: Final = {socket.AF_INET: 576, socket.AF_INET6: 1280}
#: A failed connect or send -> the ICMP destination-unreachable code a guest gets for it.
UNREACHABLE_CODE: Final = {errno.ENETUNREACH: 0, errno.EHOSTUNREACH: 1, errno.ETIMEDOUT: 1,
                           errno.EACCES: 13, errno.EPERM: 13}
#: The same for IPv6: no route, address unreachable, administratively prohibited (RFC 4443 3.1).
UNREACHABLE_CODE6: Final = {errno.ENETUNREACH: 0, errno.EHOSTUNREACH: 3, errno.ETIMEDOUT: 3,
                            errno.EACCES: 1, errno.EPERM: 1}


def ask_errors(sock: socket.socket, on: bool = True) -> None:
    """Have the kernel queue the ICMP errors ``sock``'s packets cause (off: drop the queue)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, int(on))
    else:
        sock.setsockopt(socket.SOL_IP, IP_RECVERR, int(on))


def local_address(sock: socket.socket, peer: str | None = None) -> str:
    """``host:port`` (``[host]:port`` for IPv6) a host socket uses, for ``show conntrack``; an
    unbound address is shown as the source the host would use toward ``peer``."""
    try:
        host, port = sock.getsockname()[:2]
        if host in ("0.0.0.0", "::") and peer is not None:
            host = route_source(peer)
    except OSError:
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def route_source(peer: str) -> str:
    """The host's source address toward ``peer`` (a UDP connect sends nothing)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((peer, 9))
        return str(probe.getsockname()[0])
    finally:
        probe.close()


def icmp_error_of(ancillary: Iterable[tuple[int, int, bytes]]) -> tuple[int, int, int,
                                                                          str] | None:
    """The ICMP or ICMPv6 error in the control messages of an error-queue read: (type, code,
    info, the reporting router), or None (a local error, or none at all)."""
    for level, kind, value in ancillary:
        known = ERROR_MESSAGES.get((level, kind))
        if known is None:
            continue
        want, family, at, size = known
        start = EXT_ERR.size + at
        end = start + size
        if len(value) < end:
            continue
        _, origin, icmp_type, code, _, info, _ = EXT_ERR.unpack_from(value)
        if origin == want:
            return icmp_type, code, info, socket.inet_ntop(family, value[start:end])
    return None


def read_icmp_error(sock: socket.socket) -> tuple[bytes, tuple[Any, ...], int, int, int,
                                                  str] | None:
    """The next ICMP or ICMPv6 error on ``sock``'s error queue (``ask_errors``): (the data
    sent, its destination, type, code, info, the reporting router), or None.  Local errors
    before it are passed over (left queued, they would keep the socket readable), at most
    ``BATCH`` reads a call."""
    for _ in range(BATCH):
        try:
            data, ancillary, _, dest = sock.recvmsg(QUOTE_READ.get(sock.family, 576), 512,
                                                    socket.MSG_ERRQUEUE)
        except OSError:
            return None
        error = icmp_error_of(ancillary)
        if error is not None:
            return data, dest, *error
    return None


def open_ping(family: int, proto: int, on_raw: Any, loop: Any) -> tuple[str, socket.socket | None]:
    """How echo leaves for ``family``: "ping-socket" (unprivileged ICMP sockets are allowed;
    one is made per flow), "raw" (a shared raw socket, read by ``on_raw``), or "off"."""
    try:
        socket.socket(family, socket.SOCK_DGRAM, proto).close()
        return "ping-socket", None
    except OSError:
        pass
    try:
        raw = socket.socket(family, socket.SOCK_RAW, proto)
    except OSError:
        return "off", None
    raw.setblocking(False)
    loop.add_reader(raw.fileno(), on_raw)
    return "raw", raw
