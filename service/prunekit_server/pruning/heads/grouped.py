"""Grouped-query attention pruned inside its groups: as many query heads from every key/value group.

A key/value head with its ``group`` query heads is ATTENTION_HEAD's unit, so a
ratio of a few groups rounds coarsely (25 % of 2 groups is none). When
removing ``r`` query heads from each group lands closer to the asked share of
query heads, a ratio-driven site (``scope: per_layer``, or an override) is
pruned that way instead: the key/value projections and the rotary tables stay,
the repetition makes ``group - r`` copies, Q rows and O columns of the removed
query heads go. Each group keeps its least important query heads last (scores
per query head: its Q rows and O columns, or its context for ACTIVATION).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import fx

from ..fx_tools import propagate, taylor_products
from .detect import find_attentions
from .rank import _Capture
from .structure import Attention, _linear
from .surgery import _UnchangedError, check_rewritable, remove_query_heads


def per_group(ratio: float, units: int, group: int, cap: float) -> int:
    """Query heads to remove from each group for ``ratio`` when that beats whole groups, else 0."""
    if group < 2:
        return 0
    wanted = ratio * units * group
    whole = min(round(ratio * units), max(0, math.floor(cap * units)), units - 1) * group
    inside = min(round(ratio * group), max(0, math.floor(cap * group)), group - 1)
    return inside if abs(inside * units - wanted) < abs(whole - wanted) else 0


def rewritable(att: Attention, group: int) -> str:
    """Why the reshapes of ``att`` cannot follow ``group`` query heads per key/value head ("" if they can)."""
    try:
        check_rewritable(att, group)
    except _UnchangedError as exc:
        return str(exc)
    return ""


def rounding_note(att: Attention, ratio: float, units: int, group: int) -> str:
    """Why ``ratio`` of a grouped attention's query heads removes none (for the report)."""
    heads = units * group
    return (
        f"{att.name}: {ratio:g} of {heads} query heads in {units} key/value groups of {group} is "
        f"{ratio * heads:g}; they go as whole groups ({group} query heads each) or as the same number "
        f"from every group ({units} at a time), and neither rounds to more than none"
    )


def query_scores(
    gm: fx.GraphModule,
    att: Attention,
    importance: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    seed: int,
) -> np.ndarray:
    """One score per query head, shaped ``(key/value heads, group)`` (higher is more important)."""
    shape = (att.heads, att.group)
    if importance == "random":
        return np.random.default_rng(seed).random(shape)
    if importance == "activation":
        return _context_scores(gm, att, batches).reshape(shape)
    weights = {p: _linear(gm, p).weight.detach() for p in (att.q.path, att.o_path)}
    if importance == "taylor":
        products = taylor_products(gm, [_linear(gm, p).weight for p in weights], batches)
        weights = dict(zip(weights, products, strict=True))
    p = 2 if importance == "l2" else 1
    total = att.heads * att.group * att.head_dim
    q = weights[att.q.path][att.q.part * total : (att.q.part + 1) * total].reshape(*shape, -1)
    o = weights[att.o_path]
    o = o.reshape(o.shape[0], *shape, att.head_dim).permute(1, 2, 0, 3).reshape(*shape, -1)
    if importance == "taylor":
        return np.asarray((q.sum(-1) + o.sum(-1)).double().numpy())
    summed = q.abs().double().pow(p).sum(-1) + o.abs().double().pow(p).sum(-1)
    return np.asarray(summed.pow(1.0 / p).numpy())


def _context_scores(
    gm: fx.GraphModule, att: Attention, batches: Sequence[tuple[torch.Tensor, ...]]
) -> np.ndarray:
    total = np.zeros(att.heads * att.group)
    with torch.no_grad():
        for batch in batches:
            capture = _Capture(gm, {att.context})
            capture.run(*batch)
            ctx = capture.values[att.context].abs().double()
            dims = [d for d in range(ctx.dim()) if d != att.head_axis]
            total += ctx.mean(dim=dims).numpy()
    return total / max(1, len(batches))


def lowest(scores: np.ndarray, count: int) -> list[list[int]]:
    """Per key/value group, the positions of its ``count`` least important query heads."""
    return [sorted(int(j) for j in np.argsort(row, kind="stable")[:count]) for row in scores]


def dry_run(gm: fx.GraphModule, args: Sequence[torch.Tensor], planned: Mapping[int, int]) -> str:
    """Why removing ``planned[i]`` query heads per group from attention ``i`` (in :func:`find_attentions`
    order) fails on a copy of ``gm`` ("" when the copy runs): a count the rewrite did not follow."""
    work = copy.deepcopy(gm)
    try:
        propagate(work, args)
        attentions = find_attentions(work)[0]
        for index, count in planned.items():
            att = attentions[index]
            remove_query_heads(work, att, [list(range(count))] * att.heads)
        work.recompile()
        propagate(work, args)
    except Exception as exc:  # any failure keeps the whole groups
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return ""
