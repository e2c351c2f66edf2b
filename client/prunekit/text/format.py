"""Formatting of numbers, shapes and enum values shared by the terminal, Markdown and report tables."""

from __future__ import annotations

from collections.abc import Sequence

from prunekit.spec.names import enum_short_name

__all__ = ["DASH", "count", "enum_name", "ms", "shape", "si", "size", "table"]

DASH = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Columns padded to their widest cell; ``align`` holds ``l`` or ``r`` per column (``l`` by default)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            right = i < len(align) and align[i] == "r"
            out.append(cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def count(n: int) -> str:
    """An exact count with thousands separators: ``11,173,962``."""
    return f"{n:,}"


def si(n: float, unit: str = "") -> str:
    """A count with a metric prefix: ``1.82 G``."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def size(n: int) -> str:
    """Bytes in binary units: ``42.6 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def ms(value: float) -> str:
    """Milliseconds with three decimals: ``12.500``."""
    return f"{value:.3f}"


def shape(dims: Sequence[int]) -> str:
    """``1x3x224x224``; ``-`` for no dimensions."""
    return "x".join(str(d) for d in dims) if dims else DASH


def enum_name(enum_type: object, number: int) -> str:
    """The upper-case short name of an enum value: ``ONNX`` for ``MODEL_FORMAT_ONNX``."""
    return enum_short_name(enum_type.DESCRIPTOR, number).upper()  # type: ignore[attr-defined]
