"""Walking from a score matmul's operand back to the Linear whose output it splits into heads.

Between the two the exporters put: permutes and transposes, dropout, casts and
scalar scaling; reshapes that change nothing; rotary embeddings
(``x * cos + rotate_half(x) * sin``, the tables free of the head axis); the
key/value repetition of grouped-query attention (``unsqueeze``, ``expand``,
a reshape merging the copies into the head axis); and the dynamo exporter's
round trip through a 3-D tensor (batch and heads merged, a permute of the
others, split back). Before the split into heads: scalar scaling, casts,
reshapes keeping the last axis and, for a fused projection, ``chunk`` on the
last axis of one Linear's output.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..fx_tools import shape_of
from .structure import (
    Projection,
    _is_call,
    _is_pass_through,
    _is_permute,
    _is_reshape,
    _permutation,
    _shape_items,
    _tensor_operand,
)

_ADDS = (operator.add, torch.add)
_MULS = (operator.mul, torch.mul)


@dataclass
class Step:
    """One step of a walk, in walk order (from the operand back).

    ``perm``: output axis ``a`` of the step is input axis ``perm[a]`` (None: axes unchanged).
    ``counts``: reshapes (or expands) carrying the head count at ``head position + offset``.
    """

    nodes: list[fx.Node]
    perm: list[int] | None = None
    counts: list[tuple[fx.Node, int]] = field(default_factory=list)
    repeat: int = 1
    expand: fx.Node | None = None
    """The grouped-query repetition's ``expand``: key/value heads at the head position, copies next."""


@dataclass
class Walk:
    """A projection found from a matmul operand: operand axis -> split axis, nodes, head-count sites."""

    projection: Projection
    axes: list[int]
    nodes: list[fx.Node]
    counts: list[tuple[fx.Node, int, int]]
    """``(node, item index, size there)`` for every reshape carrying the head count."""
    repeat: int = 1
    kv_counts: list[tuple[fx.Node, int]] = field(default_factory=list)
    """The counts made before the key/value heads are repeated (they count key/value heads)."""
    expands: list[tuple[fx.Node, int]] = field(default_factory=list)
    """``(expand, item index)`` of the repetition's copies (the query heads per key/value head)."""


def _rank(node: Any) -> int:
    return len(shape_of(node) or ())


def _table_free_of_heads(table: Any, rank: int) -> bool:
    """A rotary table: no axis but the last two larger than 1 once broadcast to ``rank``."""
    if not isinstance(table, fx.Node):
        return True
    shape = shape_of(table)
    if shape is None or len(shape) > rank:
        return False
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    return all(s == 1 for s in padded[:-2])


def _times_table(node: Any) -> fx.Node | None:
    """``x * table`` (either order) with a head-free table: x."""
    if not _is_call(node, _MULS, ("mul",)) or len(node.args) != 2:
        return None
    here = shape_of(node)
    for x, table in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
        free = here is not None and _table_free_of_heads(table, len(here))
        if isinstance(x, fx.Node) and free and shape_of(x) == here:
            return x
    return None


def _last_axis_slice(node: Any) -> fx.Node | None:
    """``x[..., a:b]`` (getitem slicing the last axis only): x."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is operator.getitem):
        return None
    source, index = node.args[0], node.args[1]
    if not isinstance(source, fx.Node) or not isinstance(index, tuple) or len(index) != _rank(source):
        return None
    if any(item != slice(None) for item in index[:-1]) or not isinstance(index[-1], slice):
        return None
    return source


def _rotation(node: Any) -> tuple[fx.Node, list[fx.Node]] | None:
    """``cat([-x2, x1], -1)`` of two halves of x's last axis: x and the nodes."""
    if not _is_call(node, (torch.cat, torch.concat), ()) or not isinstance(node.args[0], list | tuple):
        return None
    parts = list(node.args[0])
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if len(parts) != 2 or not isinstance(dim, int) or dim % max(1, _rank(node)) != _rank(node) - 1:
        return None
    nodes: list[fx.Node] = [node]
    sources = []
    for part in parts:
        if _is_call(part, (torch.neg, operator.neg), ("neg",)):
            nodes.append(part)
            part = part.args[0]
        source = _last_axis_slice(part)
        if source is None:
            return None
        nodes.append(part)
        sources.append(source)
    if sources[0] is not sources[1] or len(nodes) != 4:
        return None
    return sources[0], nodes


