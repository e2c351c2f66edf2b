"""Axis units that fit the numbers: bytes as B, KiB, MiB or GiB, times as µs, ms or s."""

from __future__ import annotations

from collections.abc import Iterable

_BYTES = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def bytes_unit(values: Iterable[float]) -> tuple[float, str]:
    """(divisor, unit) under which the largest of ``values`` (bytes) reads between 1 and 1024."""
    top = max(values, default=0.0)
    for unit, divisor in _BYTES:
        if top >= divisor:
            return float(divisor), unit
    return 1.0, "B"


def ms_unit(values: Iterable[float]) -> tuple[float, str]:
    """(factor, unit) turning ``values`` in ms into µs (all below 1 ms), s (from 1000 ms) or ms."""
    top = max(values, default=0.0)
    if 0 < top < 1.0:
        return 1000.0, "µs"
    if top >= 1000.0:
        return 0.001, "s"
    return 1.0, "ms"
