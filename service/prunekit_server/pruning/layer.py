"""LAYER: remove whole residual blocks (or identity-shaped layers) and rewire the graph.

Units are found on the converted GraphModule (shapes from one sample run):

* a **residual block** is an addition ``skip + branch`` of two tensors of the
  addition's own shape where ``branch`` is computed from ``skip``, contains at
  least one Linear/Conv, and nothing outside the block reads any node of the
  branch. Removing it replaces the addition by ``skip``: whatever followed
  (a ReLU, a LayerNorm) stays. A projection shortcut (``conv(x) + branch(x)``)
  is not a block: neither operand is the other's input.
* when the model has no residual block, an **identity-shaped layer** is a
  Linear/Conv whose output has its input's shape, with the BatchNorm that
  alone reads it; removing it passes its input through.

Output layers are never inside a unit unless ``prune_output_layers``; units
with a layer matching ``ignore`` stay. Units are ranked (least important go
first) by the L2 (default) or L1 norm of their weights, by ACTIVATION (how
much the unit changes its input on the feeds, ``||out - in|| / ||in||``), by
TAYLOR (``|gradient x weight|`` of the outputs' mean square), RANDOM, or by
measured SENSITIVITY (``1 -`` the cosine similarity of the model's first
output with the unit bypassed, on the feeds). ``ratio`` of the units are
removed (at least one), or units are removed until the MACs fall by
``target_macs_reduction``. Nested units are never both chosen. Dead nodes and
unused submodules are dropped; output shapes do not change.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
import torch
from torch import fx, nn

from prunekit.v1 import spec_pb2

from ..errors import FieldViolation, invalid_spec, unsupported_model
from . import spec_fields
from .base import (
    LayerPruneInfo,
    MetricCurve,
    PruneConfig,
    PruneContext,
    PruneResult,
    register_pruner,
    register_spec_method,
)
from .fx_tools import (
    fidelity,
    first_match,
    names_of,
    node_macs,
    origin,
    output_modules,
    outputs_of,
    propagate,
    remove_unused_modules,
    run_batches,
    shape_of,
    taylor_products,
    weighted_module,
)
from .graph import example_inputs, feed_batches, to_graph, to_onnx

LayerImportance = Literal["l1", "l2", "taylor", "activation", "random", "sensitivity"]
_IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor", "activation", "random", "sensitivity")
_DATA_DRIVEN = ("taylor", "activation", "sensitivity")
_ADDS = (operator.add, torch.add)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class LayerConfig(PruneConfig):
    """Remove residual blocks or identity-shaped layers. Bad values raise ``ValueError``."""

    method = "layer"

    ratio: float = field(
        default=0.0,
        metadata={
            "description": "Fraction of the removable units to remove, 0 < ratio < 1 (0 with a MACs target)."
        },
    )
    target_macs_reduction: float = field(
        default=0.0,
        metadata={
            "description": "Remove units until the model's MACs are divided by this (> 1); 0 uses ratio."
        },
    )
    importance: LayerImportance = field(
        default="l2",
        metadata={"description": "How units are ranked: l2, l1, taylor, activation, random or sensitivity."},
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs on module paths, ONNX node and weight names and unit names: "
            "units containing a match stay."
        },
    )
    prune_output_layers: bool = field(
        default=False, metadata={"description": "Allow units that contain an output layer."}
    )
    seed: int = field(default=0, metadata={"description": "Seed of the RANDOM criterion."})

    def __post_init__(self) -> None:
        ratio, macs = self.ratio, self.target_macs_reduction
        if (ratio == 0) == (macs == 0):
            raise ValueError("set exactly one of ratio and target_macs_reduction")
        if ratio and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
            raise ValueError(f"ratio must satisfy 0 < ratio < 1, got {ratio!r}")
        if macs and not (math.isfinite(macs) and macs > 1.0):
            raise ValueError(f"target_macs_reduction must be > 1, got {macs!r}")
        if self.importance not in _IMPORTANCES:
            raise ValueError(f"importance must be one of {', '.join(_IMPORTANCES)}, got {self.importance!r}")
        if isinstance(self.ignore, str):
            raise ValueError("ignore must be a sequence of glob patterns, not one string")
        patterns = tuple(self.ignore)
        if not all(isinstance(p, str) and p for p in patterns):
            raise ValueError("ignore patterns must be non-empty strings")
        object.__setattr__(self, "ignore", patterns)


@register_spec_method(spec_pb2.PRUNE_METHOD_LAYER)
def layer_from_spec(prune_spec: spec_pb2.PruneSpec) -> LayerConfig:
    """The config for a LAYER ``PruneSpec``; ``INVALID_SPEC`` listing every bad field.

    ``auto_ratios`` ranks the units by measured sensitivity (it cannot be
    combined with ``importance``); overrides may only ignore.
    """
    found: list[FieldViolation] = []
    ratio, macs = spec_fields.target(prune_spec, found)
    importance = spec_fields.importance(
        prune_spec, "l2", ("l1", "l2", "taylor", "activation", "random"), found
    )
    if prune_spec.auto_ratios:
        if prune_spec.importance != spec_pb2.IMPORTANCE_UNSPECIFIED:
            found.append(
                FieldViolation("spec.prune.auto_ratios", "ranks by sensitivity: leave importance unset")
            )
        importance = "sensitivity"
    ignore, _ = spec_fields.ignore_and_overrides(prune_spec, found, ratios=False)
    unused = ("scope", "round_to", "max_layer_ratio", "schedule", "steps", "n", "m")
    spec_fields.reject_unused(prune_spec, unused, "LAYER", found)
    if found:
        raise invalid_spec(found)
    return LayerConfig(
        ratio=ratio,
        target_macs_reduction=macs,
        importance=importance,  # type: ignore[arg-type]
        ignore=ignore,
        prune_output_layers=prune_spec.prune_output_layers,
    )


@dataclass
class Unit:
    """A removable unit: the node replaced (the addition, or the layer's last node), its input, its body."""

    name: str
    kind: Literal["block", "layer"]
    replaced: fx.Node
    source: fx.Node
    body: set[fx.Node]
    modules: list[str] = field(default_factory=list)
    macs: int = 0
    skip_reason: str = ""


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        return True
    return node.op == "call_method" and node.target in ("add", "__add__")


def _ancestors_after(node: fx.Node, floor: int, order: dict[fx.Node, int]) -> set[fx.Node]:
    """``node`` and its ancestors that come after position ``floor``."""
    seen = {node}
    stack = [node]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent not in seen and order[parent] > floor:
                seen.add(parent)
                stack.append(parent)
    return seen


def _descends_from(node: fx.Node, source: fx.Node, order: dict[fx.Node, int]) -> set[fx.Node]:
    """The ancestors of ``node`` (itself included) that are computed from ``source``."""
    candidates = _ancestors_after(node, order[source], order)
    result: set[fx.Node] = set()
    for n in sorted(candidates, key=order.__getitem__):
        if source in n.all_input_nodes or any(p in result for p in n.all_input_nodes):
            result.add(n)
    return result


def _modules_in(gm: fx.GraphModule, body: set[fx.Node]) -> list[str]:
    return [str(n.target) for n in sorted(body, key=lambda n: n.name) if weighted_module(gm, n) is not None]


def _common_prefix(paths: Sequence[str]) -> str:
    parts = [p.split(".") for p in paths]
    prefix: list[str] = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        prefix.append(items[0])
    return ".".join(prefix)


def _unit_name(modules: Sequence[str], fallback: str) -> str:
    """``prefix.{a,b}`` for the modules under one prefix (``layer1.0.{conv1,conv2}``), or the one path."""
    if len(modules) == 1:
        return modules[0]
    prefix = _common_prefix(modules)
    rest = [m[len(prefix) + 1 :] if prefix else m for m in modules]
    if not prefix and len(rest) > 4:
        return fallback
    joined = "{" + ",".join(rest) + "}"
    return f"{prefix}.{joined}" if prefix else joined


def find_blocks(gm: fx.GraphModule) -> list[Unit]:
    """Every residual block of ``gm`` (after :func:`~.fx_tools.propagate`), in graph order."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    units: list[Unit] = []
    for node in gm.graph.nodes:
        if not _is_add(node) or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            continue
        shape = shape_of(node)
        if shape is None or shape_of(a) != shape or shape_of(b) != shape:
            continue
        for skip, branch in ((a, b), (b, a)):
            if order[skip] >= order[branch]:
                continue
            body = _descends_from(branch, skip, order)
            if branch not in body:
                continue
            if any(u not in body and u is not node for n in body for u in n.users):
                continue
            if any(n.op in ("placeholder", "output") for n in body):
                continue
            modules = _modules_in(gm, body)
            if not modules:
                continue
            name = _unit_name(modules, node.name)
            macs = sum(node_macs(gm, n) for n in body)
            units.append(Unit(name, "block", node, skip, body, modules, macs))
            break
    return units


def find_identity_layers(gm: fx.GraphModule) -> list[Unit]:
    """Linear/Conv layers whose output has their input's shape (with a BatchNorm only they feed)."""
    units: list[Unit] = []
    for node in gm.graph.nodes:
        if weighted_module(gm, node) is None or len(node.all_input_nodes) != 1:
            continue
        source = node.all_input_nodes[0]
        if shape_of(node) is None or shape_of(node) != shape_of(source):
            continue
        body = {node}
        last = node
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module":
            follower = gm.get_submodule(str(users[0].target))
            if isinstance(follower, _NORMS) and shape_of(users[0]) == shape_of(node):
                last = users[0]
                body.add(last)
        path = str(node.target)
        units.append(Unit(path, "layer", last, source, body, [path], node_macs(gm, node)))
    return units


# -- importance ---------------------------------------------------------------------------------------


def _unit_parameters(gm: fx.GraphModule, unit: Unit) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for n in unit.body:
        if n.op == "call_module":
            params += list(gm.get_submodule(str(n.target)).parameters())
    return params


class _Run(fx.Interpreter):
    """Runs the graph, optionally bypassing one unit, recording values of chosen nodes."""

    def __init__(
        self, gm: fx.GraphModule, bypass: Unit | None = None, record: Sequence[fx.Node] = ()
    ) -> None:
        super().__init__(gm)
        self.bypass = bypass
        self.record = set(record)
        self.values: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        if self.bypass is not None and n is self.bypass.replaced:
            result = self.env[self.bypass.source]
        else:
            result = super().run_node(n)
        if n in self.record and isinstance(result, torch.Tensor):
            self.values[n] = result.detach()
        return result


def unit_scores(
    gm: fx.GraphModule,
    units: Sequence[Unit],
    importance: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    seed: int = 0,
) -> np.ndarray:
    """One score per unit: higher is more important."""
    if importance in ("l1", "l2"):
        p = 1 if importance == "l1" else 2
        out = []
        for unit in units:
            total = sum(float(w.detach().abs().double().pow(p).sum()) for w in _unit_parameters(gm, unit))
            out.append(total ** (1.0 / p))
        return np.asarray(out)
    if importance == "random":
        return np.random.default_rng(seed).random(len(units))
    if importance == "activation":
        return _activation(gm, units, batches)
    if importance == "taylor":
        return _taylor(gm, units, batches)
    return _sensitivity(gm, units, batches)


def _activation(
    gm: fx.GraphModule, units: Sequence[Unit], batches: Sequence[tuple[torch.Tensor, ...]]
) -> np.ndarray:
    record = [n for u in units for n in (u.replaced, u.source)]
    totals = np.zeros(len(units))
    with torch.no_grad():
        for batch in batches:
            run = _Run(gm, record=record)
            run.run(*batch)
            for i, unit in enumerate(units):
                out, src = run.values[unit.replaced].double(), run.values[unit.source].double()
                totals[i] += float((out - src).norm() / max(float(src.norm()), 1e-12))
    return totals / max(1, len(batches))


def _taylor(
    gm: fx.GraphModule, units: Sequence[Unit], batches: Sequence[tuple[torch.Tensor, ...]]
) -> np.ndarray:
    params = {id(w): w for u in units for w in _unit_parameters(gm, u)}
    products = dict(zip(params, taylor_products(gm, list(params.values()), batches), strict=True))
    return np.asarray(
        [sum(float(products[id(w)].sum()) for w in _unit_parameters(gm, unit)) for unit in units]
    )


def _sensitivity(
    gm: fx.GraphModule, units: Sequence[Unit], batches: Sequence[tuple[torch.Tensor, ...]]
) -> np.ndarray:
    reference = run_batches(gm, batches)
    drops = []
    with torch.no_grad():
        for unit in units:
            outputs = [
                [o.detach() for o in outputs_of(_Run(gm, bypass=unit).run(*batch))] for batch in batches
            ]
            drops.append(1.0 - fidelity(reference, outputs).cosine_similarity)
    return np.asarray(drops)


# -- the handler --------------------------------------------------------------------------------------


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


def find_units(gm: fx.GraphModule, config: LayerConfig) -> list[Unit]:
    """The removable units (blocks, else identity-shaped layers), with skip reasons set."""
    units = find_blocks(gm) or find_identity_layers(gm)
    outputs = output_modules(gm)
    for unit in units:
        names = [unit.name, *(n for p in unit.modules for n in names_of(gm, p))]
        hit = first_match(config.ignore, names)
        if hit is not None:
            unit.skip_reason = f"matches ignore pattern {hit!r}"
        elif not config.prune_output_layers and any(p in outputs for p in unit.modules):
            unit.skip_reason = "contains an output layer (set prune_output_layers)"
    return units


def remove_units(gm: fx.GraphModule, units: Sequence[Unit]) -> None:
    """Rewire each unit's replaced node to its input, then drop dead code and unused submodules."""
    for unit in units:
        unit.replaced.replace_all_uses_with(unit.source)
    remove_unused_modules(gm)


@register_pruner(LayerConfig)
def prune_layers(model: onnx.ModelProto, config: LayerConfig, context: PruneContext) -> PruneResult:
    """Remove units as the module docstring states.

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
    if config.importance in _DATA_DRIVEN and context.synthetic:
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