def _rope(node: fx.Node) -> Step | None:
    """Rotary embedding ``x * cos + rotate_half(x) * sin``: a step back to x."""
    if not _is_call(node, _ADDS, ("add",)) or len(node.args) != 2:
        return None
    a, b = node.args
    for plain, rotated in ((a, b), (b, a)):
        x, r = _times_table(plain), _times_table(rotated)
        if x is None or r is None:
            continue
        found = _rotation(r)
        if found is not None and found[0] is x:
            return Step([node, plain, rotated, *found[1]])  # type: ignore[list-item]
    return None


def _source(node: fx.Node) -> Any:
    return node.args[0]


def _expanded(node: Any) -> tuple[fx.Node, int, int, list[fx.Node]] | None:
    """``expand(unsqueeze(x, k))`` making copies along the new axis k: x, k, the copies and the nodes."""
    if not _is_call(node, (torch.Tensor.expand,), ("expand",)):
        return None
    unsqueeze = node.args[0]
    if not _is_call(unsqueeze, (torch.unsqueeze,), ("unsqueeze",)):
        return None
    x = unsqueeze.args[0]
    axis = unsqueeze.args[1] if len(unsqueeze.args) > 1 else unsqueeze.kwargs.get("dim")
    xs, es = shape_of(x), shape_of(node)
    if not isinstance(x, fx.Node) or xs is None or es is None or not isinstance(axis, int):
        return None
    axis %= len(xs) + 1
    return (x, axis, es[axis], [node, unsqueeze]) if axis > 0 else None


def _repeat(node: fx.Node) -> Step | None:
    """Grouped-query repetition: reshape(expand(unsqueeze(x, k)), ...) merging the copies into axis k - 1."""
    found = _expanded(node.args[0])
    if found is None:
        return None
    x, axis, copies, nodes = found
    xs, out = shape_of(x), shape_of(node)
    if xs is None or out is None or len(out) != len(xs):
        return None
    merged = list(xs)
    merged[axis - 1] *= copies
    if tuple(merged) != tuple(out):
        return None
    return Step([node, *nodes], counts=[(node, 0), (nodes[0], 0)], repeat=copies, expand=nodes[0])


def _round_trip(node: fx.Node) -> Step | None:
    """reshape(permute(reshape(x, (B*H, ...)), (0, ...)), (B, H, ...)): a permute of x's later axes.

    x may be the grouped-query repetition of the key/value heads (``expand(unsqueeze(x, 2))``).
    """
    permute: Any = node.args[0]
    if not _is_permute(permute):
        return None
    merge: Any = permute.args[0]
    if not _is_reshape(merge):
        return None
    nodes, counts, repeat, expand = [node, permute, merge], [(merge, -1), (node, 0)], 1, None
    xs = shape_of(merge.args[0])
    expanded = _expanded(merge.args[0])
    if expanded is not None and expanded[1] == 2:
        x, _, repeat, more = expanded
        inner = shape_of(x)
        if inner is None:
            return None
        xs = (inner[0], inner[1] * repeat, *inner[2:])
        nodes += more
        counts.append((more[0], 0))
        expand = more[0]
    ms, ps, out = shape_of(merge), shape_of(permute), shape_of(node)
    if xs is None or ms is None or ps is None or out is None or len(xs) < 3:
        return None
    if tuple(ms) != (xs[0] * xs[1], *xs[2:]) or tuple(out) != (xs[0], xs[1], *ps[1:]):
        return None
    perm = _permutation(permute, len(ms))
    if perm is None or perm[0] != 0:
        return None
    full = [0, 1, *(p + 1 for p in perm[1:])]
    return Step(nodes, perm=full, counts=counts, repeat=repeat, expand=expand)


