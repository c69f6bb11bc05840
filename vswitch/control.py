"""The control socket: JSON lines over a unix socket (mode 0600), and its client.

Request:  {"cmd": "show", "what": "ports"}            one JSON object per line
Reply:    {"ok": true, "result": ...} or {"ok": false, "error": "..."}

The server side is control plane (asyncio streams are fine here); the datapath never waits on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST = 65536


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
    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = self.handle_line(line)
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

    def handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ControlError("a request is a JSON object")
            handler = self.handlers.get(str(request.get("cmd")))
            if handler is None:
                raise ControlError(f"unknown command {request.get('cmd')!r}; known: "
                                   + ", ".join(sorted(self.handlers)))
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
        Path(self.path).unlink(missing_ok=True)


def _send(sock: socket.socket, path: str, cmd: str, args: dict[str, Any]) -> None:
    """Connect to the daemon at ``path`` and send one request."""
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"no vswitch is listening on {path} ({exc.strerror}); "
                           "start one with `vswitch run`, or pass --socket") from exc
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
