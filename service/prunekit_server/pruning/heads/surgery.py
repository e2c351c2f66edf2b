"""Removing heads: shrinking the Q/K/V/O projections and rewriting the reshapes' head count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from .structure import Attention, Projection, _linear, _shape_items


class _UnchangedError(Exception):
    """An attention whose reshapes cannot be updated: it is left alone."""


def _split_items(att: Attention, split: fx.Node, keep: int, per_unit: int) -> list[Any]:
    """The split's reshape target for ``keep`` units; ``_UnchangedError`` when it cannot be updated.

    The head count and the head width become constants: the width never changes and the count is
    ``keep * per_unit``, whether the model computed them (``size // heads``, of a tensor that may or
    may not shrink) or not.
    """
    items = _shape_items(split)
    if items is None:
        raise _UnchangedError(f"{split.name}: unreadable reshape target")
    head_item, dim_item = items[-2], items[-1]
    if isinstance(head_item, int) and head_item not in (-1, att.heads * per_unit):
        raise _UnchangedError(f"{split.name}: the head count {head_item} is not {att.heads * per_unit}")
    if isinstance(dim_item, int) and dim_item not in (-1, att.head_dim):
        raise _UnchangedError(f"{split.name}: head width {dim_item} is not {att.head_dim}")
    items[-2:] = [keep * per_unit, att.head_dim]
    return items


def _merge_items(att: Attention, keep: int) -> list[Any]:
    """The merge's reshape target for ``keep`` units; ``_UnchangedError`` when it cannot be updated."""
    items = _shape_items(att.merge)
    if items is None:
        raise _UnchangedError(f"{att.merge.name}: unreadable reshape target")
    last, width = items[-1], att.heads * att.group * att.head_dim
    if isinstance(last, int) and last not in (-1, width):
        raise _UnchangedError(f"{att.merge.name}: merged width {last} is not {width}")
    items[-1] = keep * att.group * att.head_dim
    return items


def _count_items(att: Attention, node: fx.Node, index: int, factor: int, keep: int) -> list[Any] | None:
    """A reshape carrying the head count at ``index``: its new target, None when it computes the count."""
    items = _shape_items(node)
    if items is None or index >= len(items):
        raise _UnchangedError(f"{node.name}: unreadable reshape target")
    item = items[index]
    if not isinstance(item, int) or item == -1:
        return None
    if item != factor * att.heads:
        raise _UnchangedError(f"{node.name}: item {item} is not {factor} x {att.heads} heads")
    items[index] = factor * keep
    return items


def _set_shape_items(node: fx.Node, items: list[Any]) -> None:
    if "shape" in node.kwargs:
        node.kwargs = {**node.kwargs, "shape": items}
    elif len(node.args) == 2 and isinstance(node.args[1], list | tuple):
        node.args = (node.args[0], items)
    else:
        node.args = (node.args[0], *items)


def _targets(att: Attention, keep: int) -> list[tuple[fx.Node, list[Any]]]:
    """Every reshape to rewrite for ``keep`` units and its new target."""
    targets = [(att.q.split, _split_items(att, att.q.split, keep, att.group))]
    targets += [(p.split, _split_items(att, p.split, keep, 1)) for p in (att.k, att.v)]
    targets.append((att.merge, _merge_items(att, keep)))
    for node, index, factor in att.counts:
        items = _count_items(att, node, index, factor, keep)
        if items is not None:
            targets.append((node, items))
    return targets


def check_rewritable(att: Attention) -> None:
    """Raise ``_UnchangedError`` when the reshapes of ``att`` cannot follow a new head count."""
    _targets(att, att.heads - 1)


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


def _select_biases(gm: fx.GraphModule, att: Attention, keep_units: Sequence[int]) -> None:
    """Give each per-head mask or bias of ``att`` an ``index_select`` of the kept query heads."""
    kept = torch.tensor([u * att.group + j for u in keep_units for j in range(att.group)])
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
    for node, items in _targets(att, keep):
        _set_shape_items(node, items)
    q_width = att.group * att.head_dim
    rows: dict[str, list[int]] = {}
    for projection, width in ((att.q, q_width), (att.k, att.head_dim), (att.v, att.head_dim)):
        total = att.heads * width
        rows.setdefault(projection.path, []).extend(_rows(projection, keep_units, width, total))
    for path, kept in rows.items():
        _shrink_linear(_linear(gm, path), torch.tensor(sorted(kept)), rows=True)
    _select_biases(gm, att, keep_units)
    columns = torch.tensor([u * q_width + j for u in keep_units for j in range(q_width)])
    _shrink_linear(_linear(gm, att.o_path), columns, rows=False)
    att.heads = keep
