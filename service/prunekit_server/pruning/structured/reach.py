"""Reaching a MACs target the ratio search missed, and saying precisely why when it cannot.

The ratio search (:func:`.targets.search_ratio`) moves every group along one
cumulative ratio. Rounding makes its MACs jump: a narrow group that costs many
MACs per channel (a transformer's residual width, 16 channels rounded to 8)
goes from whole to half at one ratio, so the plan just before that point keeps
too much and the plan just after removes too much, while the wide groups still
had room. :func:`reach` starts from the search's best plan and moves one
rounding step of one group at a time, least important channels first (most
important when giving channels back), skipping a step that would pass the
target by more than the tolerance, until the target is met, no step is left,
or its trial budget is spent.

When the target stays out of reach, :func:`limit_reason` names the limit: the
most CHANNEL/NEURON can reach with every group at its floor (and at
``round_to`` 1 when rounding costs reduction), and the share of the MACs in
layers no group shrinks, by the reason each was kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import fx

from ..fx_tools import graph_macs, propagate, weighted_module
from .groups import Group
from .targets import MACS_TOLERANCE, Plan, SearchResult, keeping, kept_floor, round_step

_TRIALS = 48
"""At most this many candidate plans are measured (each copies the graph and counts its MACs)."""
_CANDIDATES = 4
"""Steps measured per move, in importance order, before the closest one is taken."""
PRODUCTS = "products of two activations (attention scores and mixing: their widths follow the heads)"


@dataclass(frozen=True)
class Steps:
    """The groups :func:`reach` may move, their scores, original widths and limits."""

    groups: Sequence[Group]
    scores: Mapping[str, torch.Tensor]
    original: Mapping[str, int]
    fixed: Collection[str]
    """Groups with a ratio of their own (overrides): never moved."""
    round_to: int
    cap: float

    def lowest(self, group: Group) -> int:
        """The fewest channels per chunk ``group`` may keep once rounded."""
        step = round_step(group, self.round_to)
        floor = kept_floor(group, self.original[group.key], self.cap)
        return min(group.chunk_width, max(step, math.ceil(floor / step) * step))

    def moves(self, kept: Mapping[str, int], cutting: bool) -> list[tuple[str, int]]:
        """(group, new kept width) one rounding step away: the least important cut (or restore) first."""
        ranked: list[tuple[float, str, int]] = []
        for group in self.groups:
            if group.key in self.fixed:
                continue
            step, keep, width = round_step(group, self.round_to), kept[group.key], group.chunk_width
            new = (keep - 1) // step * step if cutting else min(width, (keep // step + 1) * step)
            if (cutting and new < self.lowest(group)) or (not cutting and new <= keep):
                continue
            order = torch.argsort(self.scores[group.key], stable=True)
            moved = order[width - max(keep, new) : width - min(keep, new)]
            value = float(self.scores[group.key][moved].mean())
            ranked.append((value if cutting else -value, group.key, new))
        return [(key, new) for _, key, new in sorted(ranked)]


def _miss(macs: int, target: float) -> float:
    """How far the reached reduction is from the asked one, as a fraction of it."""
    return abs(target / max(macs, 1) - 1.0)


def reach(steps: Steps, found: SearchResult, macs_of: Callable[[Plan], int], target: float) -> SearchResult:
    """``found`` (or the search's closest plan on the target's other side) moved step by step towards
    ``target`` MACs (see the module doc); the closer of the two."""
    best, budget = found, [_TRIALS]
    starts = list(found.alternatives)
    if not starts and found.macs < target:  # the search never kept enough: walk from nothing removed too
        starts = [SearchResult(0.0, Plan({}), macs_of(Plan({})))]
    for start in (found, *starts):
        if _miss(best.macs, target) <= MACS_TOLERANCE:
            break
        moved = _walk(steps, start, macs_of, target, budget)
        if _miss(moved.macs, target) < _miss(best.macs, target):
            best = moved
    return best


def _walk(
    steps: Steps, start: SearchResult, macs_of: Callable[[Plan], int], target: float, budget: list[int]
) -> SearchResult:
    """Single steps from ``start``, each towards the target, until within the tolerance or stuck."""
    kept = {g.key: g.chunk_width - len(start.plan.remove.get(g.key, [])) // g.chunks for g in steps.groups}
    best = start
    too_far: set[str] = set()
    """Groups whose step went past the target by more than the tolerance (and would again, further on)."""
    while budget[0] > 0 and _miss(best.macs, target) > MACS_TOLERANCE:
        cutting = best.macs > target
        closest: tuple[str, int, SearchResult] | None = None
        for key, new in [m for m in steps.moves(kept, cutting) if m[0] not in too_far][:_CANDIDATES]:
            candidate = keeping(steps.groups, steps.scores, {**kept, key: new})
            trial = SearchResult(best.ratio, candidate, macs_of(candidate))
            budget[0] -= 1
            passed = trial.macs < target if cutting else trial.macs > target
            if not passed or _miss(trial.macs, target) <= MACS_TOLERANCE:
                closest = (key, new, trial)
                break
            too_far.add(key)
            if closest is None or _miss(trial.macs, target) < _miss(closest[2].macs, target):
                closest = (key, new, trial)
        if closest is None or _miss(closest[2].macs, target) >= _miss(best.macs, target):
            break
        if (closest[2].macs > target) != cutting:
            too_far.clear()  # the next steps go the other way
        kept[closest[0]] = closest[1]
        best = closest[2]
    return best


def kept_shares(
    gm: fx.GraphModule,
    args: Sequence[torch.Tensor],
    groups: Sequence[Group],
    skipped: Mapping[str, str],
    base: int,
) -> dict[str, float]:
    """Reason -> share of ``base`` MACs in layers no group shrinks (neither their inputs nor outputs)."""
    propagate(gm, args)
    per_node = graph_macs(gm)
    total = max(1, base)
    reached = {path for g in groups for path in (*g.outputs, *g.inputs)}
    shares: dict[str, float] = {}
    for node in gm.graph.nodes:
        macs = per_node.get(node.name, 0)
        module = weighted_module(gm, node)
        path = str(node.target) if module is not None else ""
        if not macs or path in reached:
            continue
        reason = skipped.get(path, "outside every prunable group") if module is not None else PRODUCTS
        shares[reason] = shares.get(reason, 0.0) + macs / total
    return shares


def limit_reason(base: int, floor_macs: int, unrounded_macs: int | None, shares: Mapping[str, float]) -> str:
    """Why the target was missed: the most reachable and what holds the rest of the MACs."""
    text = f"every prunable group at its floor reaches {base / max(floor_macs, 1):.3g}x"
    if unrounded_macs is not None and unrounded_macs < floor_macs:
        text += f" ({base / max(unrounded_macs, 1):.3g}x at round_to 1)"
    ranked = sorted(((r, v) for r, v in shares.items() if v >= 0.005), key=lambda item: -item[1])
    if ranked:
        held = "; ".join(f"{100 * share:.0f}% {reason}" for reason, share in ranked)
        text += f"; {100 * sum(shares.values()):.0f}% of the MACs are in layers no group shrinks: {held}"
    return text
