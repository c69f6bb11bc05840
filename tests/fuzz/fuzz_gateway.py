"""atheris harness: the gateway's stack (IPv4 and IPv6) never raises on a frame."""

from __future__ import annotations

import random

import atheris
from harness import run

with atheris.instrument_imports():
    from nat.gateway import Gateway
    from nat.gateway6 import Gateway6
    from wire.packets import decode_ethernet

MAC = bytes.fromhex("525400aabb01")
GATEWAY = Gateway(MAC, bytes([192, 168, 122, 1]), 24)
GATEWAY.v6 = Gateway6(MAC, bytes.fromhex("fd42" + "00" * 13 + "01"),
                      bytes.fromhex("fd42" + "00" * 14), 64, rng=random.Random(1))
GATEWAY.udp[53] = lambda mac, src, sport, dst, payload, now: [
    GATEWAY.udp_frame(mac, src, 53, sport, payload)]
NOW = [0.0]


def one_input(data: bytes) -> None:
    NOW[0] += 0.1
    # Most inputs are for the gateway: its MAC or broadcast in front
    frame = (MAC if data[:1] != b"\xff" else b"\xff" * 6) + data
    GATEWAY.explain(frame)
    for sent in GATEWAY.handle(frame, NOW[0]) + GATEWAY.v6.tick(NOW[0]):
        assert decode_ethernet(sent).src == MAC


if __name__ == "__main__":
    run(one_input)
