"""A tiny upstream DNS server for tests: logs every query, and can play a spoofer.

    python -m tests.peers.dns_upstream ADDRESS

Prints "QUERY <transport> <name> <type>" per query.  Names (all under example.test):
  www    A 203.0.113.7, AAAA 2001:db8::7, TTL 300
  big    60 A records: too big for 512 bytes of UDP, so clients must come back over TCP
  spoof  first two forged replies (wrong ID; right ID from another port) carrying
         198.51.100.66, then the genuine one with 198.51.100.1
  other names: NXDOMAIN
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import threading
import time

from dhcp.dnsmsg import (
    RCODE_NXDOMAIN,
    TYPE_AAAA,
    DnsMessage,
    TcpFramer,
    a_record,
    aaaa_record,
    decode_message,
    encode_message,
    encode_tcp_frame,
    name_to_text,
)


def answer(query: DnsMessage, address: str | None = None) -> DnsMessage:
    q = query.questions[0]
    label = name_to_text(q.name).lower().rstrip(".").split(".")[0]
    if address is not None:
        records: tuple = (a_record(q.name, address, 300),)
    elif label == "www" and q.qtype == TYPE_AAAA:
        records = (aaaa_record(q.name, "2001:db8::7", 300),)
    elif label == "www":
        records = (a_record(q.name, "203.0.113.7", 300),)
    elif label.startswith("big"):
        records = tuple(a_record(q.name, f"203.0.113.{i}", 300) for i in range(1, 61))
    elif label == "spoof":
        records = (a_record(q.name, "198.51.100.1", 300),)
    else:
        return dataclasses.replace(query, qr=True, ra=True, rcode=RCODE_NXDOMAIN,
                                   additional=())
    return dataclasses.replace(query, qr=True, ra=True, answers=records, additional=())


def serve_udp(sock: socket.socket, liar: socket.socket) -> None:
    while True:
        data, client = sock.recvfrom(4096)
        query = decode_message(data)
        name = name_to_text(query.questions[0].name).lower()
        print(f"QUERY udp {name} {query.questions[0].qtype}", flush=True)
        if name.startswith("spoof."):
            forged = answer(query, "198.51.100.66")
            sock.sendto(encode_message(dataclasses.replace(forged, id=query.id ^ 0x5A5A)),
                        client)
            liar.sendto(encode_message(forged), client)
            time.sleep(0.2)
        sock.sendto(encode_message(answer(query)), client)


def serve_tcp(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        framer = TcpFramer()
        with conn:
            while data := conn.recv(4096):
                for message in framer.feed(data):
                    query = decode_message(message)
                    name = name_to_text(query.questions[0].name).lower()
                    print(f"QUERY tcp {name} {query.questions[0].qtype}", flush=True)
                    conn.sendall(encode_tcp_frame(encode_message(answer(query))))


def main() -> None:
    address = sys.argv[1]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((address, 53))
    liar = socket.socket(family, socket.SOCK_DGRAM)
    liar.bind((address, 0))
    tcp = socket.create_server((address, 53), family=family)
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    print("ready", flush=True)
    serve_udp(udp, liar)


if __name__ == "__main__":
    main()
