"""DNS messages on the wire (RFC 1035 4.1), EDNS0 (RFC 6891) and TCP framing (RFC 1035 4.2.2).

Rule 1: a name is a tuple of labels (``bytes``, original case, no empty root label).  Each label is
        1..63 octets and the name at most 255 octets in wire form (RFC 1035 2.3.4, 3.1).
Rule 2: a compression pointer (RFC 1035 4.1.4) must point strictly before the place the previous
        jump landed (at first: the start of the name being read).  Targets therefore strictly
        decrease, which rejects pointers to themselves, forward pointers and cycles (dnspython's
        ``Parser.get_name`` rule); a name takes at most ``MAX_POINTER_HOPS`` jumps.
Rule 3: the header counts must match the data exactly: a section running past the end, or bytes left
        after the last section, is ``MalformedPacket`` (dnspython's ``TrailingJunk``).
Rule 4: names inside the RDATA of the types in ``RDATA_LAYOUTS`` are decompressed on decode (RFC
        3597 4), so a decoded record stands alone and re-encodes anywhere; other RDATA is opaque.
Rule 5: the encoder compresses question and owner names against earlier ones (exact case) and never
        compresses inside RDATA.  The OPT record is written last in the additional section.
Rule 6: with ``max_size``, questions and OPT are always kept and records go by whole RRsets (same
        name in any case, type and class; each section's RRsets in the order their first record
        came): answer and authority RRsets go while they fit, and the first that does not fit is
        dropped with everything after it and TC set (RFC 1035 4.2.1; RFC 2181 9: never a partial
        RRset, so a client never caches one as the whole).  Additional RRsets that do not fit are
        dropped without TC (RFC 2181 9: TC only when required data is missing).

Every decode failure is ``MalformedPacket`` (wire/errors.py); invalid input to an encoder (a
label of 64 octets, an ID above 65535) is a programming error and raises plain ``ValueError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from wire.errors import MalformedPacket

Name = tuple[bytes, ...]

TYPE_A: Final = 1
TYPE_NS: Final = 2
TYPE_CNAME: Final = 5
TYPE_SOA: Final = 6
TYPE_PTR: Final = 12
TYPE_MX: Final = 15
TYPE_TXT: Final = 16
TYPE_AAAA: Final = 28
TYPE_SRV: Final = 33
TYPE_OPT: Final = 41
TYPE_ANY: Final = 255
CLASS_IN: Final = 1

OPCODE_QUERY: Final = 0
RCODE_NOERROR: Final = 0
RCODE_FORMERR: Final = 1
RCODE_SERVFAIL: Final = 2
RCODE_NXDOMAIN: Final = 3
RCODE_NOTIMP: Final = 4
RCODE_REFUSED: Final = 5

HEADER_SIZE: Final = 12
MAX_LABEL: Final = 63
MAX_NAME: Final = 255
MAX_POINTER_HOPS: Final = 64
#: RFC 1035 4.2.1: without EDNS0 a UDP message is at most 512 octets.
UDP_PAYLOAD_MIN: Final = 512

_HEADER = struct.Struct("!HHHHHH")
_QUESTION = struct.Struct("!HH")
_RR = struct.Struct("!HHIH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# Header flag bits (RFC 1035 4.1.1; AD and CD from RFC 4035 3.2).
_QR, _AA, _TC, _RD, _RA, _AD, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010

#: RDATA holding names (Rule 4), field by field: an int is that many fixed octets, "N" a domain
#: name, "S" a <character-string> (RFC 1035 3.3; RFC 3597 4 lists the types to decompress).
RDATA_LAYOUTS: Final[dict[int, tuple[int | str, ...]]] = {
    TYPE_NS: ("N",), 3: ("N",), 4: ("N",), TYPE_CNAME: ("N",), 7: ("N",), 8: ("N",), 9: ("N",),
    TYPE_PTR: ("N",), TYPE_SOA: ("N", "N", 20), 14: ("N", "N"), TYPE_MX: (2, "N"),
    17: ("N", "N"), 18: (2, "N"), 21: (2, "N"), 26: (2, "N", "N"), TYPE_SRV: (6, "N"),
    35: (4, "S", "S", "S", "N"),
}
#: RDATA whose length is fixed by its type.
RDATA_SIZES: Final[dict[int, int]] = {TYPE_A: 4, TYPE_AAAA: 16}


@dataclass(frozen=True, slots=True)
class Question:
    """One entry of the question section (RFC 1035 4.1.2)."""

    name: Name
    """The name asked about, labels in the case the asker wrote them."""
    qtype: int
    """What is asked for: TYPE_A, TYPE_PTR, ... (RFC 1035 3.2.2, 3.2.3)."""
    qclass: int = CLASS_IN
    """The class, nearly always CLASS_IN."""


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """One resource record of the answer, authority or additional section (RFC 1035 4.1.3)."""

    name: Name
    """The owner name."""
    rtype: int
    """The record type (TYPE_A, TYPE_OPT, ...)."""
    rclass: int
    """The class; for OPT, the sender's UDP payload size (RFC 6891 6.1.2)."""
    ttl: int
    """Seconds the record may be cached; for OPT, extended RCODE, version and flags (DO)."""
    rdata: bytes
    """The record data, with any names in it decompressed (Rule 4)."""


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """A whole DNS message: header fields and the four sections (RFC 1035 4.1)."""

    id: int
    """The 16-bit query identifier, copied into the response."""
    qr: bool = False
    """True for a response, False for a query."""
    opcode: int = OPCODE_QUERY
    """The kind of query (0 = standard QUERY)."""
    aa: bool = False
    """Authoritative answer: the responder owns the names answered."""
    tc: bool = False
    """Truncated: records were left out; ask again over TCP."""
    rd: bool = True
    """Recursion desired (set by the asker, copied into the response)."""
    ra: bool = False
    """Recursion available (set by the responder)."""
    rcode: int = RCODE_NOERROR
    """Response code, low 4 bits (the OPT record holds the high 8 bits)."""
    ad: bool = False
    """Authentic data (RFC 4035 3.2.3)."""
    cd: bool = False
    """Checking disabled (RFC 4035 3.2.2)."""
    questions: tuple[Question, ...] = ()
    """The question section (one entry in practice)."""
    answers: tuple[ResourceRecord, ...] = ()
    """The answer section."""
    authority: tuple[ResourceRecord, ...] = ()
    """The authority section (an SOA here makes a negative answer cacheable, RFC 2308 5)."""
    additional: tuple[ResourceRecord, ...] = ()
    """The additional section, including the EDNS0 OPT record if any."""

    @property
    def opt(self) -> ResourceRecord | None:
        """The EDNS0 OPT record (RFC 6891 6.1.1), if present."""
        return next((r for r in self.additional if r.rtype == TYPE_OPT), None)

    @property
    def edns_payload(self) -> int | None:
        """The UDP payload size the sender can receive, or None without EDNS0.

        Values below 512 are treated as 512 (RFC 6891 6.2.5).
        """
        opt = self.opt
        return None if opt is None else max(UDP_PAYLOAD_MIN, opt.rclass)

    @property
    def edns_version(self) -> int | None:
        """The EDNS version of the OPT record (RFC 6891 6.1.3), or None without EDNS0."""
        opt = self.opt
        return None if opt is None else (opt.ttl >> 16) & 0xFF

    @property
    def dnssec_ok(self) -> bool:
        """The DO bit of the OPT record (RFC 3225 3)."""
        opt = self.opt
        return opt is not None and bool(opt.ttl & 0x8000)


