"""What the host uplink asks of host sockets beyond send and receive: the ICMP errors the host
got for what a socket sent (``IP_RECVERR``), and the address a socket uses, for ``show``."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Final

IP_RECVERR: Final = 11  # <linux/in.h>
SO_EE_ORIGIN_ICMP: Final = 2  # <linux/errqueue.h>
#: struct sock_extended_err: errno, origin, type, code, pad, info, data; the offender follows
EXT_ERR: Final = struct.Struct("=IBBBBII")
#: A failed connect or send -> the ICMP destination-unreachable code a guest gets for it.
UNREACHABLE_CODE: Final = {errno.ENETUNREACH: 0, errno.EHOSTUNREACH: 1, errno.ETIMEDOUT: 1,
                           errno.EACCES: 13, errno.EPERM: 13}


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


def read_icmp_error(sock: socket.socket) -> tuple[bytes, tuple[Any, ...], int, int, int,
                                                  str] | None:
    """The next ICMP error on ``sock``'s error queue (IP_RECVERR): (the data sent, its
    destination, type, code, info, the reporting router), or None."""
    try:
        data, ancillary, _, dest = sock.recvmsg(576, 512, socket.MSG_ERRQUEUE)
    except OSError:
        return None
    for level, kind, value in ancillary:
        if level != socket.SOL_IP or kind != IP_RECVERR or len(value) < EXT_ERR.size + 8:
            continue
        _, origin, icmp_type, code, _, info, _ = EXT_ERR.unpack_from(value)
        if origin == SO_EE_ORIGIN_ICMP:
            reporter = socket.inet_ntoa(value[EXT_ERR.size + 4:EXT_ERR.size + 8])
            return data, dest, icmp_type, code, info, reporter
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
