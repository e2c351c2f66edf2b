"""How many channels each group loses: ratios, global ranking, caps, rounding, MACs targets.

Widths are counted per *chunk* (a group of a grouped convolution with ``g``
chunks loses the same positions in each). For a cumulative ratio ``r`` (of the
widths the groups had before the first round):

* a group with its own ratio (an override, or ``auto_ratios``) and every group
  under ``scope="per_layer"`` keeps ``w0 - round(r_g * w0)`` channels per chunk;
* under ``scope="global"`` the other groups' channels are ranked together by
  their (group-normalised) scores and the lowest go until ``r`` of their
  original channels are gone; a group at its cap is passed over;
* no group keeps fewer than ``ceil(w0 * (1 - max_layer_ratio))`` (and at
  least one) per chunk;
* the kept width is then rounded to the nearest multiple of ``round_to``
  (ties up), never below the cap nor above the current width.

A MACs target is met by bisecting ``r``: each candidate plan is applied to a
copy of the graph and its MACs counted the way the model analysis counts them
(Conv, ConvTranspose, Linear and matmul nodes); the closest plan wins.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from ..fx_tools import graph_macs, propagate
from .groups import Group, dependency_graph, quiet, root_group

MACS_TOLERANCE = 0.05
"""A MACs target is met when the reached reduction is within this fraction of it."""
_SEARCH_TOLERANCE = 0.01
_SEARCH_STEPS = 24


@dataclass(frozen=True)
class Plan:
    """Root channel indices (the current numbering) to remove, per group key."""

    remove: dict[str, list[int]]

    @property
    def empty(self) -> bool:
        return not any(self.remove.values())


def kept_floor(group: Group, original: int, cap: float) -> int:
    return min(group.chunk_width, max(1, math.ceil(original * (1.0 - cap) - 1e-9)))


def round_step(group: Group, round_to: int) -> int:
    """Kept widths per chunk are multiples of this (``round_to`` over the chunks it already covers)."""
    return round_to // math.gcd(round_to, group.chunks)


def _round(kept: int, group: Group, floor: int, round_to: int) -> int:
    step = round_step(group, round_to)
    if step <= 1:
        return kept
    rounded = max(step, math.floor(kept / step + 0.5) * step)
    if rounded < floor:
        rounded = math.ceil(floor / step) * step
    return min(rounded, group.chunk_width)


def plan(
    groups: Sequence[Group],
    scores: Mapping[str, torch.Tensor],
    original: Mapping[str, int],
    ratio: float,
    *,
    scope: str,
    round_to: int,
    max_layer_ratio: float,
    own_ratios: Mapping[str, float],
) -> Plan:
    """The channels to remove for cumulative ratio ``ratio`` (see the module doc).

    ``scores`` hold one score per chunk position of each group's current
    width; ``original`` each group's chunk width before the first round;
    ``own_ratios`` the groups with a ratio of their own.
    """
    kept: dict[str, int] = {}
    pool: list[Group] = []
    for group in groups:
        w0 = original[group.key]
        floor = kept_floor(group, w0, max_layer_ratio)
        if group.key in own_ratios or scope == "per_layer":
            r = min(own_ratios.get(group.key, ratio), 1.0)
            kept[group.key] = min(group.chunk_width, max(floor, w0 - round(r * w0)))
        else:
            pool.append(group)
    if pool:
        total = sum(original[g.key] * g.chunks for g in pool)
        present = sum(g.chunk_width * g.chunks for g in pool)
        need = present - (total - round(ratio * total))
        taken = {g.key: 0 for g in pool}
        room = {g.key: g.chunk_width - kept_floor(g, original[g.key], max_layer_ratio) for g in pool}
        chunks = {g.key: g.chunks for g in pool}
        entries = sorted(
            ((float(v), g.key, i) for g in pool for i, v in enumerate(scores[g.key].tolist())),
            key=lambda e: (e[0], e[1], e[2]),
        )
        for _, key, _ in entries:
            if need <= 0:
                break
            if taken[key] < room[key]:
                taken[key] += 1
                need -= chunks[key]
        for g in pool:
            kept[g.key] = g.chunk_width - taken[g.key]
    rounded = {
        g.key: _round(kept[g.key], g, kept_floor(g, original[g.key], max_layer_ratio), round_to)
        for g in groups
    }
    return keeping(groups, scores, rounded)


def keeping(groups: Sequence[Group], scores: Mapping[str, torch.Tensor], kept: Mapping[str, int]) -> Plan:
    """The plan keeping ``kept[key]`` channels per chunk of each group: the lowest scores go."""
    remove: dict[str, list[int]] = {}
    for group in groups:
        drop = group.chunk_width - kept.get(group.key, group.chunk_width)
        if drop <= 0:
            continue
        order = torch.argsort(scores[group.key], stable=True)[:drop].tolist()
        width = group.chunk_width
        remove[group.key] = sorted(c * width + int(e) for c in range(group.chunks) for e in order)
    return Plan(remove)


def apply(
    gm: fx.GraphModule, graph: object, plan_: Plan, observe: Callable[[Any], None] | None = None
) -> None:
    """Remove the planned channels from ``gm`` (``graph`` is its dependency graph).

    ``observe`` sees each Torch-Pruning group just before it is pruned.
    """
    with quiet():
        for key, idxs in plan_.remove.items():
            if not idxs:
                continue
            group = root_group(graph, gm.get_submodule(key), idxs)
            if not graph.check_pruning_group(group):  # type: ignore[attr-defined]
                raise ValueError(f"pruning {key} would remove every channel of a layer")
            if observe is not None:
                observe(group)
            group.prune()


def count_macs(gm: fx.GraphModule, args: Sequence[torch.Tensor]) -> int:
    """MACs of ``gm`` on ``args``, counted as the model analysis counts them."""
    propagate(gm, args)
    return sum(graph_macs(gm).values())


def trial_macs(gm: fx.GraphModule, args: Sequence[torch.Tensor], plan_: Plan) -> int:
    """MACs ``gm`` would have after ``plan_`` (applied to a copy)."""
    work = copy.deepcopy(gm)
    apply(work, dependency_graph(work, args), plan_)
    return count_macs(work, args)


@dataclass(frozen=True)
class SearchResult:
    ratio: float
    plan: Plan
    macs: int
    alternatives: tuple[SearchResult, ...] = ()
    """The closest plan the search measured on the target's other side, when it measured one."""


