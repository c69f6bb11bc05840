"""The capture writers (wire/pcap.py) read back by tcpdump, tshark and scapy; the pcapng blocks
checked against the spec's layout (one whole block per write, lengths at both ends, 32-bit
padding); and a pcapng streamed through a pipe to ``tcpdump -r -``, packet by packet."""

from __future__ import annotations

import io
import selectors
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import PcapNgReader, rdpcap

from tests.conftest import require
from wire.pcap import SNAPLEN, PcapngWriter, PcapWriter

FRAMES = [
    bytes(Ether(src="52:54:00:00:00:01") / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53)),
    bytes(Ether(src="52:54:00:00:00:02") / ARP(psrc="10.0.0.2", pdst="10.0.0.1")),
    bytes(Ether() / IP(src="10.0.0.2", dst="8.8.8.8") / TCP(dport=443) / (b"x" * 1001)),
    bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.3") / ICMP()),
]
TIMES = [1700000000.000001, 1700000000.5, 1700000001.999999, 1700000002.25]


def run(*command: str, stdin: bytes | None = None) -> str:
    require(shutil.which(command[0]) is not None, f"{command[0]} is not installed")
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def pcapng(path: Path) -> None:
    """Three capture points, the third added after packets were written."""
    with path.open("wb") as stream:
        writer = PcapngWriter(stream)
        vm1 = writer.add_interface("vm1", "guest one")
        vm2 = writer.add_interface("vm2")
        writer.write(vm1, TIMES[0], FRAMES[0], "vm1 rx")
        writer.write(vm2, TIMES[1], FRAMES[1], "vm2 tx")
        late = writer.add_interface("uplink-é")
        writer.write(late, TIMES[2], FRAMES[2], "uplink tx, ünïcode")
        writer.write(vm1, TIMES[3], FRAMES[3])  # no comment: no option at all


def test_pcap_reads_back_in_tcpdump_tshark_and_scapy(tmp_path):
    path = tmp_path / "c.pcap"
    with path.open("wb") as stream:
        writer = PcapWriter(stream)
        for when, frame in zip(TIMES, FRAMES, strict=True):
            writer.write(when, frame)
    lines = run("tcpdump", "-r", str(path), "-n", "-tt").splitlines()
    assert [line.split()[0] for line in lines] == [f"{t:.6f}" for t in TIMES]
    assert "IP 10.0.0.1.53 > 10.0.0.2.53" in lines[0]
    assert "ARP, Request who-has 10.0.0.1 tell 10.0.0.2" in lines[1]
    assert "10.0.0.2.20 > 8.8.8.8.443" in lines[2] and "ICMP echo request" in lines[3]
    fields = run("tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                 "-e", "frame.len", "-e", "frame.cap_len").splitlines()
    assert [line.split("\t") for line in fields] == [
        [f"{t:.6f}000", str(len(f)), str(len(f))] for t, f in zip(TIMES, FRAMES, strict=True)]
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == FRAMES
    assert [round(float(p.time), 6) for p in packets] == TIMES


def test_pcap_header_and_a_frame_beyond_the_snapshot_length():
    stream = io.BytesIO()
    writer = PcapWriter(stream)
    writer.write(2.5, bytes(SNAPLEN + 10))
    data = stream.getvalue()
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1)
    assert struct.unpack_from("<IIII", data, 24) == (2, 500000, SNAPLEN, SNAPLEN + 10)
    assert len(data) == 24 + 16 + SNAPLEN


