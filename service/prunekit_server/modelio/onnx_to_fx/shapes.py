"""Shapes that follow the data.

Exporters freeze sizes into constants: ``x.view(B, T, 4, 8)`` becomes a Reshape to
``[2, 8, 4, 8]``, a channel shuffle to ``[1, 2, 8, 16, 16]``. After pruning shrinks a
layer those numbers are wrong. The converter therefore re-derives them from the
tensor being reshaped, using the sizes seen on the sample inputs:

* the input and output shapes are split into the smallest aligned groups with
  equal products (:func:`align`): ``[B, T, 32] -> [B, T, 4, 8]`` gives ``B|B``,
  ``T|T``, ``32|4,8``;
* a one-to-one group reads the input size at run time (``x.size(i)``);
* a merge (``H, W -> H*W``) multiplies the input sizes;
* a split (``32 -> 4, 8``) keeps the leading factors (heads, groups) and computes
  the last one (``x.size(i) // 4``): a pruned head width or group width follows;
* a group that already holds ``-1`` or a run-time size, or that cannot be aligned,
  is left as the model wrote it.

Expand targets are rewritten the same way (``-1`` wherever the target keeps the
input's size), and shape arithmetic is done item by item (:func:`itemwise`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .builder import GraphBuilder
from .values import Dims, Value, const

Group = tuple[list[int], list[int]]


def align(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[Group] | None:
    """Pair consecutive input and output dimensions into groups of equal products, or None."""
    if 0 in in_shape or 0 in out_shape:
        return None
    groups: list[Group] = []
    i = j = 0
    n, m = len(in_shape), len(out_shape)
    while i < n or j < m:
        in_one = i < n and in_shape[i] == 1
        out_one = j < m and out_shape[j] == 1
        if out_one and not in_one:
            groups.append(([], [j]))
            j += 1
            continue
        if in_one and not out_one:
            groups.append(([i], []))
            i += 1
            continue
        if i >= n or j >= m:
            return None
        gi, gj = [i], [j]
        pi, pj = in_shape[i], out_shape[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i >= n:
                    return None
                pi *= in_shape[i]
                gi.append(i)
                i += 1
            else:
                if j >= m:
                    return None
                pj *= out_shape[j]
                gj.append(j)
                j += 1
        groups.append((gi, gj))
    return groups


def product(builder: GraphBuilder, values: Sequence[Value]) -> Value:
    result = values[0]
    for value in values[1:]:
        result = builder.call(operator.mul, result, value)
    return result


def reshape_items(
    builder: GraphBuilder, x: Value, target: Dims, out_shape: Sequence[int], *, allowzero: bool
) -> list[Value]:
    """The items of a Reshape target rewritten to follow ``x``'s sizes (see the module doc)."""
    items = list(target.items)
    for j, item in enumerate(items):
        if item.is_const and item.example == 0 and not allowzero:
            items[j] = builder.size(x, j)
    groups = align(x.shape, out_shape)
    if groups is None:
        return items
    for gi, gj in groups:
        if not gj or not all(items[j].is_const and items[j].example != -1 for j in gj):
            continue
        if len(gi) == 1 and len(gj) == 1:
            items[gj[0]] = builder.size(x, gi[0])
        elif len(gj) == 1 and len(gi) > 1:
            items[gj[0]] = product(builder, [builder.size(x, i) for i in gi])
        elif len(gi) == 1 and len(gj) > 1:
            leading = math.prod(int(items[j].example) for j in gj[:-1])
            items[gj[-1]] = builder.call(operator.floordiv, builder.size(x, gi[0]), leading)
    return items


def expand_items(builder: GraphBuilder, x: Value, target: Dims) -> list[Value]:
    """``Tensor.expand`` sizes for ONNX Expand (two-way broadcasting), ``-1`` where x's size stays
    (where x's size is not 1, a valid target there is 1 or that size)."""
    rank = x.rank
    out_rank = max(rank, len(target.items))
    padded = [const(1)] * (out_rank - len(target.items)) + list(target.items)
    sizes: list[Value] = []
    for k, item in enumerate(padded):
        in_pos = k - (out_rank - rank)
        if in_pos < 0:
            sizes.append(item)
        elif item.is_const and item.example in (1, x.shape[in_pos]):
            sizes.append(const(-1))
        elif not item.is_const and x.shape[in_pos] != 1:
            sizes.append(const(-1))  # a size read at run time: 1 or x's own size, either way x's
        else:
            sizes.append(item)
    return sizes


def itemwise(
    builder: GraphBuilder,
    fn: Callable[..., Any],
    operands: Sequence[Dims],
    dtype: torch.dtype | None = None,
) -> Dims:
    """``fn`` applied item by item with broadcasting of one-item operands."""
    length = max(len(d.items) for d in operands)
    if any(len(d.items) not in (1, length) for d in operands):
        raise ValueError("shape operands of different lengths")
    items = [
        builder.call(fn, *(d.items[k if len(d.items) > 1 else 0] for d in operands)) for k in range(length)
    ]
    scalar = all(d.scalar for d in operands)
    return Dims(items, scalar, dtype or operands[0].dtype)


def as_dims(item: Value | Dims) -> Dims | None:
    """``item`` as Dims when it is shape-like: Dims already, or a small constant 0-D/1-D number tensor."""
    if isinstance(item, Dims):
        return item
    if item.is_const and isinstance(item.example, torch.Tensor):
        tensor = item.example
        if tensor.dim() <= 1 and tensor.numel() <= 64 and tensor.dtype != torch.bool:
            return Dims.from_tensor(tensor)
    return None


def select(cond: Any, a: Any, b: Any) -> Any:
    """``a if cond else b`` for shape items (the item-wise ONNX Where)."""
    return a if cond else b


def truncdiv(a: Any, b: Any) -> Any:
    """Integer division rounding toward zero, as ONNX Div on integers."""
    quotient = a // b
    return quotient + 1 if (quotient < 0 and quotient * b != a) else quotient


def logical_not(a: Any) -> Any:
    return not a
