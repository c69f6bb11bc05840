"""The Internet checksum: computed whole (RFC 1071) and updated for a changed field (RFC 1624).

Rule 1: ones' complement arithmetic is arithmetic modulo 0xFFFF, so a run of 16-bit words read
        as one big-endian number is congruent to their sum: one big-integer operation in C
        replaces a Python loop over the words.
Rule 2: an update never recomputes: the checksum moves by the difference of the old and new
        words (RFC 1624 eqn. 3), so a 64 KiB super-frame's NAT costs the same as a small one.
"""

from __future__ import annotations

import struct

_PSEUDO = struct.Struct("!BBH")


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The RFC 1071 Internet checksum of ``data`` (a byte buffer): the inverted 16-bit sum.

    ``initial`` is a partial sum to add in, e.g. a pseudo header: any non-negative integer whose
    16-bit words are to be summed (only its value modulo 0xFFFF, and whether it is 0, matter).

    Why ``int.from_bytes(data) % 0xFFFF`` is the ones'-complement sum: read big-endian, ``data``
    is the number sum(word_i * 2**(16*k_i)), and 2**16 = 0xFFFF + 1 is 1 modulo 0xFFFF, so the
    number is congruent to the plain sum of its 16-bit words.  Ones'-complement addition with
    end-around carry (RFC 1071 section 1) is exactly addition modulo 0xFFFF, with one twist:
    0 and 0xFFFF are both "zero".  A sum of words that are not all zero folds to 0xFFFF ("negative
    zero"), never to 0, so a remainder of 0 is mapped to 0xFFFF unless the input was all zeros.
    An odd length is padded with a zero byte (section 4.1), i.e. the number is shifted by 8 bits.
    One big-integer operation in C replaces a Python loop over 32768 words.
    """
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8
    total += initial
    if total == 0:
        return 0xFFFF  # the sum of nothing but zeros is +0, its complement 0xFFFF
    return 0xFFFF - (total % 0xFFFF or 0xFFFF)


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The RFC 768 / RFC 793 pseudo-header, to prepend when computing an L4 checksum."""
    return src + dst + _PSEUDO.pack(0, proto, length)


def checksum_delta(old: bytes, new: bytes) -> int:
    """The sum of (m' - m) over the 16-bit words m of ``old`` that became m' in ``new`` (even
    lengths, even offsets), modulo 0xFFFF: ones' complement arithmetic, where a number read
    big-endian is congruent to the sum of its words (see ``internet_checksum``)."""
    return (int.from_bytes(new, "big") - int.from_bytes(old, "big")) % 0xFFFF


def adjust_checksum(check: int, delta: int) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with the sum of the ~m + m' given as ``delta``
    (adding ~m is subtracting m).  End-around carries fold the sum back to 16 bits: twice,
    since the first fold of a sum like 0x1FFFF leaves 0x10000 (one fold stored 0xFFFF where
    0xFFFE was due: about one packet in 65536 left with a bad header checksum)."""
    total = (~check & 0xFFFF) + delta
    total = (total & 0xFFFF) + (total >> 16)
    return ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
