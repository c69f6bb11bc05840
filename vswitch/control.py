"""The control socket: JSON lines over a unix socket, and its client.

Request:  {"cmd": "show", "what": "ports"}            one JSON object per line
Reply:    {"ok": true, "result": ...} or {"ok": false, "error": "..."}

Who may ask what (``allowed``, from the peer's ``SO_PEERCRED`` and ``SO_PEERGROUPS``, read
once per connection):

Rule 1: requests that only read (READ_ONLY: ``show``, ``trace``, ``capture``, ``explain``,
        ``ping``; ``top`` polls ``show``) need root, the daemon's user (its owner), or
        membership in the socket's group (``[switch] socket_group``).
Rule 2: every other request changes the switch (``forward add|del|remove``, and any command
        added later unless it is put in READ_ONLY) and needs root or the owner.
Rule 3: the socket file is the owner's, mode 0600; with a socket group it is that group's,
        mode 0660.  The file mode keeps others out; the credentials check says why.

The server side is control plane (asyncio streams are fine here); the datapath never waits on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST = 65536
#: Rule 1: the requests that only read.
READ_ONLY = frozenset({"show", "trace", "capture", "explain", "ping"})
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


def allowed(uid: int, gids: Collection[int], cmd: str, owner: int,
            group: int | None) -> tuple[bool, str]:
    """Rules 1-2: whether a peer with ``uid`` and groups ``gids`` may send ``cmd`` to a
    daemon run by ``owner`` whose socket belongs to ``group``; and why not."""
    if uid in (0, owner):
        return True, ""
    if cmd in READ_ONLY:
        if group is not None and group in gids:
            return True, ""
        return False, (f"{cmd!r} needs root, the daemon's user ({_user(owner)}) or the group "
                       + (f"{_group(group)} (the control socket's)" if group is not None else
                          "set as [switch] socket_group (none is)")
                       + f"; you are {_user(uid)}")
    return False, (f"{cmd!r} changes the switch: it needs root or the daemon's user "
                   f"({_user(owner)}); you are {_user(uid)}")


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} ({uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    import grp

    try:
        return f"{grp.getgrgid(gid).gr_name} ({gid})"
    except KeyError:
        return f"gid {gid}"


def peer_credentials(sock: socket.socket) -> tuple[int, frozenset[int]]:
    """The peer's uid and groups (its gid and supplementary groups) as the kernel saw them
    when it connected (``SO_PEERCRED``, ``SO_PEERGROUPS``)."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET,
                                                        socket.SO_PEERCRED, 12))
    groups: tuple[int, ...] = ()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)  # Python's limit
        groups = struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4])
    except OSError:  # more than 256 groups (or an old kernel): the peer's status, if it is
        try:  # still there, else its primary group alone
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Groups:"):
                    groups = tuple(int(g) for g in line.split()[1:])
        except (OSError, ValueError):
            pass
    return uid, frozenset((gid, *groups))


class ControlError(Exception):
    """A request the daemon refused; the message goes back to the client."""


