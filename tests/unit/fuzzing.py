"""The property tests' budget (tests/unit/test_fuzz_*.py), one place.

CI (the default): a fixed seed (``derandomize``: the same examples every run, no example
database) and a small example budget per test, so that all the ``test_fuzz_*`` files together
stay well under a minute on a 2-core machine.

``HYPOTHESIS_PROFILE=fuzz`` (``make fuzz`` without atheris, or by hand): random seeds, the
example database kept, and ``FUZZ_SCALE`` (default 50) times the examples of each test.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
SCALE = int(os.environ.get("FUZZ_SCALE", "50")) if FUZZING else 1


def budget(examples: int) -> Callable[[Any], Any]:
    """``@budget(n)``: n examples from a fixed seed in CI, n * FUZZ_SCALE random ones fuzzing."""
    return settings(
        max_examples=examples * SCALE,
        derandomize=not FUZZING,
        database=settings.default.database if FUZZING else None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
    )
