"""[uplink] address6 and gateway6: the raw uplink's IPv6 station (nat.uplink6), each mistake one
ConfigError naming the key and the fix."""

from ipaddress import IPv6Address, IPv6Interface

import pytest

from vswitch.config import ConfigError, parse_config

RAW = {"type": "raw", "interface": "eth1", "address": "203.0.113.2/24",
       "gateway": "203.0.113.1"}


SIX = {"subnet6": "fd42:0:0:1::/64"}


def uplink(network: dict | None = None, **keys):
    return parse_config({"network": network or SIX, "uplink": RAW | keys}).uplink


def test_slaac_dhcp_static_and_none():
    assert uplink().address6 == "" and uplink().gateway6 is None, "no IPv6 unless asked"
    assert uplink(address6="slaac").address6 == "slaac"
    leased = parse_config({"network": SIX, "uplink": {"interface": "eth1", "address": "dhcp",
                                                     "address6": "dhcp"}}).uplink
    assert leased is not None and leased.address6 == "dhcp" and leased.dhcp
    static = uplink(address6="2001:db8:1::2/64", gateway6="2001:db8:1::1")
    assert static is not None and static.address6 == "static"
    assert static.address6_static == IPv6Interface("2001:db8:1::2/64")
    assert static.gateway6 == IPv6Address("2001:db8:1::1")
    by_link_local = uplink(address6="2001:db8:1::2/64", gateway6="fe80::1")
    assert by_link_local is not None and by_link_local.gateway6 == IPv6Address("fe80::1")


BAD = [
    ({"address6": "auto"}, "uplink.address6", "use \"slaac\", \"dhcp\""),
    ({"address6": "2001:db8:1::2"}, "uplink.address6", "with its prefix"),
    ({"address6": 6}, "uplink.address6", "must be a str"),
    ({"address6": "fe80::2/64", "gateway6": "fe80::1"}, "uplink.address6",
     "link-local one comes from the MAC"),
    ({"address6": "2001:db8:1::/64", "gateway6": "fe80::1"}, "uplink.address6",
     "not a host address"),
    ({"address6": "ff02::2/64", "gateway6": "fe80::1"}, "uplink.address6", "not a host"),
    ({"address6": "2001:db8:1::2/64"}, "uplink.gateway6", "missing; a static address6"),
    ({"address6": "slaac", "gateway6": "fe80::1"}, "uplink.gateway6",
     "the next hop is the router advertising"),
    ({"address6": "dhcp", "gateway6": "fe80::1"}, "uplink.gateway6", "remove it"),
    ({"gateway6": "fe80::1"}, "uplink.gateway6", "needs a static address6"),
    ({"address6": "2001:db8:1::2/64", "gateway6": "2001:db8:9::1"}, "uplink.gateway6",
     "not a neighbour's address"),
    ({"address6": "2001:db8:1::2/64", "gateway6": "2001:db8:1::2"}, "uplink.gateway6",
     "not the uplink's own"),
    ({"address6": "2001:db8:1::2/64", "gateway6": "router"}, "uplink.gateway6",
     "not an IPv6 address"),
]


@pytest.mark.parametrize("keys, key, message", BAD)
def test_each_mistake_is_one_error_naming_the_key_and_the_fix(keys, key, message):
    with pytest.raises(ConfigError) as caught:
        uplink(**keys)
    assert caught.value.key == key and message in str(caught.value)


def test_a_static_prefix_overlapping_the_guests_is_refused():
    with pytest.raises(ConfigError) as caught:
        uplink({"subnet6": "fd42:0:0:1::/64"}, address6="fd42:0:0:1::2/64",
               gateway6="fd42:0:0:1::1")
    assert caught.value.key == "uplink.address6" and "network.subnet6" in str(caught.value)


@pytest.mark.parametrize("key", ["address6", "gateway6"])
def test_a_host_uplink_has_no_ipv6_station(key):
    with pytest.raises(ConfigError) as caught:
        parse_config({"network": {}, "uplink": {"type": "host", key: "slaac"}})
    assert caught.value.key == f"uplink.{key}" and "only a raw uplink" in str(caught.value)


def test_an_uplink_address6_without_guest_ipv6_is_an_error_not_silence():
    with pytest.raises(ConfigError) as caught:
        uplink({"subnet": "10.1.0.0/24"}, address6="slaac")
    assert caught.value.key == "uplink.address6" and "network.subnet6" in str(caught.value)


def test_an_uplink_mtu_below_ipv6s_minimum_is_an_error_with_address6():
    """RFC 8200 5: a link carrying IPv6 has an MTU of at least 1280."""
    with pytest.raises(ConfigError) as caught:
        uplink(address6="slaac", mtu=1279)
    assert caught.value.key == "uplink.mtu"
    assert "1280" in str(caught.value) and "remove uplink.address6" in str(caught.value)
    at_least = uplink(address6="slaac", mtu=1280)
    assert at_least is not None and at_least.mtu == 1280
    four = uplink(mtu=576)
    assert four is not None and four.mtu == 576, "IPv4 only: as low as before"


def test_an_uplink_address6_in_isolated_mode_is_an_error_not_silence():
    """Isolated mode routes nothing out: an IPv6 station there would do nothing."""
    with pytest.raises(ConfigError) as caught:
        uplink(SIX | {"mode": "isolated"}, address6="slaac")
    assert caught.value.key == "uplink.address6" and "isolated" in str(caught.value)
    assert uplink(SIX | {"mode": "route"}, address6="slaac") is not None
