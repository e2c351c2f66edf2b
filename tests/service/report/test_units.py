"""Axis units fit the numbers."""

from __future__ import annotations

from prunekit_server.report.units import bytes_unit, ms_unit


def test_bytes_scale_to_the_largest_value() -> None:
    assert bytes_unit([512.0, 900.0]) == (1.0, "B")
    assert bytes_unit([59 * 1024.0, 10.0]) == (1024.0, "KiB")
    assert bytes_unit([3 * 2.0**20]) == (2.0**20, "MiB")
    assert bytes_unit([5 * 2.0**30]) == (2.0**30, "GiB")
    assert bytes_unit([]) == (1.0, "B")


def test_times_scale_to_the_largest_value() -> None:
    assert ms_unit([0.05, 0.2]) == (1000.0, "µs")
    assert ms_unit([0.5, 12.0]) == (1.0, "ms")
    assert ms_unit([1500.0]) == (0.001, "s")
    assert ms_unit([0.0]) == (1.0, "ms")
