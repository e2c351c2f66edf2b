"""The ATTENTION_HEAD handler: planning which heads go, per round, and the result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import fx, nn

from prunekit.spec.structured_configs import HeadConfig

from ...errors import FieldViolation, invalid_spec, unsupported_model
from ..base import LayerPruneInfo, PruneContext, PruneResult, register_pruner
from ..fx_tools import (
    first_match,
    graph_macs,
    names_of,
    origin,
    propagate,
    remove_unused_modules,
)
from ..graph import example_inputs, feed_batches, to_graph, to_onnx
from .detect import find_attentions
from .grouped import dry_run, lowest, per_group, query_scores, rewritable, rounding_note
from .normalize import normalize
from .rank import head_scores
from .structure import Attention, _is_matmul, _linear
from .surgery import remove_heads, remove_query_heads


@dataclass
class _Site:
    att: Attention
    ratio: float
    original_heads: int
    own: bool = False
    skip_reason: str = ""
    removed: int = 0
    inside: int = 0
    """Query heads to remove from every key/value group (:mod:`.grouped`); 0: whole units go."""
    inside_removed: int = 0
    before: dict[str, tuple[tuple[int, ...], int, int]] = field(default_factory=dict)


def _plan(
    sites: Sequence[_Site],
    scores: Sequence[np.ndarray],
    config: HeadConfig,
    fraction: float,
    macs_per_head: Sequence[float],
    macs_to_remove: float,
) -> list[list[int]]:
    """Heads to drop per site this round (indices in the site's current numbering).

    ``fraction`` of the final ratio is due after this round; with a MACs
    target, ``macs_to_remove`` is this round's share. A site with an override
    (``own``) always loses its own ratio of heads; the others follow the scope
    or the MACs target.
    """
    caps = [
        max(0, min(s.att.heads - 1, math.floor(config.max_layer_ratio * s.original_heads) - s.removed))
        for s in sites
    ]
    wanted = [max(0, round(s.ratio * fraction * s.original_heads) - s.removed) for s in sites]
    alone = [s.own or (config.scope == "per_layer" and not config.target_macs_reduction) for s in sites]
    drops: list[list[int]] = [
        [int(h) for h in np.argsort(scores[i], kind="stable")[: min(wanted[i], caps[i])]] if alone[i] else []
        for i in range(len(sites))
    ]
    shared_caps = [0 if alone[i] else caps[i] for i in range(len(sites))]
    if config.target_macs_reduction:
        removed = sum(len(drops[i]) * macs_per_head[i] for i in range(len(sites)))
        for i, h in _global_order(scores, shared_caps):
            if removed >= macs_to_remove:
                break
            after = removed + macs_per_head[i]
            if after > macs_to_remove and after - macs_to_remove > macs_to_remove - removed:
                break  # stopping here lands closer to the target than one more head
            drops[i].append(h)
            removed = after
        return drops
    total = sum(w for w, a in zip(wanted, alone, strict=True) if not a)
    for i, h in _global_order(scores, shared_caps)[:total]:
        drops[i].append(h)
    return drops


def _global_order(scores: Sequence[np.ndarray], caps: Sequence[int]) -> list[tuple[int, int]]:
    """(site, head) pairs, least important first by per-site normalised score, each site within its cap."""
    pairs: list[tuple[float, int, int]] = []
    for i, s in enumerate(scores):
        mean = float(np.mean(s)) or 1.0
        pairs += [(float(s[h]) / mean, i, int(h)) for h in np.argsort(s, kind="stable")[: caps[i]]]
    pairs.sort()
    return [(i, h) for _, i, h in pairs]


def _weight_facts(module: nn.Linear) -> tuple[tuple[int, ...], int, int]:
    w = module.weight.detach()
    return tuple(int(d) for d in w.shape), int(w.numel()), int(torch.count_nonzero(w))


def _sites(gm: fx.GraphModule, attentions: Sequence[Attention], config: HeadConfig) -> list[_Site]:
    """The attentions with their ratios and skip reasons.

    An output projection whose result is itself a graph output counts as an output layer; one
    reaching the outputs through residual adds and norms does not (losing heads never changes its
    width).
    """
    sites = []
    for att in attentions:
        names = [att.name, *(n for p in att.paths for n in names_of(gm, p))]
        hit = first_match(config.ignore, names)
        own = next((r for pattern, r in config.overrides if first_match([pattern], names)), None)
        site = _Site(att, own or config.ratio, original_heads=att.heads, own=own is not None)
        if hit is not None:
            site.skip_reason = f"matches ignore pattern {hit!r}"
        elif any(u.op == "output" for u in att.o_linear.users) and not config.prune_output_layers:
            site.skip_reason = "its output projection is an output layer (set prune_output_layers)"
        elif att.heads < 2:
            site.skip_reason = "a single head" if att.group == 1 else "a single key/value group"
        site.before = {p: _weight_facts(_linear(gm, p)) for p in att.paths}
        sites.append(site)
    return sites


@register_pruner(HeadConfig)
def prune_heads(model: onnx.ModelProto, config: HeadConfig, context: PruneContext) -> PruneResult:
    """Remove attention heads as the package docstring states.

    Raises ``UNSUPPORTED_MODEL`` when the model has no attention this can
    prune, ``INVALID_SPEC`` when the ignore patterns leave none.
    """
    gm = to_graph(model, context)
    args = example_inputs(context)
    propagate(gm, args)
    normalize(gm, args)
    attentions, misses = find_attentions(gm)
    if not attentions:
        detail = f" ({'; '.join(misses[:3])})" if misses else " (no softmax in the graph)"
        raise unsupported_model("no multi-head attention this method can prune" + detail)
    sites = _sites(gm, attentions, config)
    active = [s for s in sites if not s.skip_reason]
    if not active:
        if any(s.skip_reason.startswith("matches ignore") for s in sites):
            raise invalid_spec(
                [FieldViolation("spec.prune.ignore", "the patterns match every attention of the model")]
            )
        reasons = "; ".join(f"{s.att.name}: {s.skip_reason}" for s in sites)
        raise unsupported_model(f"no attention can lose heads: {reasons}")
    warnings: list[str] = []
    batches = feed_batches(context) or [args]
    if config.data_driven and context.synthetic:
        warnings.append(
            f"SYNTHETIC_IMPORTANCE: {config.importance} head importance was measured on synthetic inputs"
        )
    warnings += [_inside(site, config) for site in active if site.att.group > 1]
    warnings = [w for w in warnings if w] + _tried(gm, args, attentions, active)
    units = [s for s in active if not s.inside]
    total_macs = float(sum(graph_macs(gm).values()))
    goal_macs = total_macs / config.target_macs_reduction if config.target_macs_reduction else total_macs
    for step in range(1, config.steps + 1):
        fraction = step / config.steps
        scores = head_scores(gm, [s.att for s in units], config.importance, batches, config.seed)
        macs_per_head = [_macs_per_head(gm, s.att) for s in units]
        current = float(sum(graph_macs(gm).values()))
        due = current - (total_macs - fraction * (total_macs - goal_macs))
        drops = _plan(units, scores, config, fraction, macs_per_head, due)
        for site, drop in zip(units, drops, strict=True):
            remove_heads(gm, site.att, drop)
            site.removed += len(drop)
        for site in active:
            count = round(site.inside * fraction) - site.inside_removed
            if site.inside and count > 0:
                ranked = query_scores(gm, site.att, config.importance, batches, config.seed)
                remove_query_heads(gm, site.att, lowest(ranked, count))
                site.inside_removed += count
        gm.recompile()
        propagate(gm, args)
        if context.recover is not None and step < config.steps:
            context.recover(gm)
            propagate(gm, args)
    remove_unused_modules(gm)
    return _result(model, gm, sites, warnings, total_macs, config, context)


def _inside(site: _Site, config: HeadConfig) -> str:
    """Set ``site.inside`` when a grouped attention is better pruned inside its groups; a note when
    neither way removes a head."""
    att = site.att
    if config.target_macs_reduction or not (site.own or config.scope == "per_layer"):
        return ""
    count = per_group(site.ratio, att.heads, att.group, config.max_layer_ratio)
    why = rewritable(att, att.group - count) if count else ""
    if count and not why:
        site.inside = count
        return ""
    whole = min(round(site.ratio * att.heads), math.floor(config.max_layer_ratio * att.heads))
    if whole > 0:
        return ""
    if why:
        return f"HEADS_ROUNDED: {att.name}: query heads cannot go inside its groups ({why})"
    return "HEADS_ROUNDED: " + rounding_note(att, site.ratio, att.heads, att.group)


def _tried(
    gm: fx.GraphModule, args: Sequence[torch.Tensor], attentions: Sequence[Attention], sites: Sequence[_Site]
) -> list[str]:
    """Query heads inside groups, tried on a copy first: when the copy fails, whole units go instead."""
    inside = [s for s in sites if s.inside]
    why = dry_run(gm, args, {attentions.index(s.att): s.inside for s in inside}) if inside else ""
    if not why:
        return []
    for site in inside:
        site.inside = 0
    return [f"HEADS_ROUNDED: query heads cannot go inside the key/value groups ({why}); whole groups go"]


def _macs_per_head(gm: fx.GraphModule, att: Attention) -> float:
    nodes = [att.q.linear, att.k.linear, att.v.linear, att.o_linear, att.context]
    nodes += [n for n in att.nodes if _is_matmul(n)]
    macs = graph_macs(gm)
    return sum(macs.get(n.name, 0) for n in set(nodes)) / max(1, att.heads)


def _result(
    model: onnx.ModelProto,
    gm: fx.GraphModule,
    sites: Sequence[_Site],
    warnings: list[str],
    total_macs: float,
    config: HeadConfig,
    context: PruneContext,
) -> PruneResult:
    layers: list[LayerPruneInfo] = []
    for site in sites:
        for path in site.att.paths:
            shape, params, nonzero = site.before[path]
            after_shape, after_params, after_nonzero = (shape, params, nonzero)
            if (site.removed or site.inside_removed) and not site.skip_reason:
                after_shape, after_params, after_nonzero = _weight_facts(_linear(gm, path))
            where = origin(gm, path)
            layers.append(
                LayerPruneInfo(
                    name=where.name,
                    op_type=where.op_type,
                    weight_name=where.weight_name,
                    shape_before=shape,
                    shape_after=after_shape,
                    parameters_before=params,
                    parameters_after=after_params,
                    nonzero_before=nonzero,
                    nonzero_after=after_nonzero,
                    skipped=bool(site.skip_reason) or not (site.removed or site.inside_removed),
                    skip_reason=site.skip_reason
                    or ("" if site.removed or site.inside_removed else "no head selected"),
                )
            )
    summary = ", ".join(
        f"{s.att.name}: {s.original_heads}->{s.original_heads - s.removed}"
        + (f" key/value groups of {s.att.group} query heads" if s.att.group > 1 else "")
        + (f" ({s.att.group + s.inside_removed}->{s.att.group} per group)" if s.inside_removed else "")
        for s in sites
    )
    warnings.append(f"HEADS_PRUNED: heads per attention {summary}")
    if config.target_macs_reduction:
        after = float(sum(graph_macs(gm).values()))
        reached = total_macs / after if after else math.inf
        if abs(reached - config.target_macs_reduction) > 0.05 * config.target_macs_reduction:
            warnings.append(
                f"TARGET_NOT_REACHED: MACs divided by {reached:.3f}, not {config.target_macs_reduction:g} "
                "(heads come in whole units and at least one stays per attention)"
            )
    return PruneResult(
        tensors={}, layers=layers, warnings=warnings, model=to_onnx(gm, model, context), module=gm
    )
