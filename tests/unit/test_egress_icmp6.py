"""ICMPv6 errors through the host uplink (``nat.egress.v6`` Rules 5 and 7): the error-queue
parser on crafted control messages of both families, errors quoting the guest's datagram, echo
request or SYN as the guest sent it, a real port unreachable from the host's ``::1``, and a
failed IPv6 connect that gets ICMPv6 unreachable where IPv4 gets ICMP (refused: a RST)."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, TCPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
    _ICMPv6Error,
)
from scapy.layers.l2 import Ether

from nat.egress.sockets import (
    BATCH,
    EXT_ERR,
    IPV6_RECVERR,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    icmp_error_of,
    read_icmp_error,
)
from nat.egress.tcp import TcpAdapter, TcpFlow
from nat.tcp_splice import Splice
from tests.conftest import require
from tests.unit.test_forward6_egress import GUEST6, Rig, free_port
from wire.ipv6 import decode_ipv6
from wire.packets import decode_ipv4
from wire.vnet import NO_OFFLOAD, VNET_HDR_LEN

L3 = VNET_HDR_LEN + 14
GUEST_TEXT, GW_TEXT = "fd42:0:0:1::10", "fd42:0:0:1::1"
FAR = "fd0e:99::2"  # an outside host
ROUTER = "fd0e:97::2"  # a router on the way to it


def sockaddr_in(host: str) -> bytes:
    return struct.pack("=HH", socket.AF_INET, 0) + socket.inet_aton(host) + bytes(8)


def sockaddr_in6(host: str) -> bytes:
    return (struct.pack("=HHI", socket.AF_INET6, 0, 0)
            + socket.inet_pton(socket.AF_INET6, host) + bytes(4))


def extended(err: int, origin: int, icmp_type: int, code: int, info: int = 0) -> bytes:
    return EXT_ERR.pack(err, origin, icmp_type, code, 0, info, 0)


# -- the error-queue parser (sockets.icmp_error_of, read_icmp_error) ---------------------------

def test_the_parser_reads_an_icmp_error_and_who_sent_it():
    value = extended(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, 11, 0) + sockaddr_in("10.95.0.1")
    assert icmp_error_of([(socket.IPPROTO_IP, 11, value)]) == (11, 0, 0, "10.95.0.1")
    frag = extended(errno.EMSGSIZE, SO_EE_ORIGIN_ICMP, 3, 4, 1400) + sockaddr_in("192.0.2.1")
    assert icmp_error_of([(socket.IPPROTO_IP, 11, frag)]) == (3, 4, 1400, "192.0.2.1")


def test_the_parser_reads_an_icmpv6_error_and_who_sent_it():
    value = extended(errno.EACCES, SO_EE_ORIGIN_ICMP6, 1, 1) + sockaddr_in6(ROUTER)
    assert icmp_error_of([(socket.IPPROTO_IPV6, IPV6_RECVERR, value)]) == (1, 1, 0, ROUTER)
    too_big = extended(errno.EMSGSIZE, SO_EE_ORIGIN_ICMP6, 2, 0, 1400) + sockaddr_in6(ROUTER)
    assert icmp_error_of([(socket.IPPROTO_IPV6, IPV6_RECVERR, too_big)]) == (2, 0, 1400, ROUTER)


def test_the_parser_passes_over_local_errors_other_messages_and_short_ones():
    local6 = extended(errno.EMSGSIZE, 1, 0, 0, 1280) + sockaddr_in6("::")  # SO_EE_ORIGIN_LOCAL
    icmp6 = extended(errno.EACCES, SO_EE_ORIGIN_ICMP6, 1, 6) + sockaddr_in6(ROUTER)
    assert icmp_error_of([(socket.IPPROTO_IPV6, IPV6_RECVERR, local6)]) is None
    assert icmp_error_of([(socket.IPPROTO_IPV6, IPV6_RECVERR, icmp6[:-5])]) is None
    assert icmp_error_of([(socket.IPPROTO_IPV6, 50, icmp6)]) is None  # another cmsg type
    # an ICMPv6 origin in an IPv4 message is not an ICMP error (and the reverse)
    assert icmp_error_of([(socket.IPPROTO_IP, 11, icmp6)]) is None
    v4 = extended(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, 3, 1) + sockaddr_in("10.0.0.1")
    assert icmp_error_of([(socket.IPPROTO_IPV6, IPV6_RECVERR, v4)]) is None
    assert icmp_error_of([(socket.IPPROTO_IPV6, IPV6_RECVERR, local6),
                          (socket.IPPROTO_IPV6, IPV6_RECVERR, icmp6)]) == (1, 6, 0, ROUTER)


class QueuedErrors:
    """A socket whose error queue holds ``queue`` (recvmsg results, oldest first)."""

    family = socket.AF_INET6

    def __init__(self, queue: list[tuple[Any, ...]]) -> None:
        self.queue = queue
        self.sizes: list[int] = []
        self.options: list[tuple[int, int, int]] = []

    def recvmsg(self, size: int, ancsize: int, flags: int) -> tuple[Any, ...]:
        assert flags == socket.MSG_ERRQUEUE
        self.sizes.append(size)
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "empty")
        return self.queue.pop(0)

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.options.append((level, name, value))

    def getsockname(self) -> tuple[str, int]:
        raise OSError(errno.EBADF, "not a socket")

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def queued(icmp_type: int, code: int, reporter: str, info: int = 0,
           data: bytes = b"") -> tuple[Any, ...]:
    value = extended(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP6, icmp_type, code, info)
    return (data, [(socket.IPPROTO_IPV6, IPV6_RECVERR, value + sockaddr_in6(reporter))], 0,
            (FAR, 33434, 0, 0))


def test_reading_the_queue_passes_over_local_errors_and_reads_a_whole_ipv6_quote():
    local = (b"", [(socket.IPPROTO_IPV6, IPV6_RECVERR,
                    extended(errno.EMSGSIZE, 1, 0, 0) + sockaddr_in6("::"))], 0, (FAR, 1, 0, 0))
    sock = QueuedErrors([local, queued(3, 0, ROUTER, data=b"probe")])
    assert read_icmp_error(sock) == (b"probe", (FAR, 33434, 0, 0), 3, 0, 0, ROUTER)
    assert read_icmp_error(sock) is None
    assert sock.sizes[0] == 1280, "an ICMPv6 error quotes up to the minimum MTU"


def test_reading_the_queue_stops_after_a_batch_of_local_errors():
    """A queue of local errors only (the kernel bounds it, we do too): one call reads at most
    a batch of them and finds no ICMPv6 error; the rest are left for the next call."""
    local = (b"", [(socket.IPPROTO_IPV6, IPV6_RECVERR,
                    extended(errno.EMSGSIZE, 1, 0, 0) + sockaddr_in6("::"))], 0, (FAR, 1, 0, 0))
    sock = QueuedErrors([local] * (BATCH + 1) + [queued(3, 0, ROUTER, data=b"probe")])
    assert read_icmp_error(sock) is None
    assert len(sock.sizes) == BATCH and len(sock.queue) == 2
    assert read_icmp_error(sock) == (b"probe", (FAR, 33434, 0, 0), 3, 0, 0, ROUTER)


# -- errors passed on to guests (Rule 7) -------------------------------------------------------

@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    rig.close()


GUEST_MAC, GW_MAC = "52:54:00:00:00:02", "52:54:00:00:00:01"
#: An error quoting a guest's own frame (a SYN, a refused send) goes back where the frame came
#: from (the router addresses it again anyway).
BACK_MACS = bytes.fromhex(GUEST_MAC.replace(":", "") + GW_MAC.replace(":", ""))


def guest_frame(dst: str, layers: Any) -> bytes:
    return NO_OFFLOAD + bytes(Ether(src=GUEST_MAC, dst=GW_MAC)
                              / IPv6(src=GUEST_TEXT, dst=dst, hlim=64) / layers)


def the_error(packet: bytes, macs: bytes = bytes(12)) -> Ether:
    """A packet to the guest: an ICMPv6 error, with no offloads and its MACs (by default
    unset: the router fills them in); its checksum as scapy computes it."""
    assert packet[:VNET_HDR_LEN] == NO_OFFLOAD and packet[VNET_HDR_LEN:L3 - 2] == macs
    frame = Ether(packet[VNET_HDR_LEN:])
    assert frame[IPv6].dst == GUEST_TEXT and frame[IPv6].nh == 58
    assert isinstance(frame[IPv6].payload, _ICMPv6Error)
    again = Ether(packet[VNET_HDR_LEN:])
    again[IPv6].payload.cksum = None
    assert Ether(bytes(again))[IPv6].payload.cksum == frame[IPv6].payload.cksum
    return frame


def test_a_datagram_to_a_closed_port_of_the_hosts_loopback_gets_port_unreachable(rig: Rig):
    """A real error: the host's ``::1`` answers port unreachable; the guest gets it from the
    gateway's address (``::1`` as the guest sees it), quoting the datagram it sent."""
    try:
        closed = free_port(socket.AF_INET6, socket.SOCK_DGRAM, "::1")
    except OSError:
        closed = 0
    require(closed != 0, "no IPv6 loopback here")
    assert rig.egress.v6 is not None
    for n in range(2):  # each datagram's error, none left behind
        frame = guest_frame(GW_TEXT, UDP(sport=40000 + n, dport=closed)
                            / f"anyone {n}?".encode())
        assert rig.egress.v6.from_guest(frame, decode_ipv6(frame, L3), rig.loop.time())
        rig.wait("the port unreachable")
        (error,) = rig.out
        rig.out.clear()
        got = the_error(error)
        assert got[IPv6].src == GW_TEXT
        assert (got[ICMPv6DestUnreach].type, got[ICMPv6DestUnreach].code) == (1, 4)
        quoted = got[IPerror6]
        assert (quoted.src, quoted.dst) == (GUEST_TEXT, GW_TEXT), "as the guest sent it"
        assert (quoted[UDPerror].sport, quoted[UDPerror].dport) == (40000 + n, closed)
        assert bytes(quoted[UDPerror].payload) == f"anyone {n}?".encode()
    assert rig.egress.counters["icmp6-1/4-to-guest"] == 2