# --- decoding -------------------------------------------------------------------------------------


def _read_name(data: bytes, pos: int, end: int) -> tuple[Name, int]:
    """Read a possibly compressed name at ``pos``; return it and the offset just after it.

    1. Read length octets: 0 ends the name, 1..63 is a label, 0b11 prefix is a pointer, the rest
       (0b01, 0b10: RFC 6891 5 retired them) is malformed.
    2. A pointer must land strictly before the previous landing place (Rule 2); jump there.
    3. Keep the wire length within 255 octets and the label within 63 (Rule 1).
    """
    labels: list[bytes] = []
    size = 1  # the root label
    after: int | None = None  # where reading continues after the first pointer
    floor = pos  # pointers must land below this
    hops = 0
    while True:
        # Step 1
        if pos >= end:
            raise MalformedPacket("name runs past the end")
        length = data[pos]
        if length == 0:
            return tuple(labels), pos + 1 if after is None else after
        if length >= 0xC0:
            # Step 2
            if pos + 2 > end:
                raise MalformedPacket("truncated compression pointer")
            target = _U16.unpack_from(data, pos)[0] & 0x3FFF
            hops += 1
            if target >= floor or hops > MAX_POINTER_HOPS:
                raise MalformedPacket("compression pointer does not point backwards")
            if after is None:
                after = pos + 2
            floor = pos = target
            end = len(data)
            continue
        if length > MAX_LABEL:
            raise MalformedPacket(f"unknown label type {length:#04x}")
        # Step 3
        size += length + 1
        if size > MAX_NAME:
            raise MalformedPacket("name longer than 255 octets")
        if pos + 1 + length > end:
            raise MalformedPacket("label runs past the end")
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length


