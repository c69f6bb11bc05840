"""DHCP and DNS for the guests (its own issue)."""