def test_an_error_about_an_echo_request_quotes_the_guests_identifier(rig: Rig):
    """What the shared raw socket hears: time exceeded from a router, quoting our request
    (our identifier) to a host the guest pinged; packet too big never says less than 1280."""
    v6 = rig.egress.v6
    assert v6 is not None
    flow = v6.flows.add_echo(GUEST6, 0x1234, None, None, rig.loop.time())
    far = socket.inet_pton(socket.AF_INET6, FAR)
    v6.flows.echo_out(flow, far, 8, rig.loop.time())
    ours = bytes(IPv6(src="fd0e:97::1", dst=FAR, hlim=1)
                 / ICMPv6EchoRequest(id=flow.host_ident, seq=7, data=b"ping data"))
    got = the_error(v6._raw_error(bytes(ICMPv6TimeExceeded()) + ours, ROUTER)[0])
    assert got[IPv6].src == ROUTER and got[ICMPv6TimeExceeded].code == 0
    request = got[IPerror6]
    assert (request.src, request.dst) == (GUEST_TEXT, FAR)
    echo = ICMPv6EchoRequest(bytes(request.payload))
    assert (echo.id, echo.seq, echo.data) == (0x1234, 7, b"ping data")
    too_big = the_error(v6._raw_error(bytes(ICMPv6PacketTooBig(mtu=1000)) + ours, ROUTER)[0])
    assert too_big[ICMPv6PacketTooBig].mtu == 1280
    # not ours: another identifier, or a host the guest never pinged
    other = bytes(IPv6(src="fd0e:97::1", dst=FAR) / ICMPv6EchoRequest(id=flow.host_ident + 1))
    assert v6._raw_error(bytes(ICMPv6TimeExceeded()) + other, ROUTER) == []
    elsewhere = bytes(IPv6(src="fd0e:97::1", dst="fd0e:99::3")
                      / ICMPv6EchoRequest(id=flow.host_ident))
    assert v6._raw_error(bytes(ICMPv6TimeExceeded()) + elsewhere, ROUTER) == []


