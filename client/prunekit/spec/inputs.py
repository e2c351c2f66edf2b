"""Rules of a spec's declared model inputs: unique names, concrete positive shapes (or none: a scalar),
bounded bytes, fixed values that fit their dtype."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prunekit.v1 import model_pb2

from .violation import FieldViolation

__all__ = [
    "DTYPE_BYTES",
    "MAX_DIM",
    "MAX_INPUTS",
    "MAX_INPUT_ELEMENTS",
    "MAX_RANK",
    "input_bytes",
    "input_violations",
    "inputs_size",
    "value_problem",
]

MAX_INPUTS = 64
MAX_RANK = 8
MAX_DIM = 1 << 20
MAX_INPUT_ELEMENTS = 1 << 30

DTYPE_BYTES: dict[int, int] = {
    model_pb2.DATA_TYPE_UNSPECIFIED: 4,
    model_pb2.DATA_TYPE_FLOAT32: 4,
    model_pb2.DATA_TYPE_FLOAT16: 2,
    model_pb2.DATA_TYPE_FLOAT64: 8,
    model_pb2.DATA_TYPE_INT64: 8,
    model_pb2.DATA_TYPE_INT32: 4,
    model_pb2.DATA_TYPE_INT8: 1,
    model_pb2.DATA_TYPE_UINT8: 1,
    model_pb2.DATA_TYPE_BOOL: 1,
    model_pb2.DATA_TYPE_BFLOAT16: 2,
}
"""Bytes per element of each ``DataType`` (UNSPECIFIED means float32)."""

_FLOAT_LIMITS: dict[int, float] = {
    model_pb2.DATA_TYPE_UNSPECIFIED: 3.4028234663852886e38,
    model_pb2.DATA_TYPE_FLOAT32: 3.4028234663852886e38,
    model_pb2.DATA_TYPE_FLOAT16: 65504.0,
    model_pb2.DATA_TYPE_FLOAT64: 1.7976931348623157e308,
    model_pb2.DATA_TYPE_BFLOAT16: 3.3895313892515355e38,
}
_INT_RANGES: dict[int, tuple[int, int]] = {
    model_pb2.DATA_TYPE_INT64: (-(1 << 53), 1 << 53),  # what a double holds exactly
    model_pb2.DATA_TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    model_pb2.DATA_TYPE_INT8: (-128, 127),
    model_pb2.DATA_TYPE_UINT8: (0, 255),
}


def value_problem(value: float, dtype: int) -> str:
    """Why ``value`` cannot be the fixed value of an input of ``dtype`` ("" when it can)."""
    if not math.isfinite(value):
        return "must be a finite number"
    if dtype in _FLOAT_LIMITS:
        limit = _FLOAT_LIMITS[dtype]
        fits = abs(value) <= limit
        return "" if fits else f"does not fit the input's dtype (at most {limit:g} in magnitude)"
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if value != int(value):
            return "must be a whole number for an integer input"
        return "" if low <= value <= high else f"does not fit the input's dtype ({low} to {high})"
    return "is only for numeric dtypes (floating point or integer)"


def input_bytes(item: model_pb2.InputSpec) -> int:
    """Bytes of one tensor of ``item``'s shape and dtype (8 per element for an unknown dtype)."""
    return math.prod(int(d) for d in item.shape) * DTYPE_BYTES.get(item.dtype, 8)


def inputs_size(inputs: Iterable[model_pb2.InputSpec]) -> tuple[int, str]:
    """Bytes of one batch of ``inputs`` together, and a phrase saying so (naming the biggest input)."""
    items = list(inputs)
    if not items:
        return 0, "there are no inputs"
    biggest = max(items, key=input_bytes)
    elements = math.prod(int(d) for d in biggest.shape)
    total = sum(input_bytes(item) for item in items)
    return total, f"one batch of the inputs takes {total} bytes ({biggest.name!r}: {elements} elements)"


def input_violations(
    inputs: Iterable[model_pb2.InputSpec], path: str, *, max_bytes: int = 0
) -> list[FieldViolation]:
    """Rules for declared inputs: unique names, concrete positive shapes (empty: a scalar), known
    dtypes, a ``value`` that fits its dtype; with ``max_bytes`` > 0, at most that many bytes in all."""
    found: list[FieldViolation] = []
    items = list(inputs)
    if len(items) > MAX_INPUTS:
        found.append(FieldViolation(path, f"at most {MAX_INPUTS} inputs"))
    seen: set[str] = set()
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        if not item.name:
            found.append(FieldViolation(f"{here}.name", "must not be empty"))
        elif item.name in seen:
            found.append(FieldViolation(f"{here}.name", f"duplicate input name {item.name!r}"))
        seen.add(item.name)
        shape = list(item.shape)
        if len(shape) > MAX_RANK:
            found.append(FieldViolation(f"{here}.shape", f"must have at most {MAX_RANK} dimensions"))
        elif any(d <= 0 or d > MAX_DIM for d in shape):
            found.append(FieldViolation(f"{here}.shape", f"every dimension must be between 1 and {MAX_DIM}"))
        elif math.prod(shape) > MAX_INPUT_ELEMENTS:
            found.append(FieldViolation(f"{here}.shape", f"at most {MAX_INPUT_ELEMENTS} elements"))
        problem = value_problem(item.value, item.dtype) if item.HasField("value") else ""
        if problem:
            found.append(FieldViolation(f"{here}.value", problem))
    total, phrase = inputs_size(items) if max_bytes > 0 and not found else (0, "")
    if total > max_bytes > 0:
        found.append(
            FieldViolation(path, f"{phrase}; this server allows at most {max_bytes} (max_input_bytes)")
        )
    return found
