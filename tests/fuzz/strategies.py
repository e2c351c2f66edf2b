"""Hypothesis settings shared by the fuzz tests: a short run in ``make test``, a long one in ``make soak``.

``PRUNEKIT_FUZZ_EXAMPLES`` sets the examples per test (default 150); deadlines are off, since a busy machine
must not turn a slow example into a failure.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("PRUNEKIT_FUZZ_EXAMPLES", "150"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
"""Derandomized for the short run (the same examples every time: CI is repeatable); random for a soak."""