def _read_rdata(data: bytes, pos: int, end: int, rtype: int) -> bytes:
    """The RDATA at ``data[pos:end]``, with names decompressed for the types of Rule 4."""
    layout = RDATA_LAYOUTS.get(rtype)
    if layout is None:
        size = RDATA_SIZES.get(rtype)
        if size is not None and end - pos != size:
            raise MalformedPacket(f"type {rtype} RDATA of {end - pos} octets, not {size}")
        return data[pos:end]
    out = bytearray()
    for part in layout:
        if part == "N":
            name, pos = _read_name(data, pos, end)
            _write_name(out, name, None)
            continue
        size = part if isinstance(part, int) else data[pos] + 1 if pos < end else 1
        if pos + size > end:
            raise MalformedPacket(f"type {rtype} RDATA runs past its length")
        out += data[pos : pos + size]
        pos += size
    if pos != end:
        raise MalformedPacket(f"type {rtype} RDATA has {end - pos} extra octets")
    return bytes(out)


def _read_records(data: bytes, pos: int, count: int) -> tuple[tuple[ResourceRecord, ...], int]:
    records = []
    for _ in range(count):
        name, pos = _read_name(data, pos, len(data))
        if pos + _RR.size > len(data):
            raise MalformedPacket("truncated resource record")
        rtype, rclass, ttl, rdlength = _RR.unpack_from(data, pos)
        pos += _RR.size
        if pos + rdlength > len(data):
            raise MalformedPacket("RDATA runs past the end")
        rdata = _read_rdata(data, pos, pos + rdlength, rtype)
        records.append(ResourceRecord(name, rtype, rclass, ttl, rdata))
        pos += rdlength
    return tuple(records), pos


def decode_message(data: bytes) -> DnsMessage:
    """Parse one DNS message (RFC 1035 4.1); raise MalformedPacket on any inconsistency.

    1. The 12-octet header: ID, flags, four counts (4.1.1).
    2. ``qdcount`` questions (4.1.2), then ``ancount``, ``nscount``, ``arcount`` records (4.1.3).
    3. Nothing may follow the last record (Rule 3); at most one OPT, owned by the root (RFC 6891
       6.1.1).
    """
    data = bytes(data)
    # Step 1
    if len(data) < HEADER_SIZE:
        raise MalformedPacket(f"DNS header needs 12 octets, got {len(data)}")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    # Step 2
    pos = HEADER_SIZE
    questions = []
    for _ in range(qdcount):
        name, pos = _read_name(data, pos, len(data))
        if pos + _QUESTION.size > len(data):
            raise MalformedPacket("truncated question")
        qtype, qclass = _QUESTION.unpack_from(data, pos)
        pos += _QUESTION.size
        questions.append(Question(name, qtype, qclass))
    answers, pos = _read_records(data, pos, ancount)
    authority, pos = _read_records(data, pos, nscount)
    additional, pos = _read_records(data, pos, arcount)
    # Step 3
    if pos != len(data):
        raise MalformedPacket(f"{len(data) - pos} octets after the last record")
    opts = [r for r in additional if r.rtype == TYPE_OPT]
    if len(opts) > 1 or any(r.name for r in opts):
        raise MalformedPacket("more than one OPT record, or an OPT not owned by the root")
    return DnsMessage(
        id=ident, qr=bool(flags & _QR), opcode=(flags >> 11) & 0xF, aa=bool(flags & _AA),
        tc=bool(flags & _TC), rd=bool(flags & _RD), ra=bool(flags & _RA), rcode=flags & 0xF,
        ad=bool(flags & _AD), cd=bool(flags & _CD), questions=tuple(questions),
        answers=answers, authority=authority, additional=additional,
    )


