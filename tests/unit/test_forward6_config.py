"""[[forward]] to IPv6 guests: ``to = "[fd42:0:0:1::10]:22"``, an address of network.subnet6,
listening on IPv4 or IPv6, through the host uplink or a raw uplink with an address6 (NAT66);
forwards only in nat mode; the target parser the config and ``vswitch forward add`` share."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from vswitch.config import ConfigError, parse_config, parse_forward_target

PREFIX = "fd42:0:0:1::/64"
RAW = {"interface": "e", "address": "10.9.0.2/24", "gateway": "10.9.0.1"}


def forward(to: str, **more: object) -> dict[str, object]:
    return {"proto": "tcp", "port": 2222, "to": to} | more


def test_an_ipv6_guest_with_a_bracketed_address_and_a_port_is_accepted():
    config = parse_config({"network": {"subnet6": PREFIX}, "forward": [
        forward("[fd42:0:0:1::10]:22"),
        forward("[fd42:0:0:1::10]:53", proto="udp", port="5300-5301", listen="::1"),
        forward("[FD42:0:0:1:0:0:0:11]:80", port=8080, listen="127.0.0.1"),
        forward("192.168.122.10:22", port=2200, listen="::")]})
    six, udp, upper, four = config.forwards
    assert (six.proto, six.ports, six.to_ip, six.to_port) == (
        "tcp", (2222, 2222), IPv6Address("fd42:0:0:1::10"), 22)
    assert six.listen == IPv4Address("0.0.0.0"), "the default listen address is kept"
    assert (udp.ports, udp.to_port, udp.listen) == ((5300, 5301), 53, IPv6Address("::1"))
    assert upper.to_ip == IPv6Address("fd42:0:0:1::11")
    assert upper.listen == IPv4Address("127.0.0.1"), "an IPv4 listen to an IPv6 guest"
    assert four.to_ip == IPv4Address("192.168.122.10") and four.listen == IPv6Address("::")


def test_subnet6_auto_takes_forwards_to_addresses_in_the_derived_prefix():
    probe = parse_config({"network": {"subnet6": "auto"}})
    assert probe.network is not None and probe.network.subnet6 is not None
    guest = probe.network.subnet6.network_address + 0x10
    config = parse_config({"network": {"subnet6": "auto"},
                           "forward": [forward(f"[{guest}]:22")]})
    assert config.forwards[0].to_ip == guest


@pytest.mark.parametrize(("data", "words"), [
    ({"network": {}, "forward": [forward("[fd42:0:0:1::10]:22")]},
     ("set network.subnet6", "no IPv6 prefix", "fd42:0:0:1::/64")),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[fd43::10]:22")]},
     ("fd43::10", "not a host address of network.subnet6 fd42:0:0:1::/64")),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[fd42:0:0:1::]:22")]},
     ("not a host address of network.subnet6",)),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("fd42:0:0:1::10:22")]},
     ("[guest_ipv6]:port", "[fd42:0:0:1::10]:22")),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[fd42:0:0:1::10]")]},
     ("[guest_ipv6]:port",)),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[fd42:0:0:1::10]:0")]},
     ("[guest_ipv6]:port",)),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[fd42:0:0:1::10]:65535",
                                                          port="8000-8001")]},
     ("[guest_ipv6]:port",)),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[10.0.0.1]:22")]},
     ("[guest_ipv6]:port",)),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[fd42:0:0:1::10%eth0]:22")]},
     ("[guest_ipv6]:port",)),
    ({"network": {"subnet6": PREFIX}, "forward": [forward("[::ffff:192.168.122.10]:22")]},
     ("not a host address of network.subnet6",)),
    ({"network": {"subnet6": PREFIX}, "uplink": RAW, "forward": [forward("[fd42:0:0:1::10]:22")]},
     ("forwards IPv6 from its own IPv6 address", "uplink.address6")),
])
def test_bad_ipv6_forwards_name_forward_to_and_the_fix(data, words):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == "forward[0].to", err.value
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_a_raw_uplink_still_forwards_to_ipv4_guests_with_subnet6_set():
    config = parse_config({"network": {"subnet6": PREFIX}, "uplink": RAW,
                           "forward": [forward("192.168.122.10:22")]})
    assert config.forwards[0].to_ip == IPv4Address("192.168.122.10")
    assert config.forwards[0].listen is None


def test_a_raw_uplink_with_an_ipv6_address_forwards_to_ipv6_guests():
    config = parse_config({"network": {"subnet6": PREFIX},
                           "uplink": RAW | {"address6": "slaac"},
                           "forward": [forward("[fd42:0:0:1::10]:22")]})
    assert config.forwards[0].to_ip == IPv6Address("fd42:0:0:1::10")


@pytest.mark.parametrize("mode", ["route", "open", "isolated"])
@pytest.mark.parametrize("uplink", [None, RAW])
def test_a_forward_outside_nat_mode_is_an_error_naming_it(mode: str, uplink: dict | None):
    """No NAT, nothing to forward: the forward would be ignored, so it is refused."""
    data: dict[str, object] = {"network": {"mode": mode, "subnet6": PREFIX}, "forward": [
        forward("192.168.122.10:22", port=2200), forward("[fd42:0:0:1::10]:22")]}
    if uplink is not None:
        data["uplink"] = uplink
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == "forward[0]", err.value
    assert f"mode {mode!r} has no NAT" in str(err.value)
    assert 'network.mode = "nat"' in str(err.value)


def test_the_shared_target_parser_takes_both_families_and_checks_the_port_range():
    network = parse_config({"network": {"subnet6": PREFIX}}).network
    assert parse_forward_target("192.168.122.10:22", "to", network) == (
        IPv4Address("192.168.122.10"), 22)
    assert parse_forward_target("[fd42:0:0:1::10]:80", "to", network, (8000, 8009)) == (
        IPv6Address("fd42:0:0:1::10"), 80)
    assert parse_forward_target("[fd42:0:0:1::10]:65526", "to", network, (8000, 8009))[1] \
        == 65526, "the last guest port is 65535"
    for text, words in [("[fd42:0:0:1::10]:65527", "[guest_ipv6]:port"),
                        ("10.95.0.1:80", "10.95.0.1 is not in the guest network"),
                        ("[fd43::10]:22", "not a host address of network.subnet6"),
                        ("guest:22", "guest_ip:port")]:
        with pytest.raises(ConfigError) as err:
            parse_forward_target(text, "to", network, (8000, 8009))
        assert err.value.key == "to" and words in str(err.value), (text, str(err.value))
    four = parse_config({"network": {}}).network
    with pytest.raises(ConfigError, match="no IPv6 prefix"):
        parse_forward_target("[fd42:0:0:1::10]:22", "to", four)