class Stream:
    """A handler's answer that streams: after the ``ok`` line carrying ``header``, one JSON
    line per record the session queues, and a ``{"dropped": N}`` line when records were lost
    (vswitch.observe Rule 2), until the client goes away; then ``close`` runs."""

    #: A client this far behind (bytes unsent) gets no more records until it catches up.
    BEHIND = 1 << 20

    def __init__(self, session: Any, close: Callable[[], None], header: Any) -> None:
        self.session = session
        self.close = close
        self.header = header

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = self.session
        gone = asyncio.ensure_future(reader.read(1))  # EOF (or anything) ends the stream
        reported = 0
        try:
            while not gone.done():
                waiter = asyncio.ensure_future(session.wake.wait())
                await asyncio.wait({gone, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                session.wake.clear()
                lines = []
                while session.queue:
                    lines.append(json.dumps(session.take()))
                if session.dropped != reported:
                    reported = session.dropped
                    lines.append(json.dumps({"dropped": reported}))
                if lines:
                    writer.write(("\n".join(lines) + "\n").encode())
                if writer.transport.get_write_buffer_size() > self.BEHIND:
                    await writer.drain()  # the session's queue bounds what waits meanwhile
        finally:
            gone.cancel()
            self.close()


class ControlServer:
    def __init__(self, path: str, handlers: dict[str, Handler], owner: int | None = None,
                 group: int | None = None) -> None:
        """``owner``: the daemon's user (default: who runs it now; the user it will change
        to, when it drops root); ``group``: the socket's group (Rules 1-3)."""
        self.path = path
        self.handlers = handlers
        self.owner = os.geteuid() if owner is None else owner
        self.group = group
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if Path(self.path).is_socket():
            os.unlink(self.path)
        old = os.umask(0o177)  # created 0600: only the owner may steer the switch
        try:
            self.server = await asyncio.start_unix_server(self._serve, self.path,
                                                          limit=MAX_REQUEST)
        finally:
            os.umask(old)
        try:
            if os.geteuid() == 0:  # Rule 3: the owner's (the user root changes to), group's
                os.chown(self.path, self.owner, -1 if self.group is None else self.group)
            elif self.group is not None:
                os.chown(self.path, -1, self.group)  # a group its user must be in
        except PermissionError:
            self.close()
            raise SystemExit(f"vswitch: switch.socket_group: {_group(self.group or 0)} is not "
                             f"a group of {_user(os.geteuid())}, which runs vswitch") from None
        if self.group is not None:
            os.chmod(self.path, 0o660)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid, gids = peer_credentials(writer.get_extra_info("socket"))
            while line := await reader.readline():
                reply = self.handle_line(line, uid, gids)
                stream = reply.get("result")
                if isinstance(stream, Stream):
                    writer.write(json.dumps({"ok": True, "result": stream.header}).encode()
                                 + b"\n")
                    await stream.run(reader, writer)
                    break
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, RuntimeError):
            pass
        except asyncio.CancelledError:  # the daemon stops with a client attached: the task
            pass  # ends here (asyncio's stream callback logs a cancelled task as an error)
        finally:
            writer.close()

    def handle_line(self, line: bytes, uid: int = 0,
                    gids: Collection[int] = ()) -> dict[str, Any]:
        """One request from a peer with ``uid`` and groups ``gids`` (Rules 1-2)."""
        try:
            try:
                request = json.loads(line)
            except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
                raise ControlError(str(exc)) from None  # the client's error, not an internal one
            if not isinstance(request, dict):
                raise ControlError("a request is a JSON object")
            handler = self.handlers.get(str(request.get("cmd")))
            if handler is None:
                raise ControlError(f"unknown command {request.get('cmd')!r}; known: "
                                   + ", ".join(sorted(self.handlers)))
            ok, why = allowed(uid, gids, str(request["cmd"]), self.owner, self.group)
            if not ok:
                raise ControlError(f"permission denied: {why}")
            return {"ok": True, "result": handler(request)}
        except (ControlError, json.JSONDecodeError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in a handler must not take the control socket down
            logging.getLogger("vswitch").exception("control request %r failed", line[:200])
            return {"ok": False, "error": f"internal error: {exc!r}"}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        try:
            Path(self.path).unlink(missing_ok=True)
        except PermissionError:  # root's directory, and the daemon dropped root: the next
            pass  # start removes it (an unanswered socket reads as "no vswitch is listening")


def _who_may(path: str) -> str:
    """Who the socket file (Rule 3) lets in, in words, for a refused connect."""
    try:
        st = os.stat(path)
    except OSError:
        return "its directory is closed to you"
    if st.st_mode & 0o060 == 0o060:
        return (f"it needs root, the daemon's user ({_user(st.st_uid)}) or the group "
                f"{_group(st.st_gid)}")
    return f"it needs root or the daemon's user ({_user(st.st_uid)})"


def _send(sock: socket.socket, path: str, cmd: str, args: dict[str, Any]) -> None:
    """Connect to the daemon at ``path`` and send one request."""
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"no vswitch is listening on {path} ({exc.strerror}); "
                           "start one with `vswitch run`, or pass --socket") from exc
    except PermissionError as exc:
        raise ControlError(f"permission denied on {path}: {_who_may(path)}; you are "
                           f"{_user(os.geteuid())}") from exc
    sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")


def request(path: str, cmd: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send one request to a running daemon and return its result (raises ControlError)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        _send(sock, path, cmd, args)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "request failed"))
    return reply["result"]


def stream(path: str, cmd: str, **args: Any) -> Iterator[dict[str, Any]]:
    """Send one streaming request (``trace``, ``capture``) and yield its records until the
    daemon goes away; the first yielded record is the header (raises ControlError)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        _send(sock, path, cmd, args)
        reader = sock.makefile("rb")
        first = reader.readline()
        if not first:
            raise ControlError("the daemon closed the connection")
        reply = json.loads(first)
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "request failed"))
        yield reply["result"]
        for line in reader:
            yield json.loads(line)
