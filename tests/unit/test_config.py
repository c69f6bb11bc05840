"""Config validation: every bad value gets one error naming the key."""

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address

import pytest

from vswitch.config import ConfigError, load_config, parse_config


def test_embedded_default_mirrors_a_usable_switch():
    config = load_config()
    assert config.name == "vsw0" and config.mac_aging == 300 and config.mac_limit == 8192
    assert [(p.name, p.type) for p in config.ports] == [
        ("vsw-a", "tap"), ("vsw-b", "tap"), ("vsw-s", "stream")]
    net = config.network
    assert net is not None and (net.mode, net.subnet, net.gateway) == (
        "nat", IPv4Network("192.168.122.0/24"), IPv4Address("192.168.122.1"))
    assert net.dhcp_range == (IPv4Address("192.168.122.2"), IPv4Address("192.168.122.254"))
    assert net.lease_time == 3600


def test_full_config_round_trips_into_dataclasses(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text("""
[switch]
name = "lab"
mac_aging = 60
mac_limit = 100
[control]
socket = "/tmp/x.sock"
[[port]]
name = "tap1"
type = "tap"
owner = 0
group = "root"
persistent = true
mtu = 9000
mac_limit = 10
[[port]]
name = "s1"
type = "dgram"
path = "/tmp/s1.sock"
peer = "/tmp/q.sock"
""")
    c = load_config(path)
    assert (c.name, c.mac_aging, c.mac_limit, c.socket) == ("lab", 60, 100, "/tmp/x.sock")
    tap, dgram = c.ports
    assert (tap.owner, tap.group, tap.persistent, tap.mtu, tap.mac_limit) == (0, 0, True, 9000, 10)
    assert (dgram.path, dgram.peer) == ("/tmp/s1.sock", "/tmp/q.sock")


BAD = [
    ({"switch": {"mac_aging": 0}}, "switch.mac_aging", "out of range"),
    ({"network": {}, "nat": {"port_range": [0, 10]}}, "nat.port_range", "within 1-65535"),
    ({"network": {}, "nat": {"filtering": "full-cone"}}, "nat.filtering", "endpoint-independent"),
    ({"network": {}, "nat": {"tcp_established": 600}}, "nat.tcp_established", "RFC 5382"),
    ({"network": {}, "nat": {"udp": 60}}, "nat.udp", "RFC 4787"),
    ({"network": {}, "nat": {"fragments": 0}}, "nat.fragments", "out of range"),
    ({"network": {}, "nat": {"fragment": 30}}, "nat.fragment", "unknown key"),
    ({"switch": {"mac_limit": "lots"}}, "switch.mac_limit", "must be an integer"),
    ({"switch": {"name": "a name with spaces"}}, "switch.name", "letters"),
    ({"switch": {"agin": 3}}, "switch.agin", "unknown key"),
    ({"bridge": {}}, "bridge", "unknown key"),
    ({"port": {"name": "x"}}, "port", "[[port]]"),
    ({"port": [{"name": "x"}]}, "port[0].type", "missing"),
    ({"port": [{"name": "x", "type": "vde"}]}, "port[0].type", "not a port type"),
    ({"port": [{"type": "tap"}]}, "port[0].name", "missing"),
    ({"port": [{"name": "much-too-long-name", "type": "tap"}]}, "port[0].name", "1-15"),
    ({"port": [{"name": "a", "type": "tap", "mtu": 70000}]}, "port[0].mtu", "out of range"),
    ({"port": [{"name": "a", "type": "tap", "mtu": True}]}, "port[0].mtu", "integer"),
    ({"port": [{"name": "a", "type": "tap", "interface": "eth0"}]}, "port[0].interface",
     "a tap port takes"),
    ({"port": [{"name": "a", "type": "tap", "owner": "no-such-user-xyz"}]}, "port[0].owner",
     "no such owner"),
    ({"port": [{"name": "a", "type": "attach"}]}, "port[0].interface", "missing"),
    ({"port": [{"name": "a", "type": "stream", "path": "/" + "x" * 200}]}, "port[0].path",
     "107 bytes"),
    ({"port": [{"name": "a", "type": "tap"}, {"name": "a", "type": "tap"}]}, "port[1].name",
     "already"),
    ({"port": [{"name": "a", "type": "stream", "path": "/tmp/p"},
               {"name": "b", "type": "dgram", "path": "/tmp/p"}]}, "port[0].path", "used by"),
    ({"port": [{"name": "a", "type": "internal", "mac_limit": 0}]}, "port[0].mac_limit", "range"),
    ({"network": {"subnet": "10.0.0.0/33"}}, "network.subnet", "not a valid IPv4 network"),
    ({"network": {"subnet": "10.0.0.0/31"}}, "network.subnet", "no room"),
    ({"network": {"mode": "bridge"}}, "network.mode", "not a mode"),
    ({"network": {"gateway": "10.9.9.9"}}, "network.gateway", "not a host address"),
    ({"network": {"gateway_mac": "01:00:5e:00:00:01"}}, "network.gateway_mac", "multicast"),
    ({"dhcp": {}}, "network", "missing"),
    ({"network": {}, "dhcp": {"range": ["192.168.122.9"]}}, "dhcp.range", "[first, last]"),
    ({"network": {}, "dhcp": {"range": ["192.168.122.9", "192.168.122.2"]}}, "dhcp.range",
     "after last"),
    ({"network": {}, "dhcp": {"range": ["192.168.122.1", "192.168.122.9"]}}, "dhcp.range",
     "includes the gateway"),
    ({"network": {}, "dhcp": {"lease_time": 10}}, "dhcp.lease_time", "out of range"),
    ({"network": {}, "dhcp": {"host": [{"ip": "192.168.122.7"}]}}, "dhcp.host[0].mac",
     "missing"),
    ({"network": {}, "dhcp": {"host": [{"mac": "52:54:00:00:00:01", "ip": "10.1.1.1"}]}},
     "dhcp.host[0].ip", "not a host address"),
    ({"network": {}, "dhcp": {"host": [{"mac": "nope", "ip": "192.168.122.7"}]}},
     "dhcp.host[0].mac", "not a MAC"),
    ({"network": {}, "dns": {"domain": "bad_domain!"}}, "dns.domain", "not a DNS domain"),
    ({"network": {}, "dns": {"forwarders": ["8.8.8.8:99999"]}}, "dns.forwarders[0]", "port"),
    ({"network": {}, "dns": {"forwarders": ["[2001:db8::1]x"]}}, "dns.forwarders[0]",
     "[2001:db8::53]:5353"),
    ({"network": {}, "dns": {"host": [{"name": "under_score", "ip": "10.0.0.1"}]}},
     "dns.host[0].name", "one DNS label"),
    ({"network": {}, "uplink": {"type": "slirp"}}, "uplink.type", "use \"host\""),
    ({"network": {}, "uplink": {"type": "host", "interface": "eth0"}}, "uplink.interface",
     "a host uplink takes"),
    ({"network": {}, "uplink": {"buffer_mib": 0}}, "uplink.buffer_mib", "out of range"),
    ({"network": {"mode": "route"}, "uplink": {"type": "host"}}, "uplink.type",
     "keeps guest addresses"),
    ({"network": {}, "uplink": {"host_address": "10.0.0.1"}}, "uplink.host_address",
     "not a host address"),
    ({"network": {}, "uplink": {"host_address": "192.168.122.50"}}, "uplink.host_address",
     "DHCP range"),
    ({"network": {}, "forward": [{"proto": "tcp", "port": 80, "to": "192.168.122.9:80",
                                  "listen": "nowhere"}]}, "forward[0].listen", "IPv4 or IPv6"),
    ({"network": {}, "uplink": {"type": "raw", "interface": "e", "address": "10.9.0.2/24",
                                "gateway": "10.9.0.1"},
      "forward": [{"proto": "tcp", "port": 80, "to": "192.168.122.9:80", "listen": "::"}]},
     "forward[0].listen", "only a host uplink"),
]


def test_the_host_uplink_is_the_default_in_nat_mode():
    """No [uplink]: the host's sockets, with the gateway standing for the host's loopback;
    isolated mode sends nothing out; a forward listens on 0.0.0.0 unless told otherwise."""
    config = parse_config({"network": {}, "forward": [{"proto": "tcp", "port": 2222,
                                                       "to": "192.168.122.10:22"}]})
    assert config.uplink is not None and config.uplink.type == "host"
    assert config.uplink.host_address == IPv4Address("192.168.122.1"), "parsed once, at load"
    assert config.forwards[0].listen == IPv4Address("0.0.0.0")
    assert parse_config({"network": {"mode": "isolated"}}).uplink is None
    off = parse_config({"network": {}, "uplink": {"host_address": ""}})
    assert off.uplink is not None and off.uplink.host_address is None
    v6 = parse_config({"network": {}, "forward": [{"proto": "udp", "port": 53, "listen": "[::1]",
                                                   "to": "192.168.122.10:53"}]})
    assert v6.forwards[0].listen == IPv6Address("::1")
    raw = parse_config({"network": {}, "uplink": {"interface": "e", "address": "10.9.0.2/24",
                                                  "gateway": "10.9.0.1"}})
    assert raw.uplink is not None and raw.uplink.type == "raw", "an interface means raw"
    assert (raw.uplink.address, raw.uplink.gateway, raw.uplink.dhcp) == (
        IPv4Interface("10.9.0.2/24"), IPv4Address("10.9.0.1"), False)
    leased = parse_config({"network": {}, "uplink": {"interface": "e", "address": "dhcp"}})
    assert leased.uplink is not None and leased.uplink.dhcp and leased.uplink.address is None


def test_nat_timeouts_have_defaults_and_can_be_set():
    assert parse_config({}).nat.fragments == 30
    nat = parse_config({"network": {}, "nat": {"udp": 120, "icmp": 90, "fragments": 5}}).nat
    assert (nat.udp, nat.icmp, nat.fragments) == (120, 90, 5)


@pytest.mark.parametrize("data,key,words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_config_names_the_key(data, key, words):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.key == key
    assert str(err.value).startswith(key + ": ")
    assert words in str(err.value)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[switch\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")


def _mirror_config(**mirror):
    ports = [{"name": n, "type": "stream", "path": f"/tmp/{n}.sock"} for n in ("a", "b", "s")]
    return parse_config({"port": ports, "mirror": [mirror]})


def test_a_mirror_names_its_sources_its_target_and_a_direction():
    config = _mirror_config(**{"from": ["a", "b"], "to": "s", "direction": "rx"})
    (mirror,) = config.mirrors
    assert (mirror.sources, mirror.to, mirror.direction) == (("a", "b"), "s", "rx")
    assert _mirror_config(**{"from": ["a"], "to": "s"}).mirrors[0].direction == "both"


@pytest.mark.parametrize("mirror, key, says", [
    ({"from": "a", "to": "s"}, "mirror[0].from", "list of port names"),
    ({"from": ["a"], "to": "nope"}, "mirror[0]", "no port 'nope'"),
    ({"from": ["a"], "to": "a"}, "mirror[0].to", "not the gateway or one of the sources"),
    ({"from": ["a"], "to": "s", "direction": "up"}, "mirror[0].direction", "\"both\""),
    ({"from": ["a"]}, "mirror[0].to", "the port the copies leave by"),
    ({"from": ["a"], "to": "s", "mode": "x"}, "mirror[0].mode", ""),
])
def test_a_bad_mirror_gets_one_error_naming_its_key(mirror, key, says):
    with pytest.raises(ConfigError) as err:
        _mirror_config(**mirror)
    assert str(err.value).startswith(key) and says in str(err.value)


def test_two_mirrors_cannot_share_a_target():
    ports = [{"name": n, "type": "stream", "path": f"/tmp/{n}.sock"} for n in ("a", "b", "s")]
    with pytest.raises(ConfigError, match="already another mirror's target"):
        parse_config({"port": ports, "mirror": [{"from": ["a"], "to": "s"},
                                                {"from": ["b"], "to": "s"}]})


def _v6(network: dict | None = None, dhcp: dict | None = None, name: str = "vsw0"):
    return parse_config({"switch": {"name": name},
                         "network": {"subnet": "10.9.0.0/24", **(network or {})},
                         "dhcp": dhcp or {}}).network


def test_ipv6_is_off_by_default_and_a_prefix_turns_it_on():
    assert _v6().subnet6 is None and load_config(None).network.subnet6 is None
    net = _v6({"subnet6": "fd42:0:0:1::/64"}, {"range6": ["fd42:0:0:1::100",
                                                         "fd42:0:0:1::1ff"],
                                              "host": [{"mac": "52:54:00:00:00:09",
                                                        "ip": "10.9.0.9",
                                                        "ip6": "fd42:0:0:1::9"}]})
    assert str(net.subnet6) == "fd42:0:0:1::/64" and str(net.gateway6) == "fd42:0:0:1::1"
    assert [str(a) for a in net.dhcp_range6] == ["fd42:0:0:1::100", "fd42:0:0:1::1ff"]
    assert str(net.dhcp_hosts[0].ip6) == "fd42:0:0:1::9"


def test_auto_derives_a_stable_ula_per_switch_name():
    one, again, other = (_v6({"subnet6": "auto"}, name=n).subnet6 for n in ("a", "a", "b"))
    assert one == again != other
    assert one.prefixlen == 64 and one.network_address.packed[0] == 0xFD


@pytest.mark.parametrize("network, dhcp, key, says", [
    ({"subnet6": "fd42::/56"}, {}, "network.subnet6", "SLAAC needs one"),
    ({"subnet6": "10.0.0.0/8"}, {}, "network.subnet6", "not an IPv6 prefix"),
    ({"subnet6": "fd42::/64", "gateway6": "fd43::1"}, {}, "network.gateway6",
     "not a host address of network.subnet6"),
    ({"subnet6": "fd42::/64"}, {"range6": ["fd42::100", "fd43::1"]}, "dhcp.range6",
     "not a host address"),
    ({"subnet6": "fd42::/64"}, {"range6": ["fd42::1ff", "fd42::100"]}, "dhcp.range6",
     "is after last"),
    ({"subnet6": "fd42::/64"}, {"range6": ["fd42::1", "fd42::ff"]}, "dhcp.range6",
     "includes the gateway"),
    ({"gateway6": "fd42::1"}, {}, "network.gateway6", "needs network.subnet6"),
    ({}, {"range6": ["fd42::100", "fd42::1ff"]}, "dhcp.range6", "needs network.subnet6"),
    ({}, {"host": [{"mac": "52:54:00:00:00:09", "ip": "10.9.0.9", "ip6": "fd42::9"}]},
     "dhcp.host[0].ip6", "needs network.subnet6"),
])
def test_each_ipv6_mistake_gets_one_error_naming_its_key(network, dhcp, key, says):
    with pytest.raises(ConfigError) as err:
        _v6(network, dhcp)
    assert str(err.value).startswith(key) and says in str(err.value), str(err.value)


def test_a_stateful_only_prefix_may_be_longer_than_64():
    net = _v6({"subnet6": "fd42::/112"}, {"range6": ["fd42::100", "fd42::1ff"]})
    assert net.subnet6.prefixlen == 112


def test_dns_upstreams_may_be_ipv6_with_or_without_a_port():
    net = parse_config({"network": {}, "dns": {"forwarders": [
        "2001:DB8::53", "[2001:db8::54]:5353", "192.0.2.53:5300"]}}).network
    assert net.forwarders == (("2001:db8::53", 53), ("2001:db8::54", 5353),
                              ("192.0.2.53", 5300))
