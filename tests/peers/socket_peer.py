"""A stand-in for qemu's stream/dgram netdev: relays a TAP to a vswitch unix socket.

    python -m tests.peers.socket_peer stream|dgram SOCKET TAPNAME NETNS

It opens TAP ``TAPNAME`` (plain, no virtio-net header, as qemu's stream/dgram backends carry
none), moves it into ``NETNS`` and relays frames both ways, speaking qemu's framing: for stream,
a 4-byte big-endian length before each frame; for dgram, one frame per datagram, sent with
``sendto`` from a bound, unconnected socket, as qemu's net/dgram.c does.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys

import pytun

from vswitch.ports.stream import StreamDecoder, encode_frame


def main() -> int:
    mode, path, tapname, netns = sys.argv[1:5]
    tap = pytun.TunTapDevice(name=tapname, flags=pytun.IFF_TAP | pytun.IFF_NO_PI)
    subprocess.run(["ip", "link", "set", tapname, "netns", netns], check=True)
    if mode == "stream":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path + ".peer")
    decoder = StreamDecoder()
    sel = selectors.DefaultSelector()
    sel.register(tap.fileno(), selectors.EVENT_READ, "tap")
    sel.register(sock, selectors.EVENT_READ, "sock")
    print("relaying", flush=True)
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "tap":
                    frame = os.read(tap.fileno(), 65536)
                    if mode == "stream":
                        sock.sendall(encode_frame(frame))
                    else:
                        sock.sendto(frame, path)
                else:
                    data = sock.recv(262144)
                    if not data:
                        return 0
                    frames = decoder.feed(data) if mode == "stream" else [data]
                    for frame in frames:
                        os.write(tap.fileno(), frame)
    finally:
        if mode == "dgram":
            os.unlink(path + ".peer")


if __name__ == "__main__":
    sys.exit(main())
