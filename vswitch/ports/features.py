"""Which offloads a host interface takes from us: its transmit features, read with ethtool.

A TAP's features are whatever its qemu set last with ``TUNSETOFFLOAD`` (none for an e1000
guest, every one for virtio-net), so packet-socket ports read them when they open, and again on
every poll and carrier change (``PacketSocketPort.poll``).  pyroute2's ``Ethtool`` issues the
``SIOCETHTOOL`` ioctls that ``ethtool -k`` does (its ioctl half only: its netlink half runs
an asyncio loop of its own, which cannot live inside the daemon's); no privilege is needed.
"""

from __future__ import annotations

import functools

from pyroute2.ethtool.ioctl import IoctlEthtool

from wire.vnet import Offloads

#: ethtool's feature names -> the ``Offloads`` fields they stand for.
FEATURES = {
    "tx-checksum-ip-generic": "csum",
    "tx-checksum-ipv4": "csum4",
    "tx-checksum-ipv6": "csum6",
    "tx-tcp-segmentation": "tso4",
    "tx-tcp6-segmentation": "tso6",
    "tx-tcp-ecn-segmentation": "tso_ecn",
    "tx-udp-segmentation": "uso",
}


@functools.cache
def _ethtool() -> IoctlEthtool:
    return IoctlEthtool()  # one per process: it holds the socket the ioctls go through


def device_offloads(interface: str) -> Offloads | None:
    """The offloads ``interface`` has on now, or None if it cannot be asked (it is gone)."""
    ethtool = _ethtool()
    try:
        ethtool.change_ifname(interface)
        on = {name: enable for name, enable, _available, _set, _index in ethtool.get_features()}
    except OSError:
        return None
    return Offloads(**{field: bool(on.get(name)) for name, field in FEATURES.items()})
