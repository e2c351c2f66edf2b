"""Removing heads: shrinking the Q/K/V/O projections and rewriting the reshapes' head count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from .structure import Attention, _linear, _shape_items


class _UnchangedError(Exception):
    """An attention whose reshapes cannot be updated: it is left alone."""


def _split_items(att: Attention, split: fx.Node, keep: int) -> list[Any]:
    """The split's reshape target for ``keep`` heads; ``_UnchangedError`` when it cannot be updated.

    The head count and the head width become constants: the width never changes and the count is ``keep``,
    whether the model computed them (``size // heads``, of a tensor that may or may not shrink) or not.
    """
    items = _shape_items(split)
    if items is None:
        raise _UnchangedError(f"{split.name}: unreadable reshape target")
    head_item, dim_item = items[-2], items[-1]
    if isinstance(head_item, int) and head_item not in (-1, att.heads):
        raise _UnchangedError(f"{split.name}: the head count {head_item} is not {att.heads}")
    if isinstance(dim_item, int) and dim_item not in (-1, att.head_dim):
        raise _UnchangedError(f"{split.name}: head width {dim_item} is not {att.head_dim}")
    items[-2:] = [keep, att.head_dim]
    return items


def _merge_items(att: Attention, keep: int) -> list[Any]:
    """The merge's reshape target for ``keep`` heads; ``_UnchangedError`` when it cannot be updated."""
    items = _shape_items(att.merge)
    if items is None:
        raise _UnchangedError(f"{att.merge.name}: unreadable reshape target")
    last = items[-1]
    if isinstance(last, int) and last not in (-1, att.heads * att.head_dim):
        raise _UnchangedError(f"{att.merge.name}: merged width {last} is not {att.heads * att.head_dim}")
    items[-1] = keep * att.head_dim
    return items


def _set_shape_items(node: fx.Node, items: list[Any]) -> None:
    if "shape" in node.kwargs:
        node.kwargs = {**node.kwargs, "shape": items}
    elif len(node.args) == 2 and isinstance(node.args[1], list | tuple):
        node.args = (node.args[0], items)
    else:
        node.args = (node.args[0], *items)


def check_rewritable(att: Attention) -> None:
    """Raise ``_UnchangedError`` when the reshapes of ``att`` cannot follow a new head count."""
    for split in (att.q.split, att.k.split, att.v.split):
        _split_items(att, split, att.heads - 1)
    _merge_items(att, att.heads - 1)


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


def remove_heads(gm: fx.GraphModule, att: Attention, drop: Sequence[int]) -> None:
    """Remove heads ``drop`` of ``att`` from the projections and the reshapes (in place)."""
    keep_heads = [h for h in range(att.heads) if h not in set(drop)]
    if not keep_heads:
        raise ValueError("at least one head must stay")
    if not drop:
        return
    keep = len(keep_heads)
    targets = [(split, _split_items(att, split, keep)) for split in (att.q.split, att.k.split, att.v.split)]
    targets.append((att.merge, _merge_items(att, keep)))
    for node, items in targets:
        _set_shape_items(node, items)
    index = torch.tensor([h * att.head_dim + j for h in keep_heads for j in range(att.head_dim)])
    for path in (att.q.path, att.k.path, att.v.path):
        _shrink_linear(_linear(gm, path), index, rows=True)
    _shrink_linear(_linear(gm, att.o_path), index, rows=False)
    att.heads = keep
