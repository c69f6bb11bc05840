"""DHCP and DNS for the guests: sans-I/O cores, their codecs and adapters, and the raw uplink's
DHCP client (docs/architecture.md)."""
