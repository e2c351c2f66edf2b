"""Rules of a spec's declared model inputs: unique names, concrete positive shapes, bounded bytes."""

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
    """Rules for declared inputs: unique names, concrete positive shapes, known dtypes; with
    ``max_bytes`` > 0, at most that many bytes in all."""
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
        if not shape or len(shape) > MAX_RANK:
            found.append(FieldViolation(f"{here}.shape", f"must have 1 to {MAX_RANK} dimensions"))
        elif any(d <= 0 or d > MAX_DIM for d in shape):
            found.append(FieldViolation(f"{here}.shape", f"every dimension must be between 1 and {MAX_DIM}"))
        elif math.prod(shape) > MAX_INPUT_ELEMENTS:
            found.append(FieldViolation(f"{here}.shape", f"at most {MAX_INPUT_ELEMENTS} elements"))
    total, phrase = inputs_size(items) if max_bytes > 0 and not found else (0, "")
    if total > max_bytes > 0:
        found.append(
            FieldViolation(path, f"{phrase}; this server allows at most {max_bytes} (max_input_bytes)")
        )
    return found
