"""The ground floor: packet codecs, the virtio-net header and offloads, software segmentation and
checksums, and the one error every parser raises.  It imports nothing of the project; ``vswitch``,
``nat`` and ``dhcp`` all build on it (docs/architecture.md, floors)."""