def _step(gm: fx.GraphModule, node: fx.Node) -> tuple[Step, Any] | None:
    """The step back from ``node`` and where it leads; None at anything else."""
    if _is_permute(node):
        return Step([node], perm=_permutation(node, _rank(node))), _source(node)
    if _is_pass_through(gm, node):
        return Step([node]), _source(node)
    scaled = _tensor_operand(node)
    if scaled is not None:
        return Step([node]), scaled
    rope = _rope(node)
    if rope is not None:
        return rope, _times_table(rope.nodes[1])
    if not _is_reshape(node):
        return None
    if shape_of(node) is not None and shape_of(node) == shape_of(node.args[0]):
        return Step([node], counts=[(node, 0)]), _source(node)
    for special in (_repeat, _round_trip):
        found = special(node)
        if found is not None:
            return found, found.nodes[-1].args[0]
    return None


def _linear_source(gm: fx.GraphModule, split: fx.Node) -> Projection | None:
    """From a split back to its Linear: scaling, casts, last-axis-keeping reshapes, one ``chunk``."""
    between: list[fx.Node] = []
    part, parts = 0, 1
    node = split.args[0]
    for _ in range(8):
        if not isinstance(node, fx.Node):
            return None
        if node.op == "call_module":
            if not isinstance(gm.get_submodule(str(node.target)), nn.Linear):
                return None
            return Projection(node, str(node.target), split, part, parts, between)
        if _is_pass_through(gm, node) or _tensor_operand(node) is not None:
            between.append(node)
            node = _tensor_operand(node) or node.args[0]
            continue
        if node.op == "call_function" and node.target is operator.getitem and parts == 1:
            chunk: Any = node.args[0]
            if not _is_call(chunk, (torch.chunk,), ("chunk",)) or not isinstance(node.args[1], int):
                return None
            dim = chunk.args[2] if len(chunk.args) > 2 else chunk.kwargs.get("dim", 0)
            if not isinstance(dim, int) or dim % _rank(chunk.args[0]) != _rank(chunk.args[0]) - 1:
                return None
            part, parts = node.args[1], int(chunk.args[1])
            between += [node, chunk]
            node = chunk.args[0]
            continue
        if _is_reshape(node):
            items = _shape_items(node)
            before, after = shape_of(node.args[0]), shape_of(node)
            if not items or isinstance(items[-1], int) or not before or not after or before[-1] != after[-1]:
                return None
            between.append(node)
            node = node.args[0]
            continue
        return None
    return None


def _is_head_split(node: fx.Node) -> bool:
    """A reshape ``(..., H*d) -> (..., H, d)``."""
    if not _is_reshape(node):
        return False
    src, out = shape_of(node.args[0]), shape_of(node)
    if not src or not out or len(out) != len(src) + 1:
        return False
    return out[:-2] == src[:-1] and out[-2] * out[-1] == src[-1]


def walk_back(gm: fx.GraphModule, start: Any) -> Walk | None:
    """From a matmul operand back to the reshape of a Linear splitting its output into heads."""
    steps: list[Step] = []
    node = start
    for _ in range(32):
        if not isinstance(node, fx.Node):
            return None
        if _is_head_split(node):
            break
        found = _step(gm, node)
        if found is None:
            return None
        steps.append(found[0])
        node = found[1]
    else:
        return None
    projection = _linear_source(gm, node)
    if projection is None:
        return None
    return _finish(projection, steps)


def _finish(projection: Projection, steps: list[Step]) -> Walk | None:
    """Axes and head-count sites, going forward from the split."""
    rank = _rank(projection.split)
    axes = list(range(rank))  # current axis -> split axis
    head = rank - 2
    counts: list[tuple[fx.Node, int, int]] = []
    kv_counts: list[tuple[fx.Node, int]] = []
    expands: list[tuple[fx.Node, int]] = []
    repeat = 1
    for step in reversed(steps):
        for count_node, offset in step.counts:
            index = head + offset
            shape = shape_of(count_node)
            if index < 0 or shape is None or index >= len(shape):
                return None
            counts.append((count_node, index, shape[index]))
            if repeat == 1 and (step.repeat == 1 or count_node is step.expand):
                kv_counts.append((count_node, index))
        if step.expand is not None:
            expands.append((step.expand, head + 1))
        if step.perm is not None:
            if len(step.perm) != len(axes):
                return None
            axes = [axes[p] for p in step.perm]
            head = step.perm.index(head)
        repeat *= step.repeat
    nodes = [n for step in steps for n in step.nodes]
    return Walk(projection, axes, nodes, counts, repeat, kv_counts, expands)
