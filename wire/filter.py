"""A small tcpdump-like filter language for ``vswitch trace`` and ``vswitch capture``.

``compile_filter(text)`` returns a predicate over a plain Ethernet frame (from the destination
MAC on, no virtio-net header). An empty filter matches every frame. Grammar::

    filter     := [expr]
    expr       := unary (("and" | "&&" | "or" | "||") unary)*
    unary      := ("not" | "!") unary  |  "(" expr ")"  |  primitive
    primitive  := [src | dst] host ADDRESS        IPv4 source or destination, ARP sender or
                                                  target protocol address
               |  [src | dst] net ADDRESS/LENGTH  the same, inside a prefix (10.0.0.0/8)
               |  [src | dst] port NUMBER         TCP or UDP source or destination port
               |  ether (host | src | dst) MAC    Ethernet addresses (ether src host MAC too)
               |  ip  [[src | dst] (host ADDRESS | net ADDRESS/LENGTH)]
               |  arp [[src | dst] (host ADDRESS | net ADDRESS/LENGTH)]
               |  tcp [[src | dst] port NUMBER]   (tcp port 80 is tcp and port 80)
               |  udp [[src | dst] port NUMBER]
               |  icmp

Examples: ``host 10.0.0.5 and not port 22``, ``arp or icmp``, ``ether src 52:54:00:12:34:56``,
``udp port 67 or udp port 68``, ``src net 192.168.122.0/24 && (tcp || icmp)``.

As in tcpdump, ``not`` binds tightest, and ``and`` and ``or`` have EQUAL precedence and group
from the left: ``a or b and c`` is ``(a or b) and c``. Write parentheses when mixing them.

Where it differs from tcpdump:

- Up to four 802.1Q/802.1ad VLAN tags are skipped, so ``host``, ``port``, ``ip`` ... see the
  packet inside (tcpdump needs ``vlan and ...``); ``ether`` looks at the outer addresses.
- IPv4 only: ``tcp``, ``udp`` and ``port`` never match IPv6 (tcpdump's do); ``port`` means TCP
  or UDP (tcpdump's also SCTP).
- Values are numeric: no host or service names (``port 80``, not ``port http``); a bare value
  does not repeat the previous keyword (``host a or host b``, not ``host a or b``).
- A primitive that cannot read a frame (truncated, not IPv4, a later fragment for ``port``) is
  false, so ``not`` of it is true; tcpdump rejects a frame its program reads beyond.

Like tcpdump, the IPv4 header's checksum and total length are not checked: a trace shows bad
packets too. ``port`` matches only the fragment carrying the L4 header (offset 0).
A malformed filter raises ``FilterError`` naming the token, its column and what was expected.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Callable
from operator import attrgetter
from typing import Final, NamedTuple, TypeVar

from wire.errors import MalformedPacket
from wire.packets import (
    ETH_P_ARP,
    ETH_P_IP,
    IPV4,
    IPV4_OFFSET,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    decode_arp,
    decode_ethernet,
)

_PORTS: Final = struct.Struct("!HH")
_T = TypeVar("_T")


class FilterError(ValueError):
    """A filter that does not parse; the message names the token, its column, the expected."""


class _View(NamedTuple):
    """What the primitives read of one frame, decoded once per frame for the whole tree."""

    ether_dst: bytes
    ether_src: bytes
    ethertype: int  # after any VLAN tags; -1 when unreadable
    src: int | None  # IPv4 source or ARP sender protocol address; None when absent
    dst: int | None  # IPv4 destination or ARP target protocol address
    proto: int  # IPv4 protocol; -1 when not IPv4
    sport: int  # TCP/UDP ports; -1 when the packet carries no readable L4 header
    dport: int


_Node = Callable[[_View], bool]


def _view(frame: bytes) -> _View:
    """Decode what the primitives need; never raises (a part it cannot read stays absent)."""
    if len(frame) < 14:
        return _View(b"", b"", -1, None, None, -1, -1, -1)
    try:
        eth = decode_ethernet(frame)
    except MalformedPacket:  # a tag cut short, or too many tags: the MACs are still there
        return _View(frame[:6], frame[6:12], -1, None, None, -1, -1, -1)
    if eth.ethertype == ETH_P_ARP:
        try:
            arp = decode_arp(frame, eth.start)
        except MalformedPacket:
            return _View(eth.dst, eth.src, ETH_P_ARP, None, None, -1, -1, -1)
        return _View(eth.dst, eth.src, ETH_P_ARP, int.from_bytes(arp.sender_ip),
                     int.from_bytes(arp.target_ip), -1, -1, -1)
    if eth.ethertype != ETH_P_IP or len(frame) < eth.start + IPV4.size:
        return _View(eth.dst, eth.src, eth.ethertype, None, None, -1, -1, -1)
    # Not decode_ipv4: it refuses a bad checksum or length, and a trace must show those too.
    vihl, _, _, _, frag, _, proto, _, src, dst = IPV4.unpack_from(frame, eth.start)
    sport = dport = -1
    ihl, l4 = (vihl & 0x0F) * 4, eth.start + (vihl & 0x0F) * 4
    # Only the first fragment carries the ports; later ones would show payload bytes.
    if proto in (PROTO_TCP, PROTO_UDP) and not frag & IPV4_OFFSET and ihl >= 20 \
            and len(frame) >= l4 + _PORTS.size:
        sport, dport = _PORTS.unpack_from(frame, l4)
    return _View(eth.dst, eth.src, ETH_P_IP, int.from_bytes(src), int.from_bytes(dst), proto,
                 sport, dport)


def _either(direction: str | None, test: Callable[[object], bool], fields: str) -> _Node:
    """``src X``, ``dst X`` or, without a direction, either: ``fields`` names the view's
    source field then its destination field."""
    src, dst = (attrgetter(name) for name in fields.split())
    if direction == "src":
        return lambda v: test(src(v))
    if direction == "dst":
        return lambda v: test(dst(v))
    return lambda v: test(src(v)) or test(dst(v))


def _and(a: _Node, b: _Node) -> _Node:
    return lambda v: a(v) and b(v)


def _or(a: _Node, b: _Node) -> _Node:
    return lambda v: a(v) or b(v)


def _alternatives(words: tuple[str, ...]) -> str:
    quoted = [f'"{word}"' for word in words]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)


_TOKEN: Final = re.compile(r"\s*(?:(&&|\|\||[()!])|([^\s()!&|]+)|(\S))")
_MAC: Final = re.compile(r"[0-9a-fA-F]{1,2}([:-])(?:[0-9a-fA-F]{1,2}\1){4}[0-9a-fA-F]{1,2}")
_PROTOCOLS: Final[dict[str, tuple[_Node, tuple[str, ...]]]] = {
    # keyword: (its test, the primitives that may follow it as a qualifier)
    "ip": (lambda v: v.ethertype == ETH_P_IP, ("host", "net")),
    "arp": (lambda v: v.ethertype == ETH_P_ARP, ("host", "net")),
    "tcp": (lambda v: v.proto == PROTO_TCP, ("port",)),
    "udp": (lambda v: v.proto == PROTO_UDP, ("port",)),
    "icmp": (lambda v: v.proto == PROTO_ICMP, ()),
}
_PRIMITIVE: Final = 'a primitive (host, net, port, ether, ip, arp, tcp, udp, icmp), "not" or "("'


class _Parser:
    """Recursive descent over the tokens; each rule returns the closure of what it parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, int]] = []  # (token, 1-based column)
        self.at = 0
        for m in _TOKEN.finditer(text):
            group = m.lastindex or 0  # exactly one group matched
            self.tokens.append((m.group(group), m.start(group) + 1))
            if group == 3:  # a character no token starts with (a lone "&" or "|")
                self.at = len(self.tokens) - 1
                raise self.error('an operator ("&&", "||", "!"), a word or a parenthesis')

    def peek(self) -> str | None:
        return self.tokens[self.at][0].lower() if self.at < len(self.tokens) else None

    def take(self) -> None:
        self.at += 1

    def error(self, expected: str) -> FilterError:
        after = f' after "{self.tokens[self.at - 1][0]}"' if self.at else ""
        if self.at < len(self.tokens):
            token, column = self.tokens[self.at]
            got = f'"{token}"'
        else:
            column, got = len(self.text.rstrip()) + 1, "the end of the filter"
        return FilterError(f"filter: expected {expected}{after} at column {column}, got {got}")

    def expr(self) -> _Node:
        # tcpdump's rule: "and" and "or" share one precedence, grouped from the left.
        node = self.unary()
        while (op := self.peek()) in ("and", "&&", "or", "||"):
            self.take()
            node = (_and if op in ("and", "&&") else _or)(node, self.unary())
        return node

    def unary(self) -> _Node:
        word = self.peek()
        if word in ("not", "!"):
            self.take()
            inner = self.unary()
            return lambda v: not inner(v)
        if word == "(":
            self.take()
            node = self.expr()
            if self.peek() != ")":
                raise self.error('"and", "or" or ")"')
            self.take()
            return node
        return self.primitive()

    def primitive(self) -> _Node:
        word = self.peek()
        if word in _PROTOCOLS:
            self.take()
            test, qualifiers = _PROTOCOLS[word]
            direction = self.peek() if qualifiers and self.peek() in ("src", "dst") else None
            if direction:
                self.take()
            if direction or self.peek() in qualifiers:  # "tcp port 80": tcp and port 80
                return _and(test, self.directed(direction, qualifiers))
            return test
        if word == "ether":
            self.take()
            direction = self.peek()
            if direction not in ("host", "src", "dst"):
                raise self.error(_alternatives(("host", "src", "dst")))
            self.take()
            if direction != "host" and self.peek() == "host":  # "ether src host MAC"
                self.take()
            mac = self.value("a MAC address (like 52:54:00:12:34:56)", _mac)
            return _either(None if direction == "host" else direction, lambda m: m == mac,
                           "ether_src ether_dst")
        direction = word if word in ("src", "dst") else None
        if direction:
            self.take()
            return self.directed(direction, ("host", "net", "port"))
        if word in ("host", "net", "port"):
            return self.directed(None, ("host", "net", "port"))
        raise self.error(_PRIMITIVE)

    def directed(self, direction: str | None, kinds: tuple[str, ...]) -> _Node:
        """``host A``, ``net A/N`` or ``port N`` (those of ``kinds``), after any direction."""
        kind = self.peek()
        if kind not in kinds:
            raise self.error(_alternatives(kinds))
        self.take()
        if kind == "host":
            address = self.value("an IPv4 address", _address)
            return _either(direction, lambda a: a == address, "src dst")
        if kind == "net":
            net, mask = self.value("a network like 10.0.0.0/8 (address/prefix length, "
                                   "no host bits set)", _network)
            return _either(direction, lambda a: isinstance(a, int) and a & mask == net,
                           "src dst")
        port = self.value("a port number (0-65535)", _port)
        return _either(direction, lambda p: p == port, "sport dport")

    def value(self, expected: str, convert: Callable[[str], _T]) -> _T:
        """The next token as a value, or a FilterError naming it."""
        if self.at < len(self.tokens):
            try:
                result = convert(self.tokens[self.at][0])
            except ValueError:
                pass
            else:
                self.take()
                return result
        raise self.error(expected)


def _address(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _network(text: str) -> tuple[int, int]:
    if "/" not in text:
        raise ValueError(text)
    net = ipaddress.IPv4Network(text)  # strict: host bits set is an error, as in tcpdump
    return int(net.network_address), int(net.netmask)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFF:
        raise ValueError(text)
    return int(text)


def _mac(text: str) -> bytes:
    if not _MAC.fullmatch(text):
        raise ValueError(text)
    return bytes(int(part, 16) for part in re.split("[:-]", text))


def compile_filter(text: str) -> Callable[[bytes], bool]:
    """A predicate over plain Ethernet frames for the filter ``text`` (grammar above); raises
    ``FilterError``. The predicate never raises: a frame it cannot read does not match."""
    if not text.strip():
        return lambda frame: True
    parser = _Parser(text)
    node = parser.expr()
    if parser.peek() is not None:
        raise parser.error('"and", "or" or the end of the filter')
    return lambda frame: node(_view(frame))
