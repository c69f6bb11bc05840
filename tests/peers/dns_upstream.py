"""A tiny upstream DNS server for tests: logs every query, and can play a spoofer.

    python -m tests.peers.dns_upstream ADDRESS

Prints "QUERY <transport> <name> <type>" per query.  Names (all under example.test):
  www    A 203.0.113.7, AAAA 2001:db8::7, TTL 300
  big    60 A records: too big for 512 bytes of UDP, so clients must come back over TCP
  spoof  first two forged replies (wrong ID; right ID from another port) carrying
         198.51.100.66, then the genuine one with 198.51.100.1
  poison A 203.0.113.8 plus, in the additional section, an out-of-bailiwick A for
         www.bank.test (6.6.6.6, TTL 1 day) and an NS for bank.test in the authority section
  mangle a blind spoofer who guessed ID and port but not the DNS 0x20 case: first a reply from
         the right socket with the question lower-cased carrying 198.51.100.66, then the
         genuine one with 198.51.100.1; prints "SPELLED <name as received>"
  longttl A 203.0.113.9 with a TTL of 1,000,000 s (11.6 days)
  other names: NXDOMAIN
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import threading
import time

from dhcp.dnsmsg import (
    CLASS_IN,
    RCODE_NXDOMAIN,
    TYPE_AAAA,
    TYPE_NS,
    DnsMessage,
    Question,
    ResourceRecord,
    TcpFramer,
    a_record,
    aaaa_record,
    decode_message,
    encode_message,
    encode_tcp_frame,
    lower_name,
    name_from_text,
    name_to_text,
)

POISON = "www.bank.test"


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
    elif label in ("spoof", "mangle"):
        records = (a_record(q.name, "198.51.100.1", 300),)
    elif label == "longttl":
        records = (a_record(q.name, "203.0.113.9", 1_000_000),)
    elif label == "poison":
        ns = ResourceRecord(name_from_text("bank.test"), TYPE_NS, CLASS_IN, 86400,
                            b"\x02ns\x04evil\x04test\x00")
        return dataclasses.replace(
            query, qr=True, ra=True, answers=(a_record(q.name, "203.0.113.8", 300),),
            authority=(ns,), additional=(a_record(name_from_text(POISON), "6.6.6.6", 86400),))
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
        if name.startswith("mangle."):
            print(f"SPELLED {name_to_text(query.questions[0].name)}", flush=True)
            q = query.questions[0]
            blind = dataclasses.replace(answer(query, "198.51.100.66"),
                                        questions=(Question(lower_name(q.name), q.qtype,
                                                            q.qclass),))
            sock.sendto(encode_message(blind), client)
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
