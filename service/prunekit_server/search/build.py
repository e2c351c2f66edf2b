"""Building the search space of a converted model: its groups' effects, sensitivity and widths."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from ..pruning.fx_tools import origin
from ..pruning.sensitivity import LayerCurve, graph_sensitivity
from ..pruning.structured.groups import Group, quiet, root_group
from .space import Effect, GroupSpace

SENSITIVITY_RATIOS = (0.25, 0.5, 0.75, 0.9)
MAX_SENSITIVITY_BATCHES = 4
_TABLED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _effects(gm: fx.GraphModule, graph: Any, group: Group) -> tuple[Effect, ...]:
    """Which tabled layers follow the group's width, and by how many channels per root channel."""
    paths = {module: name for name, module in gm.named_modules()}
    width = group.chunk_width
    probe = [chunk * width for chunk in range(group.chunks)]
    found: dict[tuple[str, str], float] = {}
    with quiet():
        for dep, idxs in root_group(graph, gm.get_submodule(group.key), probe):
            module = dep.target.module
            if not isinstance(module, _TABLED) or module not in paths:
                continue
            side = "in" if getattr(dep.handler, "__name__", "") == "prune_in_channels" else "out"
            found[(paths[module], side)] = len(idxs) / len(probe)
    return tuple(Effect(layer, side, per) for (layer, side), per in sorted(found.items()))


def group_spaces(
    gm: fx.GraphModule,
    graph: Any,
    groups: Sequence[Group],
    batches: Sequence[tuple[torch.Tensor, ...]],
    *,
    ignore: Sequence[str],
    max_layer_ratio: float,
    budget_s: float,
    known: dict[str, LayerCurve] | None = None,
) -> tuple[list[GroupSpace], list[str]]:
    """The space of each group with a loss curve (levels not yet filled), and why the others are left out.

    A group the sensitivity analysis could not measure (an error, the time budget) is not narrowed:
    its cost would be unknown. ``known`` carries curves between the search's bases (see
    :func:`~..pruning.sensitivity.graph_sensitivity`).
    """
    if not groups:
        return [], []
    ratios = tuple(r for r in SENSITIVITY_RATIOS if r <= max_layer_ratio) or (max_layer_ratio,)
    batches = list(batches)[:MAX_SENSITIVITY_BATCHES]
    analysis = graph_sensitivity(gm, batches, ratios, ignore=ignore, budget_s=budget_s, known=known)
    curves = {curve.module: curve for curve in analysis.curves}
    spaces: list[GroupSpace] = []
    skipped = list(analysis.skipped)
    for group in groups:
        curve = curves.get(group.key)
        if curve is None:
            continue
        losses = tuple(
            (1.0 - c) + (1.0 - t) / 2.0
            for c, t in zip(curve.cosine_similarity, curve.top1_agreement, strict=True)
        )
        width = group.chunk_width
        spaces.append(
            GroupSpace(
                key=group.key,
                name=origin(gm, group.key).name,
                chunks=group.chunks,
                width=width,
                effects=_effects(gm, graph, group),
                loss_ratios=curve.ratios,
                losses=losses,
                floor=min(width, max(1, math.ceil(width * (1.0 - max_layer_ratio) - 1e-9))),
            )
        )
    return [s for s in spaces if s.effects], skipped
