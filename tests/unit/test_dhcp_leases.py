"""The lease table and the lease file: expiry order, atomic saves, corrupt files kept aside."""

import json
import os

import pytest

from dhcp.leases import (
    Lease,
    LeaseFileError,
    LeaseState,
    LeaseTable,
    append_leases,
    compact_after,
    decode_lease,
    encode_lease,
    hostname_label,
    load_leases,
    quarantine,
    save_leases,
)

NOW = 1_700_000_000.0
IP = 0xC0A87A0A  # 192.168.122.10


def lease(n: int = 0, *, expires: float = NOW + 3600, state=LeaseState.BOUND,
          client: bytes | None = None, hostname: str = "guest") -> Lease:
    mac = bytes([0x52, 0x54, 0, 0, 0, n])
    return Lease(IP + n, b"\x01" + mac if client is None else client, mac, hostname,
                 expires, state)


def test_one_lease_per_client_and_per_address():
    table = LeaseTable()
    table.put(lease(0))
    moved = Lease(IP + 5, lease(0).client, lease(0).mac, "guest", NOW + 10, LeaseState.BOUND)
    table.put(moved)
    assert len(table) == 1 and table.by_ip(IP) is None, "a client holds one address"
    assert table.by_client(moved.client) == moved
    taker = lease(1, client=b"\x01other")
    table.put(Lease(IP + 5, taker.client, taker.mac, "", NOW, LeaseState.OFFERED))
    assert table.by_client(moved.client) is None, "the address went to another client"


def test_expiry_in_deadline_order_with_renewals():
    table = LeaseTable()
    table.put(lease(0, expires=NOW + 10))
    table.put(lease(1, expires=NOW + 20))
    table.put(lease(0, expires=NOW + 30))  # renewed: the old deadline is stale
    assert table.next_deadline() == NOW + 20
    assert [x.ip for x in table.expire(NOW + 25)] == [IP + 1]
    assert table.next_deadline() == NOW + 30
    assert table.expire(NOW + 29) == []
    assert [x.ip for x in table.expire(NOW + 30)] == [IP]
    assert table.next_deadline() is None and len(table) == 0


def test_many_renewals_keep_the_deadline_heap_small():
    table = LeaseTable()
    for i in range(10000):
        table.put(lease(0, expires=NOW + i))
    assert len(table._deadlines) < 200
    assert table.next_deadline() == NOW + 9999


def test_declined_entries_have_no_owner():
    table = LeaseTable()
    table.put(lease(0, client=b"", state=LeaseState.DECLINED))
    assert table.by_client(b"") is None and table.by_ip(IP) is not None


@pytest.mark.parametrize("raw, label", [
    (b"guest", "guest"), (b"My_Laptop.example.com", "my-laptop"), (b"--x--", "x"),
    (b"a" * 80, "a" * 63), (b"\xff\xfe", ""), (b"web server 01", "web-server-01"),
    ("a" * 62 + "-b", "a" * 62),
])
def test_hostname_label(raw, label):
    assert hostname_label(raw) == label


def test_lease_line_round_trip():
    for state in LeaseState:
        original = lease(3, state=state)
        assert decode_lease(encode_lease(original)) == original


def test_save_and_load(tmp_path):
    path = tmp_path / "leases.jsonl"
    leases = [lease(0), lease(1, state=LeaseState.DECLINED, client=b"", hostname=""),
              lease(2, state=LeaseState.OFFERED), lease(3, expires=NOW - 1)]
    save_leases(path, leases)
    assert os.listdir(tmp_path) == ["leases.jsonl"], "no temporary file is left behind"
    assert len(path.read_text().splitlines()) == 3, "offers are not saved"
    loaded = load_leases(path, NOW)
    assert loaded == leases[:2], "the lease that has ended is dropped at load"


def test_save_replaces_the_file_and_missing_file_is_empty(tmp_path):
    path = tmp_path / "leases.jsonl"
    assert load_leases(path, NOW) == []
    save_leases(path, [lease(0)])
    inode = path.stat().st_ino
    save_leases(path, [lease(1)])
    assert path.stat().st_ino != inode, "replaced by rename, never rewritten in place"
    assert load_leases(path, NOW) == [lease(1)]


