"""The README's first command runs this demo: it must really show two guests talking."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.privileged


def test_demo_shows_guests_talking_and_the_mac_table():
    done = subprocess.run([sys.executable, "-m", "vswitch.cli", "demo"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 leases" in done.stdout and "alpha     bound" in done.stdout
    assert "PING beta.demo.internal" in done.stdout, "beta found by name"
    assert "3 received, 0% packet loss" in done.stdout
    assert "3 entries" in done.stdout  # both guests' MACs and the gateway's learned
    assert "HTTP 200" in done.stdout and done.stdout.count("HTTP 200") == 2, "NAT and forward"
    assert "tcpdump in the internet: 10.200.0.2." in done.stdout, "only the external address"
    assert "tcp    host   " in done.stdout and "tcp    host-forward" in done.stdout
    assert "demo done" in done.stdout