def test_pcapng_reads_back_in_tcpdump_tshark_and_scapy(tmp_path):
    path = tmp_path / "c.pcapng"
    pcapng(path)
    lines = run("tcpdump", "-r", str(path), "-n", "-tt").splitlines()
    assert [line.split()[0] for line in lines] == [f"{t:.6f}" for t in TIMES]
    assert "10.0.0.2.20 > 8.8.8.8.443" in lines[2]
    fields = run("tshark", "-r", str(path), "-T", "fields", "-E", "separator=|",
                 "-e", "frame.interface_id", "-e", "frame.interface_name",
                 "-e", "frame.interface_description", "-e", "frame.comment",
                 "-e", "frame.time_epoch", "-e", "frame.len").splitlines()
    assert [line.split("|") for line in fields] == [
        ["0", "vm1", "guest one", "vm1 rx", f"{TIMES[0]:.6f}000", str(len(FRAMES[0]))],
        ["1", "vm2", "", "vm2 tx", f"{TIMES[1]:.6f}000", str(len(FRAMES[1]))],
        ["2", "uplink-é", "", "uplink tx, ünïcode", f"{TIMES[2]:.6f}000", str(len(FRAMES[2]))],
        ["0", "vm1", "guest one", "", f"{TIMES[3]:.6f}000", str(len(FRAMES[3]))],
    ]
    packets = list(PcapNgReader(str(path)))
    assert [bytes(p) for p in packets] == FRAMES
    assert [p.comment for p in packets] == [b"vm1 rx", b"vm2 tx",
                                            "uplink tx, ünïcode".encode(), None]
    assert [p.sniffed_on for p in packets] == ["vm1", "vm2", "uplink-é", "vm1"]
    assert [round(float(p.time), 6) for p in packets] == TIMES


class Writes:
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 61])
def test_each_write_is_one_whole_padded_block(size):
    stream = Writes()
    writer = PcapngWriter(stream)
    writer.add_interface("p" * size, "d" * (size // 2))
    writer.write(0, 1.0, bytes(size), "c" * size or None)
    types = []
    for block in stream.writes:
        kind, length = struct.unpack_from("<II", block)
        assert length == len(block) and length % 4 == 0
        assert struct.unpack_from("<I", block, length - 4) == (length,)
        types.append(kind)
    assert types == [0x0A0D0D0A, 1, 6]
    shb, idb, epb = stream.writes
    assert struct.unpack_from("<IHHq", shb, 8) == (0x1A2B3C4D, 1, 0, -1)
    assert struct.unpack_from("<HHI", idb, 8) == (1, 0, SNAPLEN)
    assert struct.unpack_from("<IIIII", epb, 8) == (0, 0, 1_000_000, size, size)
    options = epb[28 + size + (-size % 4):-4]
    if size:  # opt_comment, padded, then opt_endofopt
        assert options == struct.pack("<HH", 1, size) + b"c" * size + bytes(-size % 4) \
            + bytes(4)
    else:
        assert options == b""


def test_a_packet_on_an_interface_never_described_is_refused():
    writer = PcapngWriter(io.BytesIO())
    with pytest.raises(ValueError, match="interface 0 was not added"):
        writer.write(0, 1.0, FRAMES[0])
    writer.add_interface("vm1")
    with pytest.raises(ValueError, match="interface 1 was not added"):
        writer.write(1, 1.0, FRAMES[0])


def test_tcpdump_reads_a_pcapng_stream_packet_by_packet_through_a_pipe():
    require(shutil.which("tcpdump") is not None, "tcpdump is not installed")
    reader = subprocess.Popen(["tcpdump", "-r", "-", "-n", "-tt", "-l"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert reader.stdin is not None and reader.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(reader.stdout, selectors.EVENT_READ)

    def next_line() -> str:
        assert selector.select(timeout=5), "tcpdump printed nothing for a written packet"
        return reader.stdout.readline().decode()  # type: ignore[union-attr]

    try:
        writer = PcapngWriter(reader.stdin)
        vm1 = writer.add_interface("vm1")
        writer.write(vm1, TIMES[0], FRAMES[0], "vm1 rx")
        reader.stdin.flush()
        # Seen while the stream is still open: every write was a whole block.
        assert next_line().startswith(f"{TIMES[0]:.6f} IP 10.0.0.1.53 > 10.0.0.2.53")
        vm2 = writer.add_interface("vm2")
        writer.write(vm2, TIMES[1], FRAMES[1], "vm2 tx")
        reader.stdin.flush()
        assert next_line().startswith(f"{TIMES[1]:.6f} ARP, Request who-has 10.0.0.1")
        writer.write(vm1, TIMES[3], FRAMES[3])
        reader.stdin.close()
        assert "ICMP echo request" in next_line()
        assert reader.wait(timeout=5) == 0
    finally:
        selector.close()
        if reader.poll() is None:
            reader.kill()
            reader.wait()
