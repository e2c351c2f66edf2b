"""Removing heads: shrinking the Q/K/V/O projections and rewriting the reshapes' head count."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from .structure import Attention, Projection, _linear, _shape_items

_PRODUCTS = (operator.mul, torch.mul)


class _UnchangedError(Exception):
    """An attention whose reshapes cannot be updated: it is left alone."""


def _split_items(att: Attention, split: fx.Node, heads: int, new_heads: int) -> list[Any]:
    """The split's reshape target for ``new_heads`` of its ``heads``; ``_UnchangedError`` when it
    cannot be updated.

    The head count and the head width become constants: the width never changes and the count is
    ``new_heads``, whether the model computed them (``size // heads``, of a tensor that may or
    may not shrink) or not.
    """
    items = _shape_items(split)
    if items is None:
        raise _UnchangedError(f"{split.name}: unreadable reshape target")
    head_item, dim_item = items[-2], items[-1]
    if isinstance(head_item, int) and head_item not in (-1, heads):
        raise _UnchangedError(f"{split.name}: the head count {head_item} is not {heads}")
    if isinstance(dim_item, int) and dim_item not in (-1, att.head_dim):
        raise _UnchangedError(f"{split.name}: head width {dim_item} is not {att.head_dim}")
    items[-2:] = [new_heads, att.head_dim]
    return items


def _merge_items(att: Attention, keep: int, group: int) -> list[Any]:
    """The merge's reshape target for ``keep`` units of ``group`` query heads; ``_UnchangedError``
    when it cannot be updated."""
    items = _shape_items(att.merge)
    if items is None:
        raise _UnchangedError(f"{att.merge.name}: unreadable reshape target")
    last, width = items[-1], att.heads * att.group * att.head_dim
    if isinstance(last, int) and last not in (-1, width):
        raise _UnchangedError(f"{att.merge.name}: merged width {last} is not {width}")
    items[-1] = keep * group * att.head_dim
    return items


def _count_items(att: Attention, node: fx.Node, index: int, factor: int, new: int) -> list[Any] | None:
    """A reshape carrying ``factor`` x the head count at ``index``: its new target with ``new`` there,
    None when it computes the count."""
    items = _shape_items(node)
    if items is None or index >= len(items):
        raise _UnchangedError(f"{node.name}: unreadable reshape target")
    item = items[index]
    if not isinstance(item, int) or item == -1:
        return None
    if item != factor * att.heads:
        raise _UnchangedError(f"{node.name}: item {item} is not {factor} x {att.heads} heads")
    items[index] = new
    return items


def _copies_items(node: fx.Node, index: int, group: int, new_group: int) -> list[Any]:
    """The repetition's ``expand`` target with ``new_group`` copies; ``_UnchangedError`` when it
    cannot be updated."""
    items = _shape_items(node)
    if items is None or index >= len(items) or items[index] not in (group, -1):
        raise _UnchangedError(f"{node.name}: the repetition's copies are not the constant {group}")
    items[index] = new_group
    return items


def _set_shape_items(node: fx.Node, items: list[Any]) -> None:
    if "shape" in node.kwargs:
        node.kwargs = {**node.kwargs, "shape": items}
    elif len(node.args) == 2 and isinstance(node.args[1], list | tuple):
        node.args = (node.args[0], items)
    else:
        node.args = (node.args[0], *items)


def _targets(att: Attention, keep: int, group: int) -> list[tuple[fx.Node, list[Any]]]:
    """Every reshape to rewrite for ``keep`` units of ``group`` query heads and its new target.

    A count made before the key/value repetition counts units; any other counts query heads, so it
    scales with ``group`` as well (a count of ``factor`` x units carries ``factor / att.group`` per
    query head).
    """
    targets = [(att.q.split, _split_items(att, att.q.split, att.heads * att.group, keep * group))]
    targets += [(p.split, _split_items(att, p.split, att.heads, keep)) for p in (att.k, att.v)]
    targets.append((att.merge, _merge_items(att, keep, group)))
    for node, index, factor in att.counts:
        if (node, index) in att.kv_counts:
            new = factor * keep
        elif factor % att.group:
            raise _UnchangedError(f"{node.name}: item {index} is not a count of query heads")
        else:
            new = factor // att.group * group * keep
            if group != att.group:
                targets += _computed_copies(node, index, att.group, group)
        items = _count_items(att, node, index, factor, new)
        if items is not None:
            targets.append((node, items))
    if group != att.group:
        targets += [(node, _copies_items(node, index, att.group, group)) for node, index in att.expands]
    return targets


def _computed_copies(
    node: fx.Node, index: int, group: int, new_group: int
) -> list[tuple[fx.Node, list[Any]]]:
    """A query-head count the model computes as ``key/value heads * group``: the product, new operands."""
    items = _shape_items(node)
    item = items[index] if items is not None and index < len(items) else None
    if not isinstance(item, fx.Node) or item.op != "call_function" or item.target not in _PRODUCTS:
        return []
    if group not in item.args:
        return []  # a product of sizes the model reads from the data: they follow
    return [(item, [new_group if a == group else a for a in item.args])]


def _rewrite(node: fx.Node, items: list[Any]) -> None:
    """Give ``node`` its new target (a reshape or expand) or operands (a computed count)."""
    if node.op == "call_function" and node.target in _PRODUCTS:
        node.args = tuple(items)
    else:
        _set_shape_items(node, items)


def check_rewritable(att: Attention, group: int | None = None) -> None:
    """Raise ``_UnchangedError`` when the reshapes of ``att`` cannot follow a new head count (of key/value
    heads, or with ``group``, of query heads per key/value head)."""
    if group is None:
        _targets(att, att.heads - 1, att.group)
    else:
        _targets(att, att.heads, group)


def _shrink_linear(module: nn.Linear, index: torch.Tensor, *, rows: bool) -> None:
    with torch.no_grad():
        if rows:
            module.weight = nn.Parameter(module.weight.detach()[index].clone())
            if module.bias is not None:
                module.bias = nn.Parameter(module.bias.detach()[index].clone())
            module.out_features = int(index.numel())
        else:
            module.weight = nn.Parameter(module.weight.detach()[:, index].clone())
            module.in_features = int(index.numel())


def _rows(projection: Projection, keep_units: Sequence[int], width: int, total: int) -> list[int]:
    """Output rows of ``projection``'s Linear that stay: per kept unit ``width`` rows, in its part."""
    offset = projection.part * total
    return [offset + u * width + j for u in keep_units for j in range(width)]


