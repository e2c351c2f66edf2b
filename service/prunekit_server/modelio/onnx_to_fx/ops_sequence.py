"""Sequence ops as scripted TorchScript exports them (``list(x.chunk(2, 1))``, ``append``, ``cat``).

A sequence is a tuple of values known at conversion time (its length is static):
``SplitToSequence`` (equal parts become ``chunk``, so they follow a pruned
width), ``SequenceConstruct``, ``SequenceEmpty``, ``SequenceAt``,
``SequenceInsert`` and ``SequenceErase`` with constant positions,
``SequenceLength``, ``ConcatFromSequence`` (``new_axis`` stacks).
A sequence held as a value is a constant whose example is that tuple; only these
converters read it.
"""

from __future__ import annotations

import torch

from .node import NodeContext
from .registry import Output, Result, converter
from .values import Dims, Value, const


def _held(item: Value | Dims) -> Value | Dims:
    """A value kept in a sequence: its own record, so freeing the named value's sample spares it."""
    return Value(item.node, item.example, item.origin) if isinstance(item, Value) else item


def _sequence(cx: NodeContext, index: int) -> tuple[Value | Dims, ...]:
    item = cx.input(index)
    if not isinstance(item, Value) or not isinstance(item.example, tuple):
        cx.fail(f"input {index} is not a sequence known at conversion time")
    return item.example


def _position(cx: NodeContext, index: int, length: int, default: int) -> int:
    if not cx.has(index):
        return default
    item = cx.input(index)
    examples = item.examples if isinstance(item, Dims) else None
    if isinstance(item, Dims) and item.is_const and examples:
        position = int(examples[0])
    elif isinstance(item, Value) and item.is_const:
        position = int(item.tensor.reshape(-1)[0])
    else:
        cx.fail(f"input {index} (a position) must be a constant")
    return position + length if position < 0 else position


@converter("SplitToSequence")
def split_to_sequence(cx: NodeContext) -> Result:
    x = cx.value(0)
    axis = cx.attr_int("axis", 0) % x.rank
    size = x.shape[axis]
    if cx.has(1):
        split = cx.input(1)
        sizes = [
            int(v) for v in (split.examples if isinstance(split, Dims) else split.tensor.reshape(-1).tolist())
        ]
        if (isinstance(split, Value) and split.rank == 0) or (len(sizes) == 1 and sizes[0] != size):
            sizes = [sizes[0]] * (size // sizes[0]) + ([size % sizes[0]] if size % sizes[0] else [])
    else:
        sizes = [1] * size
    if sum(sizes) != size:
        cx.fail(f"split sizes {sizes} do not add up to {size}")
    if len(set(sizes)) == 1:
        parts = cx.call(torch.chunk, x, len(sizes), axis)
    else:
        parts = cx.call(torch.split, x, sizes, axis)
    values: tuple[Value | Dims, ...] = tuple(cx.builder.getitem(parts, k) for k in range(len(sizes)))
    if not cx.has(1) and cx.attr_int("keepdims", 1) == 0:
        values = tuple(cx.call(torch.squeeze, v, axis) for v in values)
    return const(values)


@converter("SequenceConstruct")
def sequence_construct(cx: NodeContext) -> Output:
    return const(tuple(_held(cx.input(k)) for k in range(cx.num_inputs)))


@converter("SequenceAt")
def sequence_at(cx: NodeContext) -> Output:
    items = _sequence(cx, 0)
    position = _position(cx, 1, len(items), 0)
    if not 0 <= position < len(items):
        cx.fail(f"position {position} is outside a sequence of {len(items)}")
    return _held(items[position])


@converter("SequenceInsert")
def sequence_insert(cx: NodeContext) -> Output:
    items = list(_sequence(cx, 0))
    position = _position(cx, 2, len(items), len(items))
    items.insert(position, _held(cx.input(1)))
    return const(tuple(items))


@converter("SequenceLength")
def sequence_length(cx: NodeContext) -> Output:
    return const(torch.tensor(len(_sequence(cx, 0)), dtype=torch.int64))


@converter("ConcatFromSequence")
def concat_from_sequence(cx: NodeContext) -> Output:
    items = [cx.builder.dims_tensor(i) if isinstance(i, Dims) else i for i in _sequence(cx, 0)]
    if not items:
        cx.fail("an empty sequence")
    axis = cx.attr_int("axis", 0)
    if cx.attr_int("new_axis", 0):
        return cx.call(torch.stack, items, axis % (items[0].rank + 1))
    return cx.call(torch.cat, items, axis % items[0].rank)


@converter("SequenceEmpty")
def sequence_empty(cx: NodeContext) -> Output:
    return const(())


@converter("SequenceErase")
def sequence_erase(cx: NodeContext) -> Output:
    items = list(_sequence(cx, 0))
    position = _position(cx, 1, len(items), len(items) - 1)
    if not 0 <= position < len(items):
        cx.fail(f"position {position} is outside a sequence of {len(items)}")
    del items[position]
    return const(tuple(items))
