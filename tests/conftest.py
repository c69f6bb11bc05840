"""Shared fixtures.

Rule: a test marked ``privileged`` (root, namespaces, TAP) or ``qemu`` runs for real in CI.
Outside CI it is skipped when not root; with CI=true a missing privilege or tool is a failure,
never a skip (the brief: a skip of a privileged test in CI is a failure).
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, why: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {why}: privileged tests must run in CI")
    pytest.skip(why)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("privileged") or item.get_closest_marker("qemu"):
        require(os.geteuid() == 0, "not root")
    tools = {"privileged": ("ip", "tcpdump", "ping"), "qemu": ("qemu-system-x86_64",)}
    for marker, needed in tools.items():
        if item.get_closest_marker(marker):
            for tool in needed:
                require(shutil.which(tool) is not None, f"{tool} is not installed")


@pytest.fixture
def lab():
    from vswitch.lab import Lab

    with Lab("t") as lab:
        yield lab
