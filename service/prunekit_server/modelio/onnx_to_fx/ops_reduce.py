"""Reductions along axes, Softmax / LogSoftmax, ArgMax / ArgMin and TopK.

Reduce ops took ``axes`` as an attribute until ReduceSum-13 and the others' opset 18,
and as an optional input since; both forms are registered.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch

from .node import NodeContext
from .registry import Output, Result, converter
from .shapes import itemwise
from .values import Dims, Value

_REDUCE_OPS = (
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
)
_ITEM_FOLDS: dict[str, Callable[[Any, Any], Any]] = {
    "ReduceSum": operator.add,
    "ReduceProd": operator.mul,
    "ReduceMax": max,
    "ReduceMin": min,
}


def _reduce(cx: NodeContext, axes: list[int] | None) -> Output:
    keep = bool(cx.attr_int("keepdims", 1))
    op = cx.op_type
    item = cx.input(0)
    if isinstance(item, Dims) and op in _ITEM_FOLDS and not item.scalar:
        folded = Dims([item.items[0]], True, item.dtype)
        for other in item.items[1:]:
            folded = itemwise(cx.builder, _ITEM_FOLDS[op], [folded, Dims([other], True, item.dtype)])
        return Dims(folded.items, not keep, item.dtype)
    x = cx.value(0)
    if not axes:
        if axes is not None and cx.attr_int("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.rank))
    dims = sorted({a % x.rank for a in axes}) if x.rank else []
    if op == "ReduceMean":
        return cx.call(torch.mean, x, dims, keepdim=keep)
    if op == "ReduceSum":
        return cx.call(torch.sum, x, dims, keepdim=keep)
    if op == "ReduceMax":
        return cx.call(torch.amax, x, dims, keepdim=keep)
    if op == "ReduceMin":
        return cx.call(torch.amin, x, dims, keepdim=keep)
    if op == "ReduceL1":
        return cx.call(torch.sum, cx.call(torch.abs, x), dims, keepdim=keep)
    if op == "ReduceL2":
        return cx.call(torch.linalg.vector_norm, x, 2, dims, keepdim=keep)
    if op == "ReduceSumSquare":
        return cx.call(torch.sum, cx.call(operator.mul, x, x), dims, keepdim=keep)
    if op == "ReduceLogSumExp":
        return cx.call(torch.logsumexp, x, dims, keepdim=keep)
    result = x
    for dim in reversed(dims):
        result = cx.call(torch.prod, result, dim, keepdim=keep)
    return result


@converter(*_REDUCE_OPS, since=1)
def reduce_attr_axes(cx: NodeContext) -> Output:
    return _reduce(cx, cx.attr_ints("axes"))


def _reduce_input_axes(cx: NodeContext) -> Output:
    return _reduce(cx, cx.ints(1) if cx.has(1) else None)


converter("ReduceSum", since=13)(_reduce_input_axes)
converter(*(op for op in _REDUCE_OPS if op != "ReduceSum"), since=18)(_reduce_input_axes)


def _softmax_fn(cx: NodeContext) -> Callable[..., Any]:
    return torch.softmax if cx.op_type == "Softmax" else torch.log_softmax


@converter("Softmax", "LogSoftmax", since=1)
def softmax_2d(cx: NodeContext) -> Output:
    """Opsets before 13: the input is flattened to 2-D at ``axis`` (default 1)."""
    x = cx.value(0)
    axis = cx.attr_int("axis", 1) % max(x.rank, 1)
    fn = _softmax_fn(cx)
    if axis >= x.rank - 1:
        return cx.call(fn, x, -1)
    flat = cx.call(torch.flatten, x, axis)
    return cx.method("reshape_as", cx.call(fn, flat, axis), x)


@converter("Softmax", "LogSoftmax", since=13)
def softmax(cx: NodeContext) -> Output:
    return cx.call(_softmax_fn(cx), cx.value(0), cx.attr_int("axis", -1))


@converter("ArgMax", "ArgMin")
def arg_extreme(cx: NodeContext) -> Output:
    x = cx.value(0)
    axis = cx.attr_int("axis", 0) % max(x.rank, 1)
    keep = bool(cx.attr_int("keepdims", 1))
    fn = torch.argmax if cx.op_type == "ArgMax" else torch.argmin
    if not cx.attr_int("select_last_index", 0):
        return cx.call(fn, x, axis, keepdim=keep)
    flipped = cx.call(fn, cx.call(torch.flip, x, [axis]), axis, keepdim=keep)
    last = cx.call(operator.sub, cx.size(x, axis), 1)
    return cx.call(operator.sub, last, flipped)


@converter("TopK", since=1)
def topk(cx: NodeContext) -> Result:
    k: Any = cx.attr_int("k", 1)
    if cx.opset >= 10:
        dims = cx.dims(1)
        k = dims.items[0]
    x = cx.value(0)
    axis = cx.attr_int("axis", -1)
    largest = bool(cx.attr_int("largest", 1))
    result = cx.call(torch.topk, x, k, axis, largest=largest, sorted=bool(cx.attr_int("sorted", 1)))
    values: Value = cx.builder.getitem(result, 0)
    indices: Value = cx.builder.getitem(result, 1)
    return [values, indices]
