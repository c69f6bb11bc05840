"""The router behind the gateway: the gateway's own stack, routing and network modes, the raw
uplink's conntrack and NAT, and the host uplink (docs/architecture.md)."""
