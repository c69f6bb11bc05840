"""The NAT's decisions in words, replayed without changing any state (``vswitch trace`` and
``vswitch explain``): each function walks the steps of the core it explains and names the
numbered rule of that core (``nat.conntrack``, ``nat.router``) behind the outcome.
"""

from __future__ import annotations

from nat.conntrack import Conntrack
from wire.packets import PROTO_ICMP, PROTO_NAMES, PROTO_TCP, format_ip
from wire.tcp import ACK, FIN, RST, SYN

#: One decision in words and the rule that made it.
Line = tuple[str, str]



def endpoint(address: bytes, port: int) -> str:
    return f"{format_ip(address)}:{port}"


def flow_text(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> str:
    return f"{PROTO_NAMES.get(proto, proto)} {endpoint(src, sport)} > {endpoint(dst, dport)}"


def _room(ct: Conntrack, guest: bytes | None) -> Line | None:
    room = ct.room(guest)
    if room == "over-quota" and guest is not None:
        return (f"refused: {format_ip(guest)} holds its quota of {ct.max_per_guest} flows; "
                "ICMP 3/13 sent", "conntrack Rule 9")
    if room == "full":
        return ("refused: the table is full and every flow has had replies; ICMP 3/13 sent",
                "conntrack Rule 7")
    if room == "early-drop":
        return ("the table is full: the oldest flow without a reply is dropped to make room",
                "conntrack Rule 7")
    return None


def _known(ct: Conntrack, key: tuple[int, bytes, int, bytes, int], tcp_flags: int,
           from_outside: bool) -> list[Line] | None:
    """Steps 1 and 2 of both directions: a packet of a known flow (a hit), or a TCP segment
    other than a SYN that matches none (dropped); None for a packet that may open a flow."""
    what = flow_text(*key)
    to = ct.lookup(key, from_outside)
    if to is not None:
        verb = "goes on as" if from_outside else "leaves as"
        return [(f"hit: {what} {verb} {flow_text(to.proto, to.src, to.sport, to.dst, to.dport)}",
                 "conntrack Rule 1")]
    if key[0] == PROTO_TCP and tcp_flags & (SYN | ACK | RST | FIN) != SYN:
        how = "dropped silently" if from_outside else "dropped"
        return [(f"{how}: {what} is not a SYN and matches no flow", "conntrack Rule 3")]
    return None


def explain_outbound(ct: Conntrack, proto: int, src: bytes, sport: int, dst: bytes,
                     dport: int, tcp_flags: int) -> list[Line]:
    """``Conntrack.outbound`` replayed: hit, or the new mapping and why that port."""
    what = flow_text(proto, src, sport, dst, dport)
    known = _known(ct, (proto, src, sport, dst, dport), tcp_flags, False)  # steps 1, 2
    if known is not None:
        return known
    by_port = ct.mappings.by_port.get(proto)
    if by_port is None:
        return [(f"dropped: protocol {proto} is not translated", "conntrack Rule 1")]
    hairpin = dst == ct.external_ip
    if hairpin and (proto == PROTO_ICMP or dport not in by_port):  # step 3
        return [(f"dropped: {what} is to the external address, port {dport} is not mapped",
                 "conntrack Rule 4")]
    lines = []
    room = _room(ct, src)
    if room is not None:  # step 4
        if room[0].startswith("refused"):
            return [room]
        lines.append(room)
    mapping = ct.mappings.by_guest[proto].get((src, sport)) \
        or ct.mappings.static[proto].get((src, sport))
    if mapping is not None:  # step 5
        port = mapping.port
        why = ("the endpoint's existing mapping, whatever the destination (endpoint-"
               "independent mapping)") if not mapping.static else "the forward's own port"
    else:
        free = ct.mappings.next_free(proto, sport)
        if free is None:
            return [*lines, ("dropped: every port of the range is taken", "conntrack Rule 2")]
        port = free
        why = "port preserved" if free == sport else \
            f"port chosen: {sport} is taken or outside {ct.port_range[0]}-{ct.port_range[1]}"
    if hairpin:
        target = by_port[dport]
        out = flow_text(proto, ct.external_ip, port, target.guest_ip, target.guest_port)
        return [*lines, (f"new (hairpin): {what} reaches {out} ({why})", "conntrack Rule 4")]
    out = flow_text(proto, ct.external_ip, port, dst, port if proto == PROTO_ICMP else dport)
    return [*lines, (f"new: {what} mapped to {out} ({why})", "conntrack Rule 2")]


def explain_inbound(ct: Conntrack, proto: int, src: bytes, sport: int, dst: bytes,
                    dport: int, tcp_flags: int) -> list[Line]:
    """``Conntrack.inbound`` replayed: hit, a forward (DNAT), filtered, or no mapping."""
    what = flow_text(proto, src, sport, dst, dport)
    known = _known(ct, (proto, src, sport, dst, dport), tcp_flags, True)  # steps 1, 2
    if known is not None:
        return known
    mapping = ct.mappings.by_port.get(proto, {}).get(dport) if dst == ct.external_ip \
        and proto != PROTO_ICMP else None
    if mapping is None:  # step 3
        return [(f"dropped silently: no mapping holds port {dport} (unsolicited)",
                 "conntrack Rule 3")]
    guest = endpoint(mapping.guest_ip, mapping.guest_port)
    if mapping.static:
        line = (f"forward matched: {PROTO_NAMES[proto]} port {dport} DNAT to {guest}",
                "conntrack Rule 8")
    elif ct.filtering == "address-dependent" and not mapping.has_flow_to(src):  # step 4
        return [(f"filtered: {guest}'s mapping has no flow to {format_ip(src)} "
                 "(address-dependent filtering, RFC 4787 REQ-8)", "conntrack Rule 3")]
    else:
        line = (f"new: {what} admitted by {guest}'s mapping ({ct.filtering} filtering)",
                "conntrack Rule 3")
    room = _room(ct, None)  # step 5: from outside, no guest's quota (Rule 9)
    if room is not None and room[0].startswith("refused"):
        return [line, room]
    return [line] if room is None else [room, line]
