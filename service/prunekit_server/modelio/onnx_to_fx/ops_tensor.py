"""Moving data around: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice,
Gather, Expand, Tile.

Sizes are read from the data wherever the ONNX graph froze them (see :mod:`.shapes`):
Reshape and Expand targets are rewritten, Flatten is ``torch.flatten``, an even Split is
``torch.chunk`` and an uneven one computes its last part, and Slice bounds at or past
the end of an axis become open (``x[:, 2:]``).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch

from .node import NodeContext
from .ops_transformer import embedding
from .registry import Output, Result, converter
from .shapes import as_dims, expand_items, reshape_items
from .values import Dims, Value, const

_OPEN_END = 2**62


def _onnx_reshape_shape(in_shape: list[int], target: list[int], allowzero: bool) -> list[int]:
    out = [in_shape[k] if (t == 0 and not allowzero) else t for k, t in enumerate(target)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(in_shape) // known if known else 0
    return out


@converter("Reshape")
def reshape(cx: NodeContext) -> Output:
    item = cx.input(0)
    if isinstance(item, Dims) and len(cx.ints(1)) <= 1:
        return Dims(item.items, len(cx.ints(1)) == 0, item.dtype)
    x = cx.value(0)  # shape-like numbers reshaped to 2-D (a pad's [begins, ends] pairs) become a tensor
    target = cx.dims(1)
    allowzero = bool(cx.attr_int("allowzero", 0))
    examples = [int(v) for v in target.examples]
    out_shape = _onnx_reshape_shape(x.shape, examples, allowzero)
    items = reshape_items(cx.builder, x, target, out_shape, allowzero=allowzero)
    return cx.call(torch.reshape, x, items)


@converter("Flatten")
def flatten(cx: NodeContext) -> Output:
    x = cx.value(0)
    axis = cx.attr_int("axis", 1)
    axis = axis + x.rank if axis < 0 else axis
    if axis == 0:
        return cx.call(torch.reshape, x, [1, -1])
    if axis >= x.rank:
        return cx.call(torch.reshape, x, [-1, 1])
    flat = cx.call(torch.flatten, x, axis)
    return flat if axis == 1 else cx.call(torch.flatten, flat, 0, axis - 1)


@converter("Transpose")
def transpose(cx: NodeContext) -> Output:
    x = cx.value(0)
    perm = cx.attr_ints("perm") or list(reversed(range(x.rank)))
    result = cx.call(torch.permute, x, perm)
    if x.is_const:
        result.origin = x.origin
    return result


def _squeeze(cx: NodeContext, axes: list[int] | None) -> Output:
    item = cx.input(0)
    if isinstance(item, Dims):
        return Dims(item.items, len(item.items) == 1, item.dtype)
    x = item
    if axes is None:
        axes = [d for d, n in enumerate(x.shape) if n == 1]
    result = x
    for dim in sorted({a % x.rank for a in axes}, reverse=True):
        # one dimension per call: torch's ONNX exporter takes only a constant int for squeeze's dim
        result = cx.call(torch.squeeze, result, dim)
    return result


def _unsqueeze(cx: NodeContext, axes: list[int]) -> Output:
    item = cx.input(0)
    if isinstance(item, Dims) and item.scalar and len(axes) == 1:
        return Dims(item.items, False, item.dtype)
    x = cx.value(0)
    out_rank = x.rank + len(axes)
    result = x
    for axis in sorted(a % out_rank for a in axes):
        result = cx.call(torch.unsqueeze, result, axis)
    return result


@converter("Squeeze", since=1)
def squeeze_attr(cx: NodeContext) -> Output:
    return _squeeze(cx, cx.attr_ints("axes"))


@converter("Squeeze", since=13)
def squeeze(cx: NodeContext) -> Output:
    return _squeeze(cx, cx.ints(1) if cx.has(1) else None)


@converter("Unsqueeze", since=1)
def unsqueeze_attr(cx: NodeContext) -> Output:
    return _unsqueeze(cx, cx.attr_ints("axes") or [])


@converter("Unsqueeze", since=13)
def unsqueeze(cx: NodeContext) -> Output:
    return _unsqueeze(cx, cx.ints(1))


@converter("Concat")
def concat(cx: NodeContext) -> Output:
    indices = [k for k in range(cx.num_inputs) if cx.has(k)]
    items = [cx.input(k) for k in indices]
    if any(isinstance(i, Dims) for i in items):
        dims = [as_dims(i) for i in items]
        if all(d is not None and not d.scalar for d in dims):
            parts = [d for d in dims if d is not None]
            return Dims([v for d in parts for v in d.items], False, parts[0].dtype)
    values = [cx.value(k) for k in indices]
    values = [v for v in values if v.tensor.numel() or v.rank > 1] or values
    return cx.call(torch.cat, values, cx.attr_int("axis", 0))


def _split(cx: NodeContext, sizes: list[int] | None) -> Result:
    count = len(cx.proto.output)
    item = cx.input(0)
    if isinstance(item, Dims):
        lengths = sizes or [len(item.items) // count] * count
        starts = [sum(lengths[:k]) for k in range(count)]
        return [Dims(item.items[s : s + n], False, item.dtype) for s, n in zip(starts, lengths, strict=True)]
    x = item
    axis = cx.attr_int("axis", 0) % x.rank
    total = x.shape[axis]
    if sizes is None:
        if total % count:
            sizes = [-(-total // count)] * (count - 1)
            sizes.append(total - sum(sizes))
        else:
            sizes = [total // count] * count
    if len(set(sizes)) == 1 and sum(sizes) == total:
        parts = cx.call(torch.chunk, x, count, axis)
    else:
        rest = cx.call(operator.sub, cx.size(x, axis), sum(sizes[:-1]))
        parts = cx.call(torch.split, x, [*sizes[:-1], rest], axis)
    return [cx.builder.getitem(parts, k) for k in range(count)]


@converter("Split", since=1)
def split_attr(cx: NodeContext) -> Result:
    return _split(cx, cx.attr_ints("split"))


@converter("Split", since=13)
def split(cx: NodeContext) -> Result:
    return _split(cx, cx.ints(1) if cx.has(1) else None)


def _slice(
    cx: NodeContext, starts: Dims, ends: Dims, axes: list[int] | None, steps: list[int] | None
) -> Output:
    item = cx.input(0)
    count = len(starts.items)
    axes = axes if axes is not None else list(range(count))
    steps = steps if steps is not None else [1] * count
    if isinstance(item, Dims):
        if not (starts.is_const and ends.is_const) or axes not in ([0], [-1]):
            cx.fail("slicing a shape needs constant bounds")
        bounds = slice(int(starts.examples[0]), _open(int(ends.examples[0]), len(item.items)), steps[0])
        return Dims(item.items[bounds], False, item.dtype)
    x = item
    index: list[Any] = [slice(None)] * x.rank
    flips: list[int] = []
    for start, end, axis, step in zip(starts.items, ends.items, axes, steps, strict=True):
        axis %= x.rank
        size = x.shape[axis]
        if step > 0:
            begin = start if not start.is_const else _open_start(int(start.example), size)
            stop = end if not end.is_const else _open(int(end.example), size)
            index[axis] = slice(begin, stop, step if step != 1 else None)
            continue
        if not (start.is_const and end.is_const):
            cx.fail("negative steps need constant starts and ends")
        s, e = int(start.example), int(end.example)
        s = min(max(s + size if s < 0 else s, 0), size - 1)
        e = min(max(e + size if e < 0 else e, -1), size - 1)
        flips.append(axis)
        index[axis] = slice(size - 1 - s, size - 1 - e, -step)
    source = cx.call(torch.flip, x, flips) if flips else x
    while index and index[-1] == slice(None):
        index.pop()
    return cx.builder.getitem(source, tuple(index)) if index else source


def _open(end: int, size: int) -> int | None:
    return None if end >= size or end >= _OPEN_END else end


def _open_start(start: int, size: int) -> int | None:
    return None if start == 0 or start <= -size else start


@converter("Slice", since=1)
def slice_attr(cx: NodeContext) -> Output:
    starts = Dims([const(v) for v in cx.attr_ints("starts") or []])
    ends = Dims([const(v) for v in cx.attr_ints("ends") or []])
    return _slice(cx, starts, ends, cx.attr_ints("axes"), None)


@converter("Slice", since=10)
def slice_(cx: NodeContext) -> Output:
    axes = cx.ints(3) if cx.has(3) else None
    steps = cx.ints(4) if cx.has(4) else None
    return _slice(cx, cx.dims(1), cx.dims(2), axes, steps)


@converter("Gather")
def gather(cx: NodeContext) -> Output:
    item = cx.input(0)
    axis = cx.attr_int("axis", 0)
    if isinstance(item, Dims):
        positions = cx.const(1)
        picked = [item.items[int(k)] for k in positions.reshape(-1).tolist()]
        return Dims(picked, positions.dim() == 0, item.dtype)
    data, indices = cx.value(0), cx.value(1)
    axis %= data.rank
    table = data.is_const and data.rank == 2 and axis == 0 and data.dtype.is_floating_point
    if table and not indices.is_const and not indices.dtype.is_floating_point:
        return embedding(cx, data, indices)
    if indices.is_const and indices.rank == 0:
        return cx.call(torch.select, data, axis, int(indices.tensor.item()))
    index: tuple[Any, ...] = (slice(None),) * axis + (indices,)
    return cx.builder.getitem(data, index)


@converter("Expand")
def expand(cx: NodeContext) -> Output:
    x = cx.value(0)
    sizes = expand_items(cx.builder, x, cx.dims(1))
    if all(s.is_const and s.example == -1 for s in sizes) and len(sizes) == x.rank:
        return x
    return cx.method("expand", x, sizes)


@converter("Tile")
def tile(cx: NodeContext) -> Output:
    x = cx.value(0)
    repeats: list[Value] = list(cx.dims(1).items)
    return cx.method("repeat", x, repeats)
