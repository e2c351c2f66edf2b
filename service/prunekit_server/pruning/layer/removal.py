"""The LAYER handler: choosing units, rewiring the graph around them, and the result."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import torch
from torch import fx

from prunekit.spec.structured_configs import LayerConfig

from ...errors import FieldViolation, invalid_spec, unsupported_model
from ..base import LayerPruneInfo, MetricCurve, PruneContext, PruneResult, register_pruner
from ..fx_tools import node_macs, origin, propagate, remove_unused_modules
from ..graph import example_inputs, feed_batches, to_graph, to_onnx
from .detect import Unit, find_units
from .rank import unit_scores


def _choose(units: Sequence[Unit], scores: np.ndarray, config: LayerConfig, total_macs: int) -> list[Unit]:
    candidates = [u for u in units if not u.skip_reason]
    order = sorted(range(len(candidates)), key=lambda i: (scores[i], i))
    chosen: list[Unit] = []
    taken: set[fx.Node] = set()
    wanted = max(1, round(config.ratio * len(candidates))) if config.ratio else len(candidates)
    removed_macs = 0
    goal = total_macs - total_macs / config.target_macs_reduction if config.target_macs_reduction else 0.0
    for i in order:
        unit = candidates[i]
        if len(chosen) >= wanted or (goal and removed_macs >= goal):
            break
        covered = unit.body | {unit.replaced}
        if covered & taken:
            continue
        after = removed_macs + unit.macs
        if goal and chosen and after > goal and after - goal > goal - removed_macs:
            break  # stopping here lands closer to the target than removing this unit too
        chosen.append(unit)
        taken |= covered
        removed_macs += unit.macs
    return chosen


def _info(gm: fx.GraphModule, path: str, reason: str) -> LayerPruneInfo:
    module = gm.get_submodule(path)
    weight = getattr(module, "weight", None)
    shape = tuple(int(d) for d in weight.shape) if isinstance(weight, torch.Tensor) else ()
    params = int(weight.numel()) if isinstance(weight, torch.Tensor) else 0
    nonzero = int(torch.count_nonzero(weight)) if isinstance(weight, torch.Tensor) else 0
    where = origin(gm, path)
    skipped = bool(reason)
    return LayerPruneInfo(
        name=where.name,
        op_type=where.op_type,
        weight_name=where.weight_name,
        shape_before=shape,
        shape_after=shape if skipped else (),
        parameters_before=params,
        parameters_after=params if skipped else 0,
        nonzero_before=nonzero,
        nonzero_after=nonzero if skipped else 0,
        skipped=skipped,
        skip_reason=reason,
    )


def remove_units(gm: fx.GraphModule, units: Sequence[Unit]) -> None:
    """Rewire each unit's replaced node to its input, then drop dead code and unused submodules."""
    for unit in units:
        unit.replaced.replace_all_uses_with(unit.source)
    remove_unused_modules(gm)


@register_pruner(LayerConfig)
def prune_layers(model: onnx.ModelProto, config: LayerConfig, context: PruneContext) -> PruneResult:
    """Remove units as the package docstring states.

    Raises ``UNSUPPORTED_MODEL`` when the model has no removable unit and
    ``INVALID_SPEC`` when the ignore patterns leave none.
    """
    gm = to_graph(model, context)
    args = example_inputs(context)
    propagate(gm, args)
    units = find_units(gm, config)
    candidates = [u for u in units if not u.skip_reason]
    if not candidates:
        if any(u.skip_reason.startswith("matches ignore") for u in units):
            raise invalid_spec(
                [FieldViolation("spec.prune.ignore", "the patterns match every removable unit")]
            )
        detail = "; ".join(f"{u.name}: {u.skip_reason}" for u in units[:3])
        raise unsupported_model(
            "no removable layer: LAYER needs residual blocks (x + f(x)) or layers whose output shape "
            "equals their input's" + (f" ({detail})" if detail else "")
        )
    warnings: list[str] = []
    if config.data_driven and context.synthetic:
        warnings.append(f"SYNTHETIC_IMPORTANCE: {config.importance} ranking was measured on synthetic inputs")
    batches = feed_batches(context) or [args]
    scores = unit_scores(gm, candidates, config.importance, batches, config.seed)
    total_macs = sum(node_macs(gm, n) for n in gm.graph.nodes)
    chosen = _choose(units, scores, config, total_macs)
    layers = [_info(gm, p, "") for u in chosen for p in u.modules]
    layers += [_info(gm, p, u.skip_reason) for u in units if u.skip_reason for p in u.modules]
    kind = "residual block(s)" if candidates[0].kind == "block" else "identity-shaped layer(s)"
    removed_macs = sum(u.macs for u in chosen)
    warnings.append(
        f"LAYERS_REMOVED: {len(chosen)} of {len(candidates)} {kind} removed: "
        + ", ".join(u.name for u in chosen)
    )
    remove_units(gm, chosen)
    if config.target_macs_reduction:
        reached = total_macs / max(1, total_macs - removed_macs)
        if abs(reached - config.target_macs_reduction) > 0.05 * config.target_macs_reduction:
            warnings.append(
                f"TARGET_NOT_REACHED: MACs divided by {reached:.3f}, not {config.target_macs_reduction:g} "
                "(units are removed whole)"
            )
    curves = []
    if config.importance == "sensitivity":  # the measured bypass of each unit: one point, at ratio 1
        curves = [
            MetricCurve(u.name, "cosine_similarity", (1.0,), (1.0 - float(s),))
            for u, s in zip(candidates, scores, strict=True)
        ]
    return PruneResult(
        tensors={},
        layers=layers,
        warnings=warnings,
        model=to_onnx(gm, model, context),
        module=gm,
        sensitivity=curves,
    )