def test_a_send_the_host_refuses_gets_unreachable_from_the_gateway(rig: Rig):
    v6 = rig.egress.v6
    assert v6 is not None
    frame = guest_frame(FAR, UDP(sport=5000, dport=53) / b"q")

    class Refusing:
        def sendto(self, data: bytes, to: tuple[str, int]) -> int:
            raise OSError(errno.EACCES, "prohibited")

    v6._send(Refusing(), b"q", (FAR, 53), frame, "udp6")
    got = the_error(rig.out[0], BACK_MACS)
    assert got[IPv6].src == GW_TEXT and got[ICMPv6DestUnreach].code == 1
    assert rig.egress.counters["udp6-send-EACCES"] == 1


# -- TCP: a failed IPv6 connect (Rule 5), IPv4's unchanged -------------------------------------

def syn_flow(tcp: TcpAdapter, sock: Any, six: bool = True) -> TcpFlow:
    """A guest's SYN whose connect is under way on ``sock``."""
    l3 = IPv6(src=GUEST_TEXT, dst=FAR) if six else IP(src="10.0.2.15", dst="192.0.2.80")
    syn = NO_OFFLOAD + bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / l3
                             / TCP(sport=40000, dport=80, flags="S", seq=1000))
    ip = decode_ipv6(syn, L3) if six else decode_ipv4(syn, L3)
    splice = Splice.outbound(syn, 0.0, ip=ip, mss=1440)
    splice.macs = syn[16:22] + syn[10:16]
    flow = TcpFlow((ip.src, 40000, ip.dst, 80), splice, sock, connecting=True)
    tcp.flows[flow.key] = flow
    return flow


