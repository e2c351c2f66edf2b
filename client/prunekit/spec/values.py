"""Rules on single values, each written once: the spec checks and the technique configs both call them.

Every rule returns ``None`` when the value is fine, else the problem as text without the field's name
(``"must be a number with 0 < ratio < 1, got 1.5"``): a spec check puts it under the field's path, a config
raises ``ValueError(f"{name} {problem}")``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "MAX_M",
    "MAX_MACS_REDUCTION",
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "MIN_PERCENTILE",
    "fraction_problem",
    "int_range_problem",
    "n_m_problems",
    "override_ratio_problem",
    "pattern_problem",
    "patterns_problems",
    "percentile_problem",
    "raise_problem",
    "ratio_problem",
    "target_problem",
    "targets_problem",
]

MAX_PATTERNS = 256
MAX_PATTERN_LENGTH = 256
MAX_MACS_REDUCTION = 100.0
MAX_M = 64
MIN_PERCENTILE = 90.0


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _finite(value: object) -> float | None:
    """``value`` as a float when it is a finite number (never a bool), else None."""
    if not _number(value):
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def fraction_problem(value: object, name: str) -> str | None:
    """``value`` must be a finite number with ``0 < value < 1`` (``name`` is how the text calls it)."""
    number = _finite(value)
    if number is not None and 0.0 < number < 1.0:
        return None
    return f"must be a number with 0 < {name} < 1, got {value!r}"


def ratio_problem(value: object) -> str | None:
    """A pruning ratio: a finite number with ``0 < ratio < 1``."""
    return fraction_problem(value, "ratio")


def target_problem(value: object) -> str | None:
    """A MACs reduction target: a finite number with ``1 < x <= 100``."""
    number = _finite(value)
    if number is not None and 1.0 < number <= MAX_MACS_REDUCTION:
        return None
    return f"must satisfy 1 < x <= {MAX_MACS_REDUCTION:g}, got {value!r}"


def targets_problem(ratio: float, macs: float) -> tuple[str, str] | None:
    """Exactly one of ``ratio`` and ``target_macs_reduction`` is set (non-zero): ``(field, problem)``."""
    if ratio and macs:
        return "target_macs_reduction", "set exactly one of ratio and target_macs_reduction, not both"
    if not ratio and not macs:
        return "ratio", "set exactly one of ratio (0 < ratio < 1) and target_macs_reduction (> 1)"
    return None


def override_ratio_problem(value: object, *, zero_allowed: bool) -> str | None:
    """A per-layer override's ratio: ``0 < r < 1``, or also 0 where the method reads 0 as the run's ratio."""
    if zero_allowed and _number(value) and value == 0:
        return None
    number = _finite(value)
    if number is not None and 0.0 < number < 1.0:
        return None
    low = "0 <=" if zero_allowed else "0 <"
    return f"must be a number with {low} ratio < 1, got {value!r}"


def int_range_problem(value: object, low: int, high: int) -> str | None:
    """An integer from ``low`` to ``high``."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return None
    return f"must be an integer from {low} to {high}, got {value!r}"


def n_m_problems(n: object, m: object) -> tuple[str, str] | None:
    """N:M groups: ``2 <= m <= 64`` and ``1 <= n < m``; ``(field, problem)`` for the first bad one."""
    m_problem = int_range_problem(m, 2, MAX_M)
    if m_problem:
        return "m", m_problem
    assert isinstance(m, int)
    if int_range_problem(n, 1, m - 1):
        return "n", f"must be an integer from 1 to m - 1 ({m - 1}), got {n!r}"
    return None


def percentile_problem(value: object) -> str | None:
    """A calibration percentile: a finite number between 90 and 100."""
    number = _finite(value)
    if number is not None and MIN_PERCENTILE <= number <= 100.0:
        return None
    return f"must be between {MIN_PERCENTILE:g} and 100, got {value!r}"


def pattern_problem(pattern: object) -> str | None:
    """A glob (``fnmatch``) of 1 to 256 printable characters."""
    if isinstance(pattern, str) and pattern and len(pattern) <= MAX_PATTERN_LENGTH and pattern.isprintable():
        return None
    return f"a glob of 1 to {MAX_PATTERN_LENGTH} printable characters"


def patterns_problems(
    patterns: Sequence[object], *, limit: int = MAX_PATTERNS
) -> list[tuple[int | None, str]]:
    """Problems of a list of globs: ``(None, ...)`` for too many, ``(index, ...)`` for a bad one."""
    found: list[tuple[int | None, str]] = []
    if len(patterns) > limit:
        found.append((None, f"at most {limit} patterns"))
    for i, pattern in enumerate(patterns):
        problem = pattern_problem(pattern)
        if problem:
            found.append((i, problem))
    return found


def raise_problem(name: str, problem: str | None) -> None:
    """Raise ``ValueError(f"{name} {problem}")`` when there is a problem: how configs apply these rules."""
    if problem:
        raise ValueError(f"{name} {problem}")