def _select_biases(gm: fx.GraphModule, att: Attention, kept_heads: Sequence[int]) -> None:
    """Give each per-head mask or bias of ``att`` an ``index_select`` of the kept query heads."""
    kept = torch.tensor(list(kept_heads))
    for node, index, axis in att.biases:
        number = 0
        while hasattr(gm, f"kept_heads_{number}"):
            number += 1
        name = f"kept_heads_{number}"
        gm.register_buffer(name, kept)
        with gm.graph.inserting_before(node):
            select = gm.graph.call_function(
                torch.index_select, (node.args[index], axis, gm.graph.get_attr(name))
            )
        args = list(node.args)
        args[index] = select
        node.args = tuple(args)


def remove_heads(gm: fx.GraphModule, att: Attention, drop: Sequence[int]) -> None:
    """Remove units ``drop`` of ``att`` (heads or key/value groups) from its projections and reshapes."""
    keep_units = [h for h in range(att.heads) if h not in set(drop)]
    if not keep_units:
        raise ValueError("at least one head must stay")
    if not drop:
        return
    keep = len(keep_units)
    for node, items in _targets(att, keep, att.group):
        _rewrite(node, items)
    q_width = att.group * att.head_dim
    rows: dict[str, list[int]] = {}
    for projection, width in ((att.q, q_width), (att.k, att.head_dim), (att.v, att.head_dim)):
        total = att.heads * width
        rows.setdefault(projection.path, []).extend(_rows(projection, keep_units, width, total))
    for path, kept in rows.items():
        _shrink_linear(_linear(gm, path), torch.tensor(sorted(kept)), rows=True)
    _select_biases(gm, att, [u * att.group + j for u in keep_units for j in range(att.group)])
    columns = torch.tensor([u * q_width + j for u in keep_units for j in range(q_width)])
    _shrink_linear(_linear(gm, att.o_path), columns, rows=False)
    att.heads = keep


def remove_query_heads(gm: fx.GraphModule, att: Attention, drop: Sequence[Sequence[int]]) -> None:
    """Remove query heads ``drop[u]`` (positions within key/value group ``u``, as many in every group)
    from the Q rows, the O columns and the reshapes; the key/value heads and their repetition's group
    structure stay (each key/value head is repeated for its remaining query heads)."""
    if len(drop) != att.heads or len({len(d) for d in drop}) != 1:
        raise ValueError("as many query heads must go from every key/value group")
    group = att.group - len(drop[0])
    if group < 1:
        raise ValueError("at least one query head must stay in each group")
    if group == att.group:
        return
    for node, items in _targets(att, att.heads, group):
        _rewrite(node, items)
    kept_heads = [u * att.group + j for u in range(att.heads) for j in range(att.group) if j not in drop[u]]
    d = att.head_dim
    rows = [att.q.part * att.heads * att.group * d + h * d + j for h in kept_heads for j in range(d)]
    _shrink_linear(_linear(gm, att.q.path), torch.tensor(rows), rows=True)
    _select_biases(gm, att, kept_heads)
    columns = torch.tensor([h * d + j for h in kept_heads for j in range(d)])
    _shrink_linear(_linear(gm, att.o_path), columns, rows=False)
    att.group = group
