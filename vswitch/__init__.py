"""vswitch: a userspace virtual switch and NAT router for qemu/KVM guests."""

__version__ = "0.1.0"
