"""The table of op converters: ``@converter("Conv")`` registers one, keyed by op type.

A converter is a small function of a :class:`~.node.NodeContext` returning the
node's outputs in order. ``since`` is the first opset of the default domain it
handles: when an op's inputs or attributes changed between opsets (Split, Squeeze,
Unsqueeze, ReduceMean, Slice, Pad, Clip...), each form registers its own function
and :func:`lookup` picks the newest one not newer than the model's opset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from .values import Dims, Value

if TYPE_CHECKING:
    from .node import NodeContext

Output: TypeAlias = Value | Dims | None
Result: TypeAlias = Output | Sequence[Output]
"""What a converter returns: its one output, or its outputs in order (None: not produced)."""
Converter: TypeAlias = Callable[["NodeContext"], Result]

_REGISTRY: dict[str, list[tuple[int, Converter]]] = {}


def converter(*op_types: str, since: int = 1) -> Callable[[Converter], Converter]:
    """Register the decorated function for ``op_types`` from opset ``since`` on."""

    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            entries = _REGISTRY.setdefault(op_type, [])
            if any(version == since for version, _ in entries):
                raise ValueError(f"{op_type} already has a converter for opset {since}")
            entries.append((since, fn))
            entries.sort(key=lambda entry: entry[0])
        return fn

    return register


def lookup(op_type: str, opset: int) -> Converter | None:
    """The converter for ``op_type`` at ``opset``, or None."""
    found: Converter | None = None
    for version, fn in _REGISTRY.get(op_type, []):
        if version <= opset:
            found = fn
    return found


def supported_ops() -> dict[str, list[int]]:
    """Every registered op type and the opsets where its converter changes."""
    return {op: [version for version, _ in entries] for op, entries in sorted(_REGISTRY.items())}
