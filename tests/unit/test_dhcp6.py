"""The DHCPv6 server core (dhcp.dhcp6) with messages scapy builds and reads (RFC 8415)."""

from ipaddress import IPv6Address

import pytest
from scapy.layers.dhcp6 import (
    DHCP6,
    DUID_LL,
    DUID_LLT,
    DHCP6_Advertise,
    DHCP6_Confirm,
    DHCP6_Decline,
    DHCP6_InfoRequest,
    DHCP6_Rebind,
    DHCP6_Release,
    DHCP6_Renew,
    DHCP6_Request,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptRapidCommit,
    DHCP6OptServerId,
    DHCP6OptStatusCode,
)

from dhcp.dhcp6 import Dhcp6Config, Dhcp6Server

GW_MAC = bytes.fromhex("525400000001")
A_MAC, STATIC_MAC = bytes.fromhex("525400000010"), bytes.fromhex("525400000066")
FIRST, LAST = int(IPv6Address("fd42::100")), int(IPv6Address("fd42::1ff"))
STATIC = int(IPv6Address("fd42::66"))


def server(**kw) -> Dhcp6Server:
    config = Dhcp6Config(GW_MAC, IPv6Address("fd42::1").packed, FIRST, LAST,
                         int(IPv6Address("fd42::")), 64, {STATIC_MAC: STATIC},
                         domain="six.internal", **kw)
    return Dhcp6Server(config)


def client_id(mac: str = "52:54:00:00:00:10"):
    return DHCP6OptClientId(duid=DUID_LL(lladdr=mac))


def ask(srv: Dhcp6Server, message, mac: bytes = A_MAC, now: float = 0.0):
    answer = srv.handle(bytes(message), mac, now)
    return None if answer is None else DHCP6(answer)


def address_of(reply) -> str:
    return reply[DHCP6OptIAAddress].addr


def test_solicit_request_renew_release_give_and_take_back_a_pool_address():
    srv = server()
    adv = ask(srv, DHCP6_Solicit(trid=5) / client_id() / DHCP6OptIA_NA(iaid=7))
    assert adv.msgtype == 2 and adv.trid == 5  # ADVERTISE
    offered = address_of(adv)
    assert FIRST <= int(IPv6Address(offered)) <= LAST
    assert adv[DHCP6OptDNSServers].dnsservers == ["fd42::1"]
    assert adv[DHCP6OptDNSDomains].dnsdomains == ["six.internal."]
    sid = adv[DHCP6OptServerId].duid
    reply = ask(srv, DHCP6_Request(trid=6) / client_id() / DHCP6OptServerId(duid=sid)
                / DHCP6OptIA_NA(iaid=7, ianaopts=[DHCP6OptIAAddress(addr=offered)]))
    assert reply.msgtype == 7 and address_of(reply) == offered  # REPLY
    assert reply[DHCP6OptIAAddress].validlft == 3600 and reply[DHCP6OptIA_NA].T1 == 1800
    assert [str(IPv6Address(x.ip)) for x in srv.leases()] == [offered]
    renewed = ask(srv, DHCP6_Renew(trid=7) / client_id() / DHCP6OptServerId(duid=sid)
                  / DHCP6OptIA_NA(iaid=7, ianaopts=[DHCP6OptIAAddress(addr=offered)]),
                  now=1000.0)
    assert address_of(renewed) == offered and srv.leases()[0].expires == 4600.0
    done = ask(srv, DHCP6_Release(trid=8) / client_id() / DHCP6OptServerId(duid=sid)
               / DHCP6OptIA_NA(iaid=7, ianaopts=[DHCP6OptIAAddress(addr=offered)]))
    assert done[DHCP6OptStatusCode].statuscode == 0 and srv.leases() == []


def test_rapid_commit_binds_at_once_and_the_same_client_gets_the_same_address():
    srv = server()
    first = ask(srv, DHCP6_Solicit() / client_id() / DHCP6OptRapidCommit() / DHCP6OptIA_NA(iaid=1))
    assert first.msgtype == 7 and DHCP6OptRapidCommit in first
    again = ask(srv, DHCP6_Solicit() / client_id() / DHCP6OptRapidCommit() / DHCP6OptIA_NA(iaid=1))
    assert address_of(again) == address_of(first) and len(srv.leases()) == 1


