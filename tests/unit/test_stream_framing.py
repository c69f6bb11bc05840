"""qemu's stream framing: a 4-byte big-endian length before each frame."""

import random

import pytest

from vswitch.ports.stream import MAX_FRAME, StreamDecoder, encode_frame
from wire.errors import MalformedPacket


def test_round_trip_in_any_chunking():
    rng = random.Random(3)
    frames = [rng.randbytes(rng.randrange(14, 1515)) for _ in range(200)]
    wire = b"".join(encode_frame(f) for f in frames)
    for _ in range(20):
        decoder, out, pos = StreamDecoder(), [], 0
        while pos < len(wire):
            step = rng.choice((1, 3, 7, 100, 4096))
            out += decoder.feed(wire[pos:pos + step])
            pos += step
        assert out == frames
        assert decoder.pending == 0


def test_partial_frame_waits_for_the_rest():
    decoder = StreamDecoder()
    wire = encode_frame(b"x" * 60)
    assert decoder.feed(wire[:30]) == []
    assert decoder.pending == 30
    assert decoder.feed(wire[30:]) == [b"x" * 60]


@pytest.mark.parametrize("length", [0, 13, MAX_FRAME + 1, 0xFFFFFFFF])
def test_impossible_lengths_are_protocol_errors(length):
    with pytest.raises(MalformedPacket):
        StreamDecoder().feed(length.to_bytes(4, "big") + bytes(20))