# --- encoding -------------------------------------------------------------------------------------


def read_name(data: bytes, pos: int = 0) -> Name:
    """The uncompressed name at ``data[pos:]`` (a decoded record's RDATA, Rule 4);
    MalformedPacket if there is none."""
    return _read_name(bytes(data), pos, len(data))[0]


def check_name(name: Name) -> None:
    """Raise ValueError unless ``name`` obeys Rule 1."""
    if any(not 0 < len(label) <= MAX_LABEL for label in name):
        raise ValueError(f"labels must be 1..63 octets: {name!r}")
    if sum(len(label) + 1 for label in name) + 1 > MAX_NAME:
        raise ValueError(f"name longer than 255 octets: {name!r}")


def _write_name(out: bytearray, name: Name, table: dict[Name, int] | None) -> None:
    """Append ``name``; with a table, point to an earlier copy of its longest known suffix."""
    check_name(name)
    for i in range(len(name)):
        if table is not None:
            suffix = name[i:]
            earlier = table.get(suffix)
            if earlier is not None:
                out += _U16.pack(0xC000 | earlier)
                return
            if len(out) < 0x4000:  # a pointer holds 14 bits of offset
                table[suffix] = len(out)
        out.append(len(name[i]))
        out += name[i]
    out.append(0)


def _write_record(out: bytearray, rr: ResourceRecord, table: dict[Name, int]) -> None:
    if len(rr.rdata) > 0xFFFF:
        raise ValueError("RDATA longer than 65535 octets")
    _write_name(out, rr.name, table)
    out += _RR.pack(rr.rtype, rr.rclass, rr.ttl, len(rr.rdata))
    out += rr.rdata


def _append_within(
    out: bytearray, rrset: list[ResourceRecord], table: dict[Name, int], limit: int
) -> bool:
    """Append the whole ``rrset`` if the message stays within ``limit`` octets; else leave
    ``out`` as it was."""
    mark = len(out)
    for rr in rrset:
        _write_record(out, rr, table)
    if len(out) <= limit:
        return True
    del out[mark:]  # the table may now hold offsets past the end: the caller writes no more names
    return False


def _rrsets(records: tuple[ResourceRecord, ...], whole: bool) -> list[list[ResourceRecord]]:
    """``records`` as RRsets in the order of their first record (Rule 6), or one by one."""
    if not whole:
        return [[rr] for rr in records]
    sets: dict[tuple[Name, int, int], list[ResourceRecord]] = {}
    for rr in records:
        sets.setdefault((lower_name(rr.name), rr.rtype, rr.rclass), []).append(rr)
    return list(sets.values())


