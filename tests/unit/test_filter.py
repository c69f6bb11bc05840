"""The trace filter (wire/filter.py) against tcpdump itself: a few hundred varied frames built with
scapy go into a pcap (wire/pcap.py), and for each expression the frames tcpdump prints must be
the frames the predicate matches. Then VLAN tags, fragments, bad input (hypothesis: never raises,
``not X`` is the complement of ``X``) and the error messages.

Each frame's timestamp is its index in the file, so ``tcpdump -tt`` names the frames it matched.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from tests.conftest import require
from wire.filter import FilterError, compile_filter
from wire.pcap import PcapWriter

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.1.7", "192.168.122.1", "192.168.122.10", "8.8.8.8"]
PORTS = [22, 53, 67, 68, 80, 443, 8080]
MACS = ["52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:0a:0b:0c", "ff:ff:ff:ff:ff:ff"]

#: Compared with tcpdump on untagged frames; the first ones also on tagged frames.
EXPRESSIONS = [
    "host 10.0.0.1", "src host 10.0.0.2", "dst host 192.168.122.10", "net 10.0.0.0/16",
    "src net 192.168.122.0/24", "dst net 10.0.0.0/8", "port 53", "src port 80",
    "dst port 443", "ether host 52:54:00:00:00:01", "ether src 52:54:00:0A:0B:0C",
    "ether dst ff:ff:ff:ff:ff:ff", "arp", "ip", "icmp", "tcp", "udp", "not ip",
    "tcp port 80", "udp dst port 53", "ip src host 10.0.0.1", "arp dst host 10.0.0.2",
    "! tcp && host 10.0.0.1", "arp or icmp", "host 10.0.0.1 and (port 22 or port 80)",
    "not (tcp or udp) and net 10.0.0.0/8",
    "port 53 or port 67 and udp",  # and/or: one precedence, from the left, as tcpdump
    "tcp or udp and host 8.8.8.8", "not not arp or ether src host 52:54:00:00:00:02",
]
TAGGED_EXPRESSIONS = EXPRESSIONS[:10] + ["tcp or udp and host 8.8.8.8", "not ip"]


def random_frame(rng: random.Random) -> bytes:
    """One frame of a kind tcpdump and the filter both read: ARP, TCP, UDP, ICMP (echo and
    errors quoting a datagram), IP options, fragments, bad checksums, other protocols."""
    ether = Ether(src=rng.choice(MACS[:3]), dst=rng.choice(MACS))
    src, dst = rng.choice(HOSTS), rng.choice(HOSTS)
    sport, dport = rng.choice(PORTS), rng.choice(PORTS + [rng.randrange(65536)])
    kind = rng.randrange(10)
    if kind == 0:
        return bytes(ether / ARP(op=rng.choice([1, 2]), psrc=src, pdst=dst, hwsrc=ether.src))
    if kind == 1:  # not IP at all: LLDP's type with junk
        ether.type = 0x88CC
        return bytes(ether / Raw(bytes(40)))
    ip = IP(src=src, dst=dst, id=rng.randrange(65536))
    if kind == 2:
        ip.options = [b"\x01\x01\x01\x00"]  # NOP NOP NOP EOL: the ports move 4 bytes on
    if kind == 3:
        # A later fragment whose data looks like ports: it must not match "port"
        later = IP(src=src, dst=dst, proto=rng.choice([6, 17]), frag=rng.randrange(1, 99),
                   flags=rng.choice([0, 1]))
        return bytes(ether / later / Raw(bytes([0, 53, 0, 80]) * 4))
    if kind == 4:
        ip.flags = "MF"  # a first fragment: its ports match
    if kind == 5:
        quoted = bytes(IP(src=dst, dst=src) / UDP(sport=sport, dport=dport))
        return bytes(ether / ip / ICMP(type=3, code=3) / Raw(quoted))
    if kind == 6:
        return bytes(ether / ip / ICMP(id=sport, seq=dport))
    if kind == 7:
        ip.chksum = 0x1234  # tcpdump filters on a bad checksum too, and so must a trace
    if kind == 8 and rng.random() < 0.3:
        return bytes(ether / IP(src=src, dst=dst, proto=47) / Raw(bytes([0, 53, 0, 80])))
    l4 = TCP(sport=sport, dport=dport) if rng.random() < 0.5 else UDP(sport=sport, dport=dport)
    return bytes(ether / ip / l4 / Raw(b"x" * rng.randrange(20)))


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    rng = random.Random(1)
    return [random_frame(rng) for _ in range(300)]


def tagged(frame: bytes, tags: list[int]) -> bytes:
    """``frame`` with VLAN tags (802.1ad then 802.1Q, outermost first) after its MACs."""
    packet = Ether(frame)
    inner = packet.payload
    for i, vid in reversed(list(enumerate(tags))):
        inner = (Dot1AD if i == 0 and len(tags) > 1 else Dot1Q)(vlan=vid) / inner
    return bytes(Ether(src=packet.src, dst=packet.dst) / inner)


def write_pcap(path: Path, frames: list[bytes]) -> None:
    with path.open("wb") as stream:
        writer = PcapWriter(stream)
        for index, frame in enumerate(frames):
            writer.write(float(index), frame)


def tcpdump_matches(path: Path, expressions: list[str]) -> list[set[int]]:
    """For each expression, the indexes of the frames tcpdump prints (all run at once)."""
    require(shutil.which("tcpdump") is not None, "tcpdump is not installed")
    runs = [subprocess.Popen(["tcpdump", "-r", str(path), "-n", "-tt", "-q", expression],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for expression in expressions]
    found = []
    for expression, run in zip(expressions, runs, strict=True):
        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, (expression, err)
        found.append({int(line.split(".", 1)[0]) for line in out.splitlines()})
    return found


def test_the_predicates_match_the_frames_tcpdump_matches(corpus, tmp_path):
    write_pcap(tmp_path / "plain.pcap", corpus)
    for expression, expected in zip(EXPRESSIONS, tcpdump_matches(tmp_path / "plain.pcap",
                                                                 EXPRESSIONS), strict=True):
        match = compile_filter(expression)
        assert {i for i, frame in enumerate(corpus) if match(frame)} == expected, expression
        assert 0 < len(expected) < len(corpus) or expression == "ip", expression  # discerning


def test_vlan_tags_are_looked_through_as_tcpdump_vlan_and_does(corpus, tmp_path):
    frames = [tagged(frame, [7]) for frame in corpus[:120]]
    write_pcap(tmp_path / "tagged.pcap", frames)
    found = tcpdump_matches(tmp_path / "tagged.pcap",
                            [f"vlan and ({expression})" for expression in TAGGED_EXPRESSIONS])
    for expression, expected in zip(TAGGED_EXPRESSIONS, found, strict=True):
        match = compile_filter(expression)
        assert {i for i, frame in enumerate(frames) if match(frame)} == expected, expression


@pytest.mark.parametrize("tags", [[5], [100, 5], [1, 2, 3, 4]])
def test_up_to_four_tags_change_nothing_a_fifth_hides_the_packet(corpus, tags):
    matches = [compile_filter(expression) for expression in EXPRESSIONS]
    for frame in corpus[:40]:
        wrapped = tagged(frame, tags)
        assert [m(wrapped) for m in matches] == [m(frame) for m in matches]
    frame = bytes(Ether(src=MACS[0]) / IP(src=HOSTS[0]) / UDP(dport=53))
    five = tagged(frame, [1, 2, 3, 4, 5])
    assert not compile_filter("ip or host 10.0.0.1 or port 53")(five)
    assert compile_filter(f"ether src {MACS[0]} and not ip")(five)


def test_port_matches_the_first_fragment_only():
    first = bytes(Ether() / IP(flags="MF", proto=17) / UDP(sport=1000, dport=53))
    later = bytes(Ether() / IP(frag=2, proto=17) / Raw(bytes([0, 53, 0, 53])))
    port, udp = compile_filter("port 53"), compile_filter("udp")
    assert (port(first), port(later), udp(first), udp(later)) == (True, False, True, True)


def test_empty_filter_matches_everything_and_keywords_ignore_case():
    for text in ("", "   \t"):
        assert compile_filter(text)(b"") and compile_filter(text)(b"\x00" * 60)
    frame = bytes(Ether() / IP(dst="10.0.0.1") / TCP(dport=22))
    assert compile_filter("TCP AND Dst Port 22 && HOST 10.0.0.1")(frame)


def test_what_a_primitive_cannot_read_does_not_match_and_not_of_it_does():
    frame = bytes(Ether() / IP(dst="10.0.0.1") / TCP(dport=22))
    for cut in (0, 5, 13, 14, 20, 33, 34, 35):
        assert not compile_filter("port 22")(frame[:cut])
        assert compile_filter("not port 22")(frame[:cut])
    assert compile_filter("host 10.0.0.1")(frame[:34]) and not compile_filter("ip")(frame[:13])
    assert not compile_filter("arp host 0.0.0.0")(bytes(Ether() / ARP())[:30])  # truncated ARP


def frames() -> st.SearchStrategy[bytes]:
    """Random bytes, and real frames cut short or with a byte changed (more reach the L4)."""
    rng = random.Random(2)
    real = [random_frame(rng) for _ in range(30)]
    damaged = st.tuples(st.sampled_from(real), st.integers(0, 80), st.integers(0, 255),
                        st.integers(0, 200)).map(
        lambda t: (t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])[:t[3]])
    return st.one_of(st.binary(max_size=120), damaged)


PROPERTY_FILTERS = [compile_filter(text) for text in EXPRESSIONS[:20]]
PROPERTY_NEGATED = [compile_filter(f"not ({text})") for text in EXPRESSIONS[:20]]


@settings(max_examples=300, deadline=None)
@given(frames())
def test_never_raises_and_not_is_the_complement(frame):
    for match, negated in zip(PROPERTY_FILTERS, PROPERTY_NEGATED, strict=True):
        assert match(frame) is not negated(frame)


@pytest.mark.parametrize(("text", "message"), [
    ("port http",
     'filter: expected a port number (0-65535) after "port" at column 6, got "http"'),
    ("port 65536",
     'filter: expected a port number (0-65535) after "port" at column 6, got "65536"'),
    ("tcp and host",
     'filter: expected an IPv4 address after "host" at column 13, got the end of the filter'),
    ("host 10.0.0.256",
     'filter: expected an IPv4 address after "host" at column 6, got "10.0.0.256"'),
    ("net 10.0.0.1/8", 'filter: expected a network like 10.0.0.0/8 (address/prefix length, '
     'no host bits set) after "net" at column 5, got "10.0.0.1/8"'),
    ("net 10.0.0.0/33", 'filter: expected a network like 10.0.0.0/8 (address/prefix length, '
     'no host bits set) after "net" at column 5, got "10.0.0.0/33"'),
    ("ether src 52:54:00:12:34", 'filter: expected a MAC address (like 52:54:00:12:34:56) '
     'after "src" at column 11, got "52:54:00:12:34"'),
    ("ether 52:54:00:12:34:56", 'filter: expected "host", "src" or "dst" after "ether" at '
     'column 7, got "52:54:00:12:34:56"'),
    ("src 10.0.0.1", 'filter: expected "host", "net" or "port" after "src" at column 5, '
     'got "10.0.0.1"'),
    ("udp src host 10.0.0.1",
     'filter: expected "port" after "src" at column 9, got "host"'),
    ("host 10.0.0.1 or 10.0.0.2", 'filter: expected a primitive (host, net, port, ether, ip, '
     'arp, tcp, udp, icmp), "not" or "(" after "or" at column 18, got "10.0.0.2"'),
    ("tcp udp", 'filter: expected "and", "or" or the end of the filter after "tcp" at '
     'column 5, got "udp"'),
    ("(tcp or udp", 'filter: expected "and", "or" or ")" after "udp" at column 12, got the '
     'end of the filter'),
    ("tcp)", 'filter: expected "and", "or" or the end of the filter after "tcp" at column 4, '
     'got ")"'),
    ("tcp & udp", 'filter: expected an operator ("&&", "||", "!"), a word or a parenthesis '
     'after "tcp" at column 5, got "&"'),
    ("not", 'filter: expected a primitive (host, net, port, ether, ip, arp, tcp, udp, icmp), '
     '"not" or "(" after "not" at column 4, got the end of the filter'),
    ("vlan", 'filter: expected a primitive (host, net, port, ether, ip, arp, tcp, udp, icmp), '
     '"not" or "(" at column 1, got "vlan"'),
])
def test_a_malformed_filter_names_the_token_its_column_and_what_was_expected(text, message):
    with pytest.raises(FilterError) as raised:
        compile_filter(text)
    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)
