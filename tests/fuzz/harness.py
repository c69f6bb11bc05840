"""What the atheris harnesses share: the repository on sys.path, and ``run``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import atheris  # noqa: E402


def run(one_input: Callable[[bytes], None]) -> None:
    """libFuzzer's main loop over ``one_input`` (argv: libFuzzer's flags and corpus dirs).
    Every function loaded is instrumented for coverage (``instrument_imports`` misses the
    modules the editable install's finder loads)."""
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