@pytest.mark.parametrize("bad_line, why", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"ip": "192.168.122.10"}', "missing"),
    (None, "ip"),
    (None, "expires"),
    (None, "hostname"),
    (None, "state"),
])
def test_corrupt_file_names_file_and_line(tmp_path, bad_line, why):
    good = encode_lease(lease(0))
    if bad_line is None:
        obj = json.loads(good)
        obj[why] = {"ip": "300.1.2.3", "expires": "soon", "hostname": "Not A Label",
                    "state": "lost"}[why]
        bad_line = json.dumps(obj)
    path = tmp_path / "leases.jsonl"
    path.write_text(good + "\n\n" + bad_line + "\n")
    with pytest.raises(LeaseFileError) as info:
        load_leases(path, NOW)
    assert info.value.path == path and info.value.line == 3
    assert f"{path}:3:" in str(info.value) and why.split()[0] in str(info.value)


def test_quarantine_keeps_the_bytes_and_never_overwrites(tmp_path):
    path = tmp_path / "leases.jsonl"
    junk = b"\x00\xffnot a lease file\n"
    path.write_bytes(junk)
    with pytest.raises(LeaseFileError):
        load_leases(path, NOW)
    first = quarantine(path, when=NOW)
    assert not path.exists() and first.read_bytes() == junk
    assert first.name == "leases.jsonl.corrupt-20231114T221320Z"
    path.write_bytes(b"again")
    second = quarantine(path, when=NOW)
    assert second != first and second.read_bytes() == b"again" and first.read_bytes() == junk
    assert load_leases(path, NOW) == [], "the daemon then starts with an empty table"


def _lease(ip: int, name: str, expires: float) -> Lease:
    return Lease(ip=ip, client=b"\x01" + name.encode(), mac=bytes(6), hostname=name,
                 expires=expires, state=LeaseState.BOUND)


def test_journal_appends_frees_and_later_lines_win(tmp_path):
    path = tmp_path / "leases"
    a, b = _lease(0x0A000005, "a", 500.0), _lease(0x0A000006, "b", 500.0)
    assert append_leases(path, [a, b], []) == 2
    renewed = _lease(a.ip, "a", 900.0)
    assert append_leases(path, [renewed], [b.ip]) == 2
    assert load_leases(path, now=100.0) == [renewed], "the renewal wins, b was freed"
    assert compact_after(10) == 1000 and compact_after(800) == 1600


def test_a_torn_last_line_is_ignored_but_a_broken_middle_line_is_corruption(tmp_path):
    path = tmp_path / "leases"
    a = _lease(0x0A000005, "a", 500.0)
    append_leases(path, [a], [])
    with path.open("a") as f:
        f.write('{"ip": "10.0.0.6", "mac"')  # the crash came in the middle of an append
    assert load_leases(path, now=100.0) == [a]
    with path.open("a") as f:
        f.write("\n")  # that broken line is now followed by more: it is corruption
    with pytest.raises(LeaseFileError):
        load_leases(path, now=100.0)


def test_dhcpv6_leases_share_the_journal_and_come_back_apart_from_ipv4(tmp_path):
    from ipaddress import IPv6Address

    from dhcp.leases import Lease, LeaseState, append_leases, load_leases

    path = tmp_path / "leases"
    v4 = Lease(0x0A000005, b"\x01abc", bytes(6), "four", 5000.0, LeaseState.BOUND)
    v6 = Lease(int(IPv6Address("fd42::150")), b"6duid\x00\x00\x00\x01", bytes(6), "six",
               5000.0, LeaseState.BOUND)
    append_leases(path, [v4, v6], [])
    assert '"ip": "fd42::150"' in path.read_text()
    back = sorted(load_leases(path, 0.0), key=lambda x: x.ip)
    assert back == [v4, v6] and back[1].ip >= 1 << 32
    append_leases(path, [], [v6.ip])
    assert load_leases(path, 0.0) == [v4]
