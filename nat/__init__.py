"""The NAT router: gateway, conntrack with SNAT/DNAT, network modes (its own issue)."""