def test_a_static_host_gets_its_ip6_by_source_mac_or_by_duid():
    srv = server()
    by_mac = ask(srv, DHCP6_Solicit() / client_id("02:00:00:00:00:99") / DHCP6OptIA_NA(iaid=1),
                 mac=STATIC_MAC)
    assert address_of(by_mac) == "fd42::66"
    srv = server()
    by_duid = ask(srv, DHCP6_Solicit() / DHCP6OptClientId(duid=DUID_LLT(
        lladdr="52:54:00:00:00:66", timeval=1)) / DHCP6OptIA_NA(iaid=1), mac=A_MAC)
    assert address_of(by_duid) == "fd42::66"


def test_renew_of_an_unknown_binding_and_rebind_of_a_foreign_address():
    srv = server()
    sid = DHCP6OptServerId(duid=srv.duid)
    renew = ask(srv, DHCP6_Renew() / client_id() / sid / DHCP6OptIA_NA(
        iaid=3, ianaopts=[DHCP6OptIAAddress(addr="fd42::150")]))
    assert renew[DHCP6OptStatusCode].statuscode == 3  # NoBinding
    rebind = ask(srv, DHCP6_Rebind() / client_id() / DHCP6OptIA_NA(
        iaid=3, ianaopts=[DHCP6OptIAAddress(addr="2001:db8::5")]))
    assert rebind[DHCP6OptIAAddress].validlft == 0


def test_decline_quarantines_confirm_checks_the_link_info_request_gets_dns():
    srv = server()
    got = ask(srv, DHCP6_Solicit() / client_id() / DHCP6OptRapidCommit() / DHCP6OptIA_NA(iaid=1))
    address = address_of(got)
    sid = DHCP6OptServerId(duid=srv.duid)
    ask(srv, DHCP6_Decline() / client_id() / sid / DHCP6OptIA_NA(
        iaid=1, ianaopts=[DHCP6OptIAAddress(addr=address)]))
    other = ask(srv, DHCP6_Solicit() / client_id("52:54:00:00:00:11") / DHCP6OptRapidCommit()
                / DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr=address)]),
                mac=bytes.fromhex("525400000011"))
    assert address_of(other) != address  # quarantined
    on = ask(srv, DHCP6_Confirm() / client_id() / DHCP6OptIA_NA(
        iaid=1, ianaopts=[DHCP6OptIAAddress(addr="fd42::123")]))
    off = ask(srv, DHCP6_Confirm() / client_id() / DHCP6OptIA_NA(
        iaid=1, ianaopts=[DHCP6OptIAAddress(addr="2001:db8::1")]))
    assert on[DHCP6OptStatusCode].statuscode == 0 and off[DHCP6OptStatusCode].statuscode == 4
    info = ask(srv, DHCP6_InfoRequest() / client_id())
    assert info[DHCP6OptDNSServers].dnsservers == ["fd42::1"] and DHCP6OptIA_NA not in info


@pytest.mark.parametrize("message, counter", [
    (DHCP6_Solicit() / DHCP6OptIA_NA(iaid=1), "no-client-id"),
    (DHCP6_Request() / client_id() / DHCP6OptServerId(duid=DUID_LL(lladdr="02:00:00:00:00:01"))
     / DHCP6OptIA_NA(iaid=1), "not-our-server-id"),
    (DHCP6_Solicit() / client_id() / DHCP6OptServerId(duid=DUID_LL(lladdr="02:00:00:00:00:01")),
     "server-id-not-allowed"),
    (DHCP6_Advertise() / client_id(), "not-a-client-message"),
])
def test_messages_without_the_right_ids_are_counted_and_dropped(message, counter):
    srv = server()
    assert ask(srv, message) is None and srv.counters[counter] == 1


@pytest.mark.parametrize("raw, says", [
    (b"\x01\x00\x00", "shorter than its header"),
    (b"\x01\x00\x00\x01\x00\x01\x00\x20\x00\x03", "overruns"),
    (b"\x01\x00\x00\x01" + bytes(DHCP6OptIA_NA(iaid=1))[:4] + b"\x00\x00", "overruns"),
    (b"\x01\x00\x00\x01" + bytes(client_id()) * 2, "repeated"),
])
def test_malformed_messages_are_counted_never_raised(raw, says):
    srv = server()
    assert srv.handle(raw, A_MAC, 0.0) is None
    assert any(says in k for k in srv.counters), srv.counters


def test_a_full_range_answers_no_addresses_available():
    srv = server()
    srv.max_leases = 1
    ask(srv, DHCP6_Solicit() / client_id() / DHCP6OptRapidCommit() / DHCP6OptIA_NA(iaid=1))
    full = ask(srv, DHCP6_Solicit() / client_id("52:54:00:00:00:12") / DHCP6OptIA_NA(iaid=1),
               mac=bytes.fromhex("525400000012"))
    assert full[DHCP6OptStatusCode].statuscode == 2