def search_ratio(
    make_plan: Callable[[float], Plan],
    macs_of: Callable[[Plan], int],
    target_macs: float,
    high: float,
) -> SearchResult:
    """The cumulative ratio in ``[0, high]`` whose plan's MACs are closest to ``target_macs`` (bisection)."""
    best: SearchResult | None = None
    low, top = 0.0, high
    cache: dict[tuple[tuple[str, tuple[int, ...]], ...], int] = {}
    measured: list[tuple[float, Plan, int]] = []
    for _ in range(_SEARCH_STEPS):
        ratio = (low + top) / 2
        candidate = make_plan(ratio)
        key = tuple(sorted((k, tuple(v)) for k, v in candidate.remove.items()))
        if key not in cache:
            cache[key] = macs_of(candidate)
            measured.append((ratio, candidate, cache[key]))
        macs = cache[key]
        if best is None or abs(macs - target_macs) < abs(best.macs - target_macs):
            best = SearchResult(ratio, candidate, macs)
        if abs(macs / target_macs - 1.0) <= _SEARCH_TOLERANCE:
            break
        if macs > target_macs:
            low = ratio
        else:
            top = ratio
    top_plan = make_plan(high)
    top_key = tuple(sorted((k, tuple(v)) for k, v in top_plan.remove.items()))
    top_macs = cache.get(top_key)
    if best is not None and best.macs > target_macs * (1 + MACS_TOLERANCE) and top_macs is None:
        top_macs = macs_of(top_plan)
        if abs(top_macs - target_macs) < abs(best.macs - target_macs):
            best = SearchResult(high, top_plan, top_macs)
    assert best is not None
    side = best.macs > target_macs
    other = [SearchResult(r, p, m) for r, p, m in measured if (m > target_macs) != side]
    if not other:
        return best
    nearest = min(other, key=lambda c: abs(c.macs - target_macs))
    return SearchResult(best.ratio, best.plan, best.macs, (nearest,))
