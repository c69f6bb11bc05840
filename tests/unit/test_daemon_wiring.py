"""The composition root's small decisions: DHCP options per mode, upstreams from resolv.conf."""

from ipaddress import IPv4Address

from vswitch.config import parse_config
from vswitch.daemon import gateway_mac
from vswitch.dhcp_service import dhcp_config
from vswitch.dns_service import host_resolvers


def network(mode: str):
    return parse_config({"network": {"mode": mode, "subnet": "10.7.0.0/24"},
                         "dhcp": {"host": [{"mac": "52:54:00:00:00:09", "ip": "10.7.0.9",
                                            "name": "nine"}]}})


def test_isolated_mode_hands_out_no_default_route():
    assert dhcp_config(network("isolated").network).router is None
    nat = dhcp_config(network("nat").network)
    gateway = int(IPv4Address("10.7.0.1"))
    assert nat.router == gateway and nat.dns_servers == (gateway,)
    assert nat.static_hosts[0].mac == bytes.fromhex("525400000009")
    assert (nat.range_first, nat.range_last) == (int(IPv4Address("10.7.0.2")),
                                                 int(IPv4Address("10.7.0.254")))


def test_upstreams_come_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 192.0.2.1\nnameserver 2001:DB8::1\n"
                    "search example\nnameserver 192.0.2.2\nnameserver fe80::1%eth0\n")
    assert host_resolvers(str(conf)) == (("192.0.2.1", 53), ("2001:db8::1", 53),
                                         ("192.0.2.2", 53))
    assert host_resolvers(str(tmp_path / "missing")) == ()


def test_gateway_mac_is_stable_unicast_and_configurable():
    config = network("nat")
    mac = gateway_mac(config)
    assert mac == gateway_mac(config) and mac[:3] == b"\x52\x54\x00" and not mac[0] & 1
    custom = parse_config({"network": {"gateway_mac": "02:00:00:00:00:01"}})
    assert gateway_mac(custom) == bytes.fromhex("020000000001")
