"""The DHCP server's and the DNS responder's decisions in words, replayed without changing
their state (``vswitch trace``, ``vswitch explain``).

DHCP: the message type, the state the client's lease would move to, and the address with where
it comes from, citing the steps of ``dhcp.server``'s handlers (RFC 2131 4.3).  DNS: the
question and where the answer would come from, citing ``dhcp.dns``'s rules.
"""

from __future__ import annotations

from collections.abc import Collection
from ipaddress import ip_address

from wire.errors import MalformedPacket

from .dns import DnsResponder
from .dnsmsg import RCODE_NXDOMAIN, _read_name, lower_name, name_to_text
from .dnsmsg import decode_message as decode_dns
from .message import ZERO_IP, MessageType, decode_message
from .server import DhcpServer, _dotted, _int, _Request, client_key

#: One decision in words and the rule that made it.
Line = tuple[str, str]


def explain_dhcp(server: DhcpServer, data: bytes, src_mac: bytes, src_ip: bytes,
                 now: float) -> list[Line]:
    """What ``server.handle(data, ...)`` would answer, and why."""
    try:
        msg = decode_message(data)
    except MalformedPacket as exc:
        return [(f"dropped: malformed DHCP message ({exc})", "dhcp Rule 6")]
    reason = server._screen(msg)
    mtype = msg.message_type()
    if reason is not None or mtype not in MessageType.__members__.values():
        return [(f"dropped: {reason or 'unknown message type'}", "dhcp Rule 6")]
    kind = MessageType(mtype).name
    req = _Request(msg, client_key(msg), src_mac, src_ip, now)
    lease = server.table.by_client(req.client)
    was = lease.state.value if lease is not None else "no lease"
    if kind == "DISCOVER":
        ip = server._choose(req)
        if ip is None:
            return [("DISCOVER: nothing to offer (pool used up or lease cap reached)",
                     "dhcp Rule 3")]
        if ip == server._static_ip(req):
            source = "its static host entry"
        elif lease is not None and lease.ip == ip:
            source = "its current lease"
        elif msg.requested_ip() is not None and _int(msg.requested_ip() or ZERO_IP) == ip:
            source = "the address it asked for"
        else:
            source = "the pool"
        after = "bound" if lease is not None and lease.ip == ip and was == "bound" else "offered"
        return [(f"DISCOVER: OFFER {_dotted(ip)} from {source}; lease {was} -> {after}",
                 "dhcp server handle_discover")]
    if kind == "REQUEST":
        requested, server_id = msg.requested_ip(), msg.server_id()
        if server_id is not None:
            if server_id != server._server_id:
                return [("REQUEST (SELECTING) for another server: our offer is withdrawn",
                         "dhcp server handle_request step 1")]
            state, ip = "SELECTING", _int(requested) if requested is not None else None
        elif requested is not None and msg.ciaddr == ZERO_IP:
            state, ip = "INIT-REBOOT", _int(requested)
        elif msg.ciaddr != ZERO_IP:
            state, ip = "RENEWING or REBINDING", _int(msg.ciaddr)
        else:
            return [("REQUEST without an address: dropped", "dhcp server handle_request")]
        if ip is None:
            return [("REQUEST (SELECTING) without an address: dropped",
                     "dhcp server handle_request step 1")]
        if server._acceptable(req, ip, lease):
            return [(f"REQUEST ({state}) for {_dotted(ip)}: ACK; lease {was} -> bound",
                     "dhcp server handle_request step 4")]
        return [(f"REQUEST ({state}) for {_dotted(ip)}: NAK or silence, the address is not "
                 "this client's", "dhcp Rule 2")]
    if kind == "DECLINE":
        return [(f"DECLINE: the address is quarantined for {server.config.decline_time:.0f} s",
                 "dhcp Rule 4")]
    if kind == "RELEASE":
        return [(f"RELEASE of {_dotted(_int(msg.ciaddr))}: lease {was} -> free",
                 "dhcp server handle_release")]
    if kind == "INFORM":
        return [("INFORM: ACK with configuration only, no lease", "dhcp server handle_inform")]
    return [(f"{kind}: not a client message, dropped", "dhcp Rule 6")]


_TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
               33: "SRV", 255: "ANY"}


def explain_dns(responder: DnsResponder, data: bytes, now: float,
                static_names: Collection[str] = ()) -> list[Line]:
    """What ``responder.handle_query(data, ...)`` would answer, and from where: a guest's
    name (its DHCP lease, or a static host when ``static_names`` holds it), the cache, or
    which upstream the question is forwarded to."""
    try:
        query = decode_dns(data)
    except MalformedPacket as exc:
        return [(f"FORMERR: the query does not decode ({exc})", "dns step 1")]
    if query.qr or len(query.questions) != 1:
        return [("FORMERR or ignored: not one question", "dns step 1")]
    question = query.questions[0]
    asked = f"{_TYPE_NAMES.get(question.qtype, question.qtype)} {name_to_text(question.name)}"
    local = responder._local(question)
    if local is not None:
        if local.rcode == RCODE_NXDOMAIN:
            return [(f"question {asked}: NXDOMAIN, a local name nobody has", "dns Rule 2")]
        if not local.answers:
            return [(f"question {asked}: NODATA, the name is local, not of that type",
                     "dns Rule 2")]
        answer = local.answers[0]
        if answer.rtype in (1, 28):  # A, AAAA: the host is the question's first label
            host = lower_name(question.name)
            value = str(ip_address(answer.rdata))
        else:  # PTR: the host is the answer's
            host = lower_name(_read_name(answer.rdata, 0, len(answer.rdata))[0])
            value = name_to_text(host)
        label = host[0].decode(errors="replace") if host else ""
        source = "a static host" if label in static_names else "a DHCP lease"
        return [(f"question {asked}: answered {value} from {source}", "dns Rule 1")]
    key = (lower_name(question.name), question.qtype, question.qclass,
           query.dnssec_ok or query.cd)
    entry = responder._t.cache.get(key)
    if entry is not None and now < entry.expires:
        return [(f"question {asked}: answered from the cache "
                 f"({entry.expires - now:.0f} s left)", "dns Rule 7")]
    if not responder.upstreams:
        return [(f"question {asked}: REFUSED, no upstream to forward to", "dns step 4")]
    host, port = responder.upstreams[responder._preferred % len(responder.upstreams)]
    return [(f"question {asked}: forwarded to {host}:{port}", "dns Rule 3")]