def encode_message(msg: DnsMessage, max_size: int | None = None) -> bytes:
    """Serialize ``msg``; with ``max_size`` (>= 512) truncate it to fit, as Rule 6 says.

    0. With ``max_size``: if the message fits whole, it is what it would be without one.
    1. Header placeholder, then every question.
    2. Answer and authority RRsets while they fit, leaving room for the OPT record; the first
       that does not fit ends both sections and sets TC.  Without ``max_size`` records are
       written one by one, in their order.
    3. Additional RRsets (not OPT) while they fit, only if nothing was cut in step 2.
    4. The OPT record, always.
    5. The header, with the counts of what was written.
    """
    if max_size is not None and max_size < UDP_PAYLOAD_MIN:
        raise ValueError("max_size must be at least 512")
    if not 0 <= msg.id <= 0xFFFF or not 0 <= msg.opcode <= 0xF or not 0 <= msg.rcode <= 0xF:
        raise ValueError("id, opcode or rcode out of range")
    # Step 0
    if max_size is not None:
        wire = encode_message(msg)
        if len(wire) <= max_size:
            return wire  # nothing to cut, so nothing regrouped (grouping may compress worse)
    table: dict[Name, int] = {}
    # Step 1
    out = bytearray(HEADER_SIZE)
    for q in msg.questions:
        _write_name(out, q.name, table)
        out += _QUESTION.pack(q.qtype, q.qclass)
    opt = msg.opt
    reserve = 0 if opt is None else 11 + len(opt.rdata)
    limit = (max_size or 0xFFFFFFFF) - reserve
    counts = [len(msg.questions), 0, 0, 0]
    # Step 2
    cut = False
    whole = max_size is not None
    required = [(1, rrset) for rrset in _rrsets(msg.answers, whole)]
    required += [(2, rrset) for rrset in _rrsets(msg.authority, whole)]
    for index, rrset in required:
        if not _append_within(out, rrset, table, limit):
            cut = True
            break
        counts[index] += len(rrset)
    # Step 3
    additional = tuple(rr for rr in msg.additional if rr is not opt)
    for rrset in () if cut else _rrsets(additional, whole):
        if not _append_within(out, rrset, table, limit):
            break
        counts[3] += len(rrset)
    # Step 4
    if opt is not None:
        _write_record(out, opt, {})
        counts[3] += 1
    if any(c > 0xFFFF for c in counts):
        raise ValueError("more than 65535 entries in a section")
    # Step 5
    flags = msg.opcode << 11 | msg.rcode
    bits = (_QR, msg.qr), (_AA, msg.aa), (_TC, msg.tc or cut), (_RD, msg.rd), (_RA, msg.ra)
    for bit, on in (*bits, (_AD, msg.ad), (_CD, msg.cd)):
        flags |= bit if on else 0
    _HEADER.pack_into(out, 0, msg.id, flags, *counts)
    return bytes(out)


def header_only_response(query: bytes, rcode: int) -> bytes:
    """A 12-octet response to a query that has a header but no decodable body: its ID, opcode
    and RD echoed, QR set, all counts 0 (RFC 1035 4.1.1).  ``query`` has at least 12 octets."""
    ident, flags = _HEADER.unpack_from(query)[:2]
    return _HEADER.pack(ident, _QR | (flags & 0x7900) | rcode, 0, 0, 0, 0)


# --- names, records and helpers -------------------------------------------------------------------


def name_from_text(text: str) -> Name:
    """``"Web.vsw."`` -> ``(b"Web", b"vsw")``: dotted ASCII, no escapes; ValueError if invalid."""
    text = text.rstrip(".") if text != "." else ""
    name = tuple(label.encode("ascii") for label in text.split(".")) if text else ()
    check_name(name)
    return name


def name_to_text(name: Name) -> str:
    """``(b"web", b"vsw")`` -> ``"web.vsw."``, escaping dots, backslashes and non-printables
    (RFC 1035 5.1), for display."""

    def label(raw: bytes) -> str:
        return "".join(
            "\\" + chr(c) if c in b".\\" else chr(c) if 0x21 <= c <= 0x7E else f"\\{c:03d}"
            for c in raw
        )

    return ".".join(label(raw) for raw in name) + "."


def lower_name(name: Name) -> Name:
    """The name for comparison: ASCII letters folded to lower case (RFC 4343 3)."""
    return tuple(label.lower() for label in name)


def a_record(name: Name, address: IPv4Address | str, ttl: int) -> ResourceRecord:
    """An A record (RFC 1035 3.4.1)."""
    return ResourceRecord(name, TYPE_A, CLASS_IN, ttl, IPv4Address(address).packed)


def aaaa_record(name: Name, address: IPv6Address | str, ttl: int) -> ResourceRecord:
    """An AAAA record (RFC 3596 2.2)."""
    return ResourceRecord(name, TYPE_AAAA, CLASS_IN, ttl, IPv6Address(address).packed)


def ptr_record(name: Name, target: Name, ttl: int) -> ResourceRecord:
    """A PTR record (RFC 1035 3.3.12), the target written uncompressed."""
    rdata = bytearray()
    _write_name(rdata, target, None)
    return ResourceRecord(name, TYPE_PTR, CLASS_IN, ttl, bytes(rdata))


