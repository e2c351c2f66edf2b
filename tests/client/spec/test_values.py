"""The single-value rules the spec checks and the configs share, and the generic technique registry."""

from __future__ import annotations

import math

import pytest

from prunekit.spec.technique import Registry, check_patterns
from prunekit.spec.values import (
    n_m_problems,
    override_ratio_problem,
    pattern_problem,
    percentile_problem,
    ratio_problem,
    target_problem,
    targets_problem,
)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, math.nan, math.inf, True, "0.5"])
def test_bad_ratios(value: object) -> None:
    assert ratio_problem(value) == f"must be a number with 0 < ratio < 1, got {value!r}"


def test_good_values() -> None:
    assert ratio_problem(0.5) is None
    assert target_problem(100) is None
    assert override_ratio_problem(0, zero_allowed=True) is None
    assert percentile_problem(99.999) is None
    assert n_m_problems(2, 4) is None
    assert pattern_problem("fc*") is None


def test_bounds_and_choices() -> None:
    assert target_problem(1.0)
    assert target_problem(100.5)
    assert override_ratio_problem(0.0, zero_allowed=False) == "must be a number with 0 < ratio < 1, got 0.0"
    assert n_m_problems(4, 4) == ("n", "must be an integer from 1 to m - 1 (3), got 4")
    assert n_m_problems(2, 65) == ("m", "must be an integer from 2 to 64, got 65")
    assert targets_problem(0.5, 2.0) == (
        "target_macs_reduction",
        "set exactly one of ratio and target_macs_reduction, not both",
    )
    neither = targets_problem(0.0, 0.0)
    assert neither is not None
    assert neither[0] == "ratio"
    for bad in ("", "x" * 257, "a\nb"):
        assert pattern_problem(bad)
    with pytest.raises(ValueError, match="ignore patterns must each be a glob"):
        check_patterns(("",), "ignore")


def test_registry() -> None:
    registry: Registry[str, int] = Registry()
    assert registry.add("a", 1) == 1
    registry.add("b", 2)
    registry.add("a", 3)
    assert registry.get("a") == 3
    assert registry.get("z") is None
    assert registry.as_dict() == {"a": 3, "b": 2}
    assert "b" in registry
    assert list(registry) == ["a", "b"]
    assert len(registry) == 2
