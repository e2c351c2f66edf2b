"""Rules of a spec's declared model inputs: unique names, concrete positive shapes."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prunekit.v1 import model_pb2

from .violation import FieldViolation

__all__ = ["MAX_DIM", "MAX_INPUTS", "MAX_INPUT_ELEMENTS", "MAX_RANK", "input_violations"]

MAX_INPUTS = 64
MAX_RANK = 8
MAX_DIM = 1 << 20
MAX_INPUT_ELEMENTS = 1 << 30


def input_violations(inputs: Iterable[model_pb2.InputSpec], path: str) -> list[FieldViolation]:
    """Rules for declared inputs: unique names, concrete positive shapes, known dtypes."""
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
    return found