def fail(rig: Rig, sock: Any, err: int, six: bool = True) -> list[bytes]:
    """What the guest gets when the connect ends with ``err``: emitted, or delivered."""
    tcp = rig.egress.tcp
    flow = syn_flow(tcp, sock, six)
    tcp._connect_result(flow, err)
    tcp._sync(flow)
    assert flow.key not in tcp.flows, "the flow is closed"
    return rig.out + rig.delivered


def test_an_ipv6_connect_failed_by_an_icmpv6_error_passes_it_on_quoting_the_syn(rig: Rig):
    sock = QueuedErrors([queued(1, 1, ROUTER)])
    (error,) = fail(rig, sock, errno.EACCES)
    got = the_error(error, BACK_MACS)
    assert got[IPv6].src == ROUTER, "from the router that refused it"
    assert (got[ICMPv6DestUnreach].type, got[ICMPv6DestUnreach].code) == (1, 1)
    quoted = got[IPerror6]
    assert (quoted.src, quoted.dst) == (GUEST_TEXT, FAR)
    assert (quoted[TCPerror].sport, quoted[TCPerror].dport, quoted[TCPerror].seq) == \
        (40000, 80, 1000)
    assert (socket.IPPROTO_IPV6, IPV6_RECVERR, 0) in sock.options, "errors asked for no more"
    assert rig.egress.counters["tcp6-connect-EACCES"] == 1


@pytest.mark.parametrize(("err", "code"), [(errno.ENETUNREACH, 0), (errno.EHOSTUNREACH, 3),
                                           (errno.ETIMEDOUT, 3), (errno.EACCES, 1)])
def test_an_ipv6_connect_failed_without_an_error_gets_the_code_its_errno_means(
        rig: Rig, err: int, code: int):
    (error,) = fail(rig, QueuedErrors([]), err)
    got = the_error(error, BACK_MACS)
    assert got[IPv6].src == FAR, "from the destination, as for IPv4"
    assert (got[ICMPv6DestUnreach].type, got[ICMPv6DestUnreach].code) == (1, code)
    assert got[IPerror6][TCPerror].dport == 80


def test_a_refused_ipv6_connect_is_reset_and_gets_no_icmp(rig: Rig):
    sock = QueuedErrors([queued(1, 4, FAR)])
    (reset,) = fail(rig, sock, errno.ECONNREFUSED)
    frame = Ether(reset[VNET_HDR_LEN:])
    assert frame[TCP].flags == "RA" and frame[IPv6].dst == GUEST_TEXT
    assert ICMPv6DestUnreach not in frame


def test_an_ipv6_splice_never_gets_an_ipv4_error_even_without_an_ipv6_egress():
    """An egress with no IPv6 (no one to build an ICMPv6 error): a RST, never ICMP."""
    rig = Rig(gateway6=False)
    try:
        (reset,) = fail(rig, QueuedErrors([]), errno.EHOSTUNREACH)
        frame = Ether(reset[VNET_HDR_LEN:])
        assert frame.type == 0x86DD and frame[TCP].flags == "RA"
    finally:
        rig.close()


def test_a_syn_whose_offloads_do_not_add_up_is_reset_not_answered_with_icmpv6(rig: Rig):
    """NEEDS_CSUM with a checksum offset beyond the frame: no quote can be made of it; the
    connect's result (a loop callback) must not raise, and the guest gets a RST."""
    tcp = rig.egress.tcp
    flow = syn_flow(tcp, QueuedErrors([]))
    syn = bytearray(flow.splice.syn_packet or b"")
    syn[0] = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM
    struct.pack_into("<HH", syn, 6, 54, 4000)  # csum_start, csum_offset: far past the end
    flow.splice.syn_packet = bytes(syn)
    tcp._connect_result(flow, errno.EHOSTUNREACH)
    tcp._sync(flow)
    (reset,) = rig.out + rig.delivered
    assert Ether(reset[VNET_HDR_LEN:])[TCP].flags == "RA"
    assert rig.egress.counters["malformed6"] == 1


def test_a_failed_ipv4_connect_still_gets_icmp_host_unreachable(rig: Rig):
    sock = socket.socket()
    try:
        (error,) = fail(rig, sock, errno.EHOSTUNREACH, six=False)
    finally:
        sock.close()
    frame = Ether(error[VNET_HDR_LEN:])
    assert (frame[ICMP].type, frame[ICMP].code) == (3, 1) and frame[IP].src == "192.0.2.80"


