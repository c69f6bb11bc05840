"""DHCPv4 messages (RFC 2131 section 2, figure 1) and their options (RFC 2132).

Rule 1: ``decode_message`` returns a ``DhcpMessage`` or raises ``MalformedPacket``; no other
        exception escapes it, whatever the bytes.
Rule 2: options keep their order.  An option that appears more than once is one long option
        split in pieces and its values are concatenated (RFC 3396 section 5); ``encode_message``
        splits values above 255 bytes the same way, so every decoded message re-encodes.
Rule 3: option overload (52) is honoured on decode (RFC 2132 section 9.3, RFC 3396 section 5):
        options carried in ``file`` and then ``sname`` are merged into ``options``, option 52
        itself is consumed and those two fields come back empty.  The encoder never overloads.
Rule 4: options the server reads have their sizes checked at decode (``OPTION_SIZES``), so the
        typed accessors of a decoded message cannot fail.

Addresses are 4-byte ``bytes`` as on the wire; ``chaddr`` is the ``hlen`` meaningful bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from wire.errors import MalformedPacket


class Op(IntEnum):
    """The ``op`` field (RFC 2131 section 2)."""

    BOOTREQUEST = 1
    BOOTREPLY = 2


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 section 9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Option(IntEnum):
    """The option codes this package reads or writes (RFC 2132)."""

    PAD = 0
    SUBNET_MASK = 1  # 3.3
    ROUTER = 3  # 3.5
    DNS_SERVERS = 6  # 3.8
    HOSTNAME = 12  # 3.14
    DOMAIN_NAME = 15  # 3.17
    MTU = 26  # 5.1 (interface MTU)
    BROADCAST = 28  # 5.3
    REQUESTED_IP = 50  # 9.1
    LEASE_TIME = 51  # 9.2
    OVERLOAD = 52  # 9.3
    MESSAGE_TYPE = 53  # 9.6
    SERVER_ID = 54  # 9.7
    PARAMETER_REQUEST_LIST = 55  # 9.8
    MESSAGE = 56  # 9.9
    MAX_MESSAGE_SIZE = 57  # 9.10
    RENEWAL_TIME = 58  # 9.11 (T1)
    REBINDING_TIME = 59  # 9.12 (T2)
    CLIENT_ID = 61  # 9.14
    END = 255


#: op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file.
HEADER: Final = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
MAGIC_COOKIE: Final = bytes((99, 130, 83, 99))  # RFC 2131 section 3, RFC 2132 section 2
OPTIONS_OFFSET: Final = HEADER.size + len(MAGIC_COOKIE)  # 240
#: BOOTP clients expect a 300-byte message (RFC 951: 64-byte vendor area; RFC 1542 section 3.1.1).
MIN_LENGTH: Final = 300
BROADCAST_FLAG: Final = 0x8000  # RFC 2131 section 2, figure 2
ZERO_IP: Final = bytes(4)
_SNAME: Final = slice(44, 108)
_FILE: Final = slice(108, 236)

#: (minimum, maximum) value length of options the server reads; others are not checked.
OPTION_SIZES: Final[dict[int, tuple[int, int]]] = {
    Option.MESSAGE_TYPE: (1, 1),
    Option.REQUESTED_IP: (4, 4),
    Option.SERVER_ID: (4, 4),
    Option.LEASE_TIME: (4, 4),
    Option.MAX_MESSAGE_SIZE: (2, 2),
    Option.OVERLOAD: (1, 1),
    Option.CLIENT_ID: (2, 0xFFFF),  # 9.14: "minimum length is 2"
}
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """One DHCP message, fields in wire order (RFC 2131 section 2, table 1)."""

    op: int
    """1 BOOTREQUEST (client to server) or 2 BOOTREPLY."""
    xid: int
    """Transaction id chosen by the client, echoed in replies."""
    chaddr: bytes
    """Client hardware address: the ``hlen`` meaningful bytes (6 for Ethernet)."""
    htype: int = 1
    """Hardware address type (1 = Ethernet, RFC 1700 ARP hardware types)."""
    hlen: int = 6
    """Hardware address length, 0..16; must equal ``len(chaddr)``."""
    hops: int = 0
    """Relay agent hop count."""
    secs: int = 0
    """Seconds since the client began acquisition or renewal."""
    flags: int = 0
    """Bit 15 is the BROADCAST flag (``BROADCAST_FLAG``); the rest must be zero."""
    ciaddr: bytes = ZERO_IP
    """Client address, set only in BOUND, RENEWING, REBINDING and for INFORM."""
    yiaddr: bytes = ZERO_IP
    """'Your' address: the address a reply offers or confirms."""
    siaddr: bytes = ZERO_IP
    """Next server in the boot process (TFTP); zero here."""
    giaddr: bytes = ZERO_IP
    """Relay agent address, zero when client and server share the link."""
    sname: bytes = b""
    """Server host name, up to 64 bytes, NUL padding removed."""
    file: bytes = b""
    """Boot file name, up to 128 bytes, NUL padding removed."""
    options: dict[int, bytes] = field(default_factory=dict)
    """Option code to value, in message order; PAD and END are not included."""

    @property
    def broadcast(self) -> bool:
        """The client asked for broadcast replies (it cannot take unicast before configuring)."""
        return bool(self.flags & BROADCAST_FLAG)

    def message_type(self) -> int | None:
        """Option 53 (RFC 2132 9.6), or None for a plain BOOTP message."""
        value = _checked(self.options, Option.MESSAGE_TYPE)
        return None if value is None else value[0]

    def requested_ip(self) -> bytes | None:
        """Option 50 (RFC 2132 9.1): the address the client asks for."""
        return _checked(self.options, Option.REQUESTED_IP)

    def server_id(self) -> bytes | None:
        """Option 54 (RFC 2132 9.7): which server the client talks to."""
        return _checked(self.options, Option.SERVER_ID)

    def lease_time(self) -> int | None:
        """Option 51 (RFC 2132 9.2) in seconds."""
        value = _checked(self.options, Option.LEASE_TIME)
        return None if value is None else int(_U32.unpack(value)[0])

    def parameter_request_list(self) -> bytes | None:
        """Option 55 (RFC 2132 9.8): option codes wanted, most preferred first."""
        return self.options.get(Option.PARAMETER_REQUEST_LIST)

    def hostname(self) -> bytes | None:
        """Option 12 (RFC 2132 3.14), trailing NULs of sloppy clients removed; None if empty."""
        value = self.options.get(Option.HOSTNAME, b"").rstrip(b"\0")
        return value or None

    def client_id(self) -> bytes | None:
        """Option 61 (RFC 2132 9.14): type byte then identifier (type 1 = Ethernet MAC)."""
        return _checked(self.options, Option.CLIENT_ID)

    def max_message_size(self) -> int | None:
        """Option 57 (RFC 2132 9.10): the largest DHCP message (with IP and UDP headers)."""
        value = _checked(self.options, Option.MAX_MESSAGE_SIZE)
        return None if value is None else int(_U16.unpack(value)[0])


def _checked(options: dict[int, bytes], code: int) -> bytes | None:
    value = options.get(code)
    if value is not None:
        low, high = OPTION_SIZES[code]
        if not low <= len(value) <= high:
            raise MalformedPacket(f"option {code} has length {len(value)}, want {low}..{high}")
    return value


def decode_message(data: bytes) -> DhcpMessage:
    """Parse a DHCP message (the UDP payload).

    1. Check the fixed header and magic cookie fit and are sane (RFC 2131 section 2, 3).
    2. Read the options field up to END; it must have an END unless option 52 moves the rest.
    3. Option overload (RFC 2132 9.3): read ``file`` then ``sname`` as options (Rule 3).
    4. Check the sizes of the options the server reads (Rule 4).
    """
    # Step 1
    if len(data) < OPTIONS_OFFSET:
        raise MalformedPacket(f"DHCP message of {len(data)} bytes, need at least 240")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
     chaddr, sname, file) = HEADER.unpack_from(data)
    if data[HEADER.size:OPTIONS_OFFSET] != MAGIC_COOKIE:
        raise MalformedPacket("bad DHCP magic cookie")
    if hlen > 16:
        raise MalformedPacket(f"hlen {hlen} is larger than chaddr (16)")
    # Step 2
    pieces: dict[int, list[bytes]] = {}
    ended = _read_options(data, OPTIONS_OFFSET, len(data), pieces, "options")
    overload = pieces.pop(Option.OVERLOAD, None)
    if not ended and overload is None:
        raise MalformedPacket("options field has no END option")
    # Step 3
    if overload is not None:
        value = b"".join(overload)
        if len(value) != 1 or value[0] not in (1, 2, 3):
            raise MalformedPacket(f"option overload value {value.hex()} is not 1, 2 or 3")
        if value[0] & 1:
            _read_options(data, _FILE.start, _FILE.stop, pieces, "file")
            file = b""
        if value[0] & 2:
            _read_options(data, _SNAME.start, _SNAME.stop, pieces, "sname")
            sname = b""
        if Option.OVERLOAD in pieces:
            raise MalformedPacket("option overload inside an overloaded field")
    options = {code: b"".join(parts) for code, parts in pieces.items()}
    msg = DhcpMessage(
        op=op, htype=htype, hlen=hlen, hops=hops, xid=xid, secs=secs, flags=flags,
        ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr, giaddr=giaddr, chaddr=chaddr[:hlen],
        sname=sname.split(b"\0", 1)[0], file=file.split(b"\0", 1)[0], options=options,
    )
    # Step 4
    for code in OPTION_SIZES:
        _checked(options, code)
    return msg


def _read_options(data: bytes, start: int, stop: int, into: dict[int, list[bytes]],
                  where: str) -> bool:
    """Collect code/length/value options from ``data[start:stop]``; True if END was reached."""
    i = start
    while i < stop:
        code = data[i]
        if code == Option.PAD:
            i += 1
            continue
        if code == Option.END:
            return True
        if i + 1 >= stop:
            raise MalformedPacket(f"option {code} in {where} has no length byte")
        end = i + 2 + data[i + 1]
        if end > stop:
            raise MalformedPacket(f"option {code} in {where} overruns the field by {end - stop}")
        into.setdefault(code, []).append(data[i + 2:end])
        i = end
    return False


def encode_message(msg: DhcpMessage) -> bytes:
    """The wire form of ``msg``: header, cookie, options in order, END, padded to 300 bytes.

    Raises ValueError for a message no decoder would accept back (wrong field sizes).
    """
    if not 0 <= msg.hlen <= 16 or len(msg.chaddr) != msg.hlen:
        raise ValueError(f"chaddr has {len(msg.chaddr)} bytes, hlen says {msg.hlen}")
    for name in ("ciaddr", "yiaddr", "siaddr", "giaddr"):
        if len(getattr(msg, name)) != 4:
            raise ValueError(f"{name} must be 4 bytes")
    if len(msg.sname) > 64 or len(msg.file) > 128:
        raise ValueError("sname is limited to 64 bytes and file to 128")
    parts = [HEADER.pack(msg.op, msg.htype, msg.hlen, msg.hops, msg.xid, msg.secs, msg.flags,
                         msg.ciaddr, msg.yiaddr, msg.siaddr, msg.giaddr, msg.chaddr,
                         msg.sname, msg.file), MAGIC_COOKIE]
    for code, value in msg.options.items():
        if code in (Option.PAD, Option.END) or not 0 < code < 255:
            raise ValueError(f"option code {code} cannot carry a value")
        parts.extend(encode_option(code, value))
    parts.append(bytes((Option.END,)))
    out = b"".join(parts)
    return out + bytes(MIN_LENGTH - len(out)) if len(out) < MIN_LENGTH else out


def encode_option(code: int, value: bytes) -> list[bytes]:
    """One option as code, length, value; a value above 255 bytes is split (RFC 3396 section 5)."""
    if not value:
        return [bytes((code, 0))]
    return [bytes((code, len(value[i:i + 255]))) + value[i:i + 255]
            for i in range(0, len(value), 255)]


def encode_u32(value: int) -> bytes:
    """A 32-bit option value (lease time, T1, T2)."""
    return _U32.pack(value)


def encode_u16(value: int) -> bytes:
    """A 16-bit option value (MTU, maximum message size)."""
    return _U16.pack(value)
