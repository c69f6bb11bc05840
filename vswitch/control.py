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
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST = 65536


class ControlError(Exception):
    """A request the daemon refused; the message goes back to the client."""


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
                writer.write(json.dumps(self.handle_line(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
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


def request(path: str, cmd: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send one request to a running daemon and return its result (raises ControlError)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(f"no vswitch is listening on {path} ({exc.strerror}); "
                               "start one with `vswitch run`, or pass --socket") from exc
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
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