# -- no host socket (Rule 8) -------------------------------------------------------------------

def no_sockets(monkeypatch: pytest.MonkeyPatch, err: int, family: int = socket.AF_INET6) -> None:
    """The host makes no sockets of ``family`` from now on (IPv6 disabled, no descriptors)."""
    real = socket.socket

    def refuse(fam: int = socket.AF_INET, *args: Any, **kw: Any) -> socket.socket:
        if fam == family:
            raise OSError(err, "refused by the test")
        return real(fam, *args, **kw)

    monkeypatch.setattr(socket, "socket", refuse)


@pytest.mark.parametrize("what", ["udp", "echo", "tcp"])
def test_a_flow_the_host_makes_no_ipv6_socket_for_is_answered_prohibited(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, what: str):
    """EAFNOSUPPORT (IPv6 off on the host) when a flow opens: counted, and the guest gets
    destination unreachable, administratively prohibited, from the gateway, quoting its
    packet; nothing raises into the guest port's reader, no flow is left behind."""
    v6 = rig.egress.v6
    assert v6 is not None
    v6.mode = "ping-socket"  # a socket per echo flow, whatever this host allows
    layers = {"udp": UDP(sport=5000, dport=53) / b"q",
              "echo": ICMPv6EchoRequest(id=7, seq=1, data=b"ping"),
              "tcp": TCP(sport=40000, dport=80, flags="S", seq=1000)}[what]
    frame = guest_frame(FAR, layers)
    no_sockets(monkeypatch, errno.EAFNOSUPPORT)
    for _ in range(2):  # each packet answered, as the rest of a batch would be
        assert v6.from_guest(frame, decode_ipv6(frame, L3), rig.loop.time())
    assert rig.egress.counters["socket6-errors-EAFNOSUPPORT"] == 2
    assert len(rig.out) == 2 and not rig.delivered
    got = the_error(rig.out[0], BACK_MACS)
    assert got[IPv6].src == GW_TEXT
    assert (got[ICMPv6DestUnreach].type, got[ICMPv6DestUnreach].code) == (1, 1)
    assert (got[IPerror6].src, got[IPerror6].dst) == (GUEST_TEXT, FAR), "the guest's packet"
    assert not v6.flows.udp and not v6.flows.echo and not rig.egress.tcp.flows
    assert len(rig.egress) == 0


def test_a_socket_that_cannot_be_set_up_is_closed_and_answered(
        rig: Rig, monkeypatch: pytest.MonkeyPatch):
    """Made, but its options refused (out of memory, say): closed, not leaked."""
    v6 = rig.egress.v6
    assert v6 is not None
    made: list[Any] = []

    class Unsettable(QueuedErrors):
        closed = False

        def setblocking(self, flag: bool) -> None:
            pass

        def setsockopt(self, level: int, name: int, value: int) -> None:
            raise OSError(errno.ENOMEM, "no memory")

        def close(self) -> None:
            self.closed = True

    def unsettable(*args: Any, **kw: Any) -> Unsettable:
        made.append(Unsettable([]))
        return made[-1]

    monkeypatch.setattr(socket, "socket", unsettable)
    for layers in (UDP(sport=5000, dport=53) / b"q",
                   TCP(sport=40000, dport=80, flags="S", seq=1000)):
        frame = guest_frame(FAR, layers)
        assert v6.from_guest(frame, decode_ipv6(frame, L3), rig.loop.time())
    assert len(made) == 2 and all(sock.closed for sock in made)
    assert rig.egress.counters["socket6-errors-ENOMEM"] == 2 and len(rig.out) == 2
    assert not v6.flows.udp and not rig.egress.tcp.flows


def test_an_ipv4_syn_the_host_makes_no_socket_for_gets_icmp_prohibited(
        rig: Rig, monkeypatch: pytest.MonkeyPatch):
    """The TCP adapter is shared: IPv4 as a full table answers (ICMP 3/13)."""
    syn = NO_OFFLOAD + bytes(Ether(src=GUEST_MAC, dst=GW_MAC)
                             / IP(src="10.0.2.15", dst="192.0.2.80")
                             / TCP(sport=40000, dport=80, flags="S", seq=1000))
    no_sockets(monkeypatch, errno.EMFILE, socket.AF_INET)
    rig.egress.from_guest(syn, rig.loop.time())
    assert rig.egress.counters["socket-errors-EMFILE"] == 1 and not rig.egress.tcp.flows
    (error,) = rig.out
    frame = Ether(error[VNET_HDR_LEN:])
    assert (frame[ICMP].type, frame[ICMP].code) == (3, 13) and frame[IP].src == "10.0.2.2"