def opt_record(payload: int, dnssec_ok: bool = False, ext_rcode: int = 0) -> ResourceRecord:
    """An EDNS0 version-0 OPT record with no options (RFC 6891 6.1.2, 6.1.3)."""
    flags = ext_rcode << 24 | (0x8000 if dnssec_ok else 0)
    return ResourceRecord((), TYPE_OPT, payload, flags, b"")


def soa_minimum(rr: ResourceRecord) -> int:
    """The MINIMUM field of a decoded SOA: the last 32 bits of its RDATA (RFC 1035 3.3.13)."""
    if rr.rtype != TYPE_SOA or len(rr.rdata) < 22:
        raise ValueError("not a decoded SOA record")
    return int(_U32.unpack_from(rr.rdata, len(rr.rdata) - 4)[0])


_IN_ADDR_ARPA: Final = (b"in-addr", b"arpa")


def reverse_name(address: IPv4Address | str) -> Name:
    """``192.0.2.5`` -> ``5.2.0.192.in-addr.arpa`` (RFC 1035 3.5)."""
    octets = IPv4Address(address).packed
    return tuple(str(b).encode() for b in reversed(octets)) + _IN_ADDR_ARPA


_IP6_ARPA: Final = (b"ip6", b"arpa")


def reverse_name6(address: IPv6Address | str) -> Name:
    """``fd42::10`` -> ``0.1.0.0. ... .2.4.d.f.ip6.arpa``: 32 nibbles, last first (RFC 3596
    2.5)."""
    return tuple(c.encode() for c in reversed(IPv6Address(address).packed.hex())) + _IP6_ARPA


def parse_reverse_name6(name: Name) -> IPv6Address | None:
    """The address named by a full ip6.arpa name (any case), or None for any other name."""
    if len(name) != 34 or lower_name(name[32:]) != _IP6_ARPA:
        return None
    nibbles = b"".join(reversed(lower_name(name[:32])))
    if len(nibbles) != 32 or any(c not in b"0123456789abcdef" for c in nibbles):
        return None
    return IPv6Address(bytes.fromhex(nibbles.decode()))


def parse_reverse_name(name: Name) -> IPv4Address | None:
    """The address named by a full in-addr.arpa name (any case), or None for any other name."""
    if len(name) != 6 or lower_name(name[4:]) != _IN_ADDR_ARPA:
        return None
    octets = []
    for label in reversed(name[:4]):
        if not label.isdigit() or len(label) > 3 or (len(label) > 1 and label[0] == 0x30):
            return None
        octets.append(int(label))
    if max(octets) > 255:
        return None
    return IPv4Address(bytes(octets))


# --- TCP framing ----------------------------------------------------------------------------------


def encode_tcp_frame(message: bytes) -> bytes:
    """Prefix a DNS message with its 2-octet big-endian length for TCP (RFC 1035 4.2.2)."""
    if len(message) > 0xFFFF:
        raise ValueError("a DNS message over TCP is at most 65535 octets")
    return _U16.pack(len(message)) + message


class TcpFramer:
    """Reassembles length-prefixed DNS messages from a TCP byte stream (RFC 1035 4.2.2).

    Rule: the buffer never holds more than one incomplete frame (at most 2 + ``limit`` octets);
    a frame announcing more than ``limit`` octets raises MalformedPacket and the adapter closes the
    connection.  Zero-length frames are returned as ``b""`` (the responder counts them malformed).
    """

    def __init__(self, limit: int = 0xFFFF) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages completed by them, in order."""
        self._buffer += data
        messages = []
        while len(self._buffer) >= 2:
            size = _U16.unpack_from(self._buffer, 0)[0]
            if size > self.limit:
                raise MalformedPacket(f"TCP DNS frame of {size} octets exceeds {self.limit}")
            if len(self._buffer) < 2 + size:
                break
            messages.append(bytes(self._buffer[2 : 2 + size]))
            del self._buffer[: 2 + size]
        return messages

    @property
    def pending(self) -> int:
        """Octets of an incomplete frame held (0 at a message boundary)."""
        return len(self._buffer)
