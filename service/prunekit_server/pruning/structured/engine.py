"""The structured pruning run shared by CHANNEL and NEURON: ONNX in, a physically smaller ONNX out.

1. The model is converted to a GraphModule (:func:`..graph.to_graph`) and
   Torch-Pruning's dependency graph is traced on it.
2. The eligible groups are selected and each is probed (:mod:`.groups`).
3. Each round (``steps`` of them): the groups are scored (:mod:`.importance`),
   planned (:mod:`.targets`: ratio or MACs target, scope, caps, rounding) and
   pruned; with SPARSEGPT the layers that lost input channels are then refitted
   (:mod:`.reconstruct`); the context's ``recover`` hook runs between rounds.
4. The pruned graph is exported (:mod:`.export`: fixed sizes frozen, the
   layers' original node names restored, so reports can compare layers).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import fx, nn

from prunekit.spec.structured_configs import StructuredConfig

from ...errors import FieldViolation, invalid_spec, unsupported_model
from ..base import LayerPruneInfo, MetricCurve, PruneContext, PruneResult, ScheduleStep
from ..fx_tools import WEIGHTED_MODULES, fidelity, origin, run_batches
from ..graph import example_inputs, feed_batches, to_graph
from ..sensitivity import auto_layer_ratios, graph_sensitivity
from .attention import attention_projections
from .bound import GROUP_SEARCH_SECONDS, time_bound
from .export import export_pruned
from .groups import Group, dependency_graph, root_group, select_groups, verify, width_of
from .importance import Scorer
from .layer_inputs import evaluating
from .reach import Steps, kept_shares, limit_reason, reach
from .reconstruct import Survivors, reconstruct
from .targets import MACS_TOLERANCE, Plan, apply, count_macs, plan, search_ratio, trial_macs


@dataclass(frozen=True)
class Method:
    """What distinguishes CHANNEL from NEURON: root layer types, the Linear-only rule, the name."""

    name: str
    roots: tuple[type[nn.Module], ...]
    linear_only: bool
    nothing_found: str


@dataclass(frozen=True)
class _Weight:
    shape: tuple[int, ...]
    nonzero: int
    width: int
    """Output channels (features)."""


def weights_of(gm: fx.GraphModule) -> dict[str, _Weight]:
    found: dict[str, _Weight] = {}
    for path, module in gm.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, WEIGHTED_MODULES) and isinstance(weight, torch.Tensor):
            shape = tuple(int(d) for d in weight.shape)
            width = int(getattr(module, "out_channels", getattr(module, "out_features", 0)))
            found[path] = _Weight(shape, int(torch.count_nonzero(weight.detach())), width)
    return found


@dataclass(frozen=True)
class _Rounds:
    """What every round plans from: the original chunk widths, own and auto ratios, the MACs before."""

    original: dict[str, int]
    own: dict[str, float]
    auto: Callable[[float], dict[str, float]] | None
    base: int


def _chunk_scores(scores: torch.Tensor, group: Group) -> torch.Tensor:
    return scores.reshape(group.chunks, group.chunk_width).mean(0)


class Run:
    def __init__(
        self, model: onnx.ModelProto, config: StructuredConfig, context: PruneContext, method: Method
    ):
        self.model, self.config, self.context, self.method = model, config, context, method
        self.gm = to_graph(model, context)
        self.args = example_inputs(context)
        self.batches = feed_batches(context) or [self.args]
        self.warnings: list[str] = []
        self.skipped: dict[str, str] = {}
        self.sensitivity: list[MetricCurve] = []
        self.schedule: list[ScheduleStep] = []

    def groups(self) -> list[Group]:
        config = self.config
        with time_bound(GROUP_SEARCH_SECONDS, "finding and probing the channel groups"):
            held = attention_projections(self.gm, self.args)
            graph = dependency_graph(self.gm, self.args)
            selection = select_groups(
                self.gm,
                graph,
                roots=self.method.roots,
                held=held,
                ignore=config.ignore,
                overrides=config.overrides,
                prune_output_layers=config.prune_output_layers,
                linear_only=self.method.linear_only,
            )
            failures = verify(
                self.gm, graph, selection.groups, self.args, prune_output_layers=config.prune_output_layers
            )
        self.skipped.update(selection.skipped)
        for key, reason in selection.warned.items():
            self.warnings.append(f"GROUP_SKIPPED: {origin(self.gm, key).name}: {reason}")
        for key, reason in failures.items():
            self.skipped[key] = reason
            self.warnings.append(f"GROUP_SKIPPED: {origin(self.gm, key).name}: {reason}")
        groups = [g for g in selection.groups if g.key not in failures]
        if groups:
            return groups
        if any("pattern" in reason for reason in selection.skipped.values()):
            raise invalid_spec(
                [FieldViolation("spec.prune.ignore", "the patterns leave no prunable channel group")]
            )
        detail = "; ".join(f"{origin(self.gm, k).name}: {r}" for k, r in list(failures.items())[:5])
        raise unsupported_model(self.method.nothing_found + (f" ({detail})" if detail else ""))

    def auto_ratios(self, groups: Sequence[Group]) -> Callable[[float], dict[str, float]]:
        """Group key -> ratio from the sensitivity curves, for an overall ratio."""
        keys = {g.key for g in groups if g.ratio is None}
        analysis = graph_sensitivity(self.gm, self.batches, ignore=self.config.ignore)
        curves = [c for c in analysis.curves if c.module in keys]
        by_layer = {c.layer: c.module for c in curves}
        self.sensitivity = [m for c in curves for m in c.metric_curves()]

        def ratios(overall: float) -> dict[str, float]:
            if overall <= 0.0 or not curves:
                return {}
            per_layer = auto_layer_ratios(curves, min(overall, 0.99), self.config.max_layer_ratio)
            return {by_layer[layer]: r for layer, r in per_layer.items()}

        return ratios

    def scores(self, groups: Sequence[Group], graph: object) -> dict[str, torch.Tensor]:
        scorer = Scorer(self.config.importance, self.gm, self.batches, self.config.seed)
        try:
            found: dict[str, torch.Tensor] = {}
            for group in groups:
                module = self.gm.get_submodule(group.key)
                full = root_group(graph, module, range(group.width))
                found[group.key] = _chunk_scores(scorer(full), group)
        finally:
            scorer.close()
        if scorer.fallbacks and self.config.importance != "l1":
            self.warnings.append(
                f"IMPORTANCE_FALLBACK: {scorer.fallbacks} group(s) could not be ranked by "
                f"{self.config.importance} (e.g. no BatchNorm for bn_scale) and were ranked by l1"
            )
        return found

    def execute(self) -> tuple[int, int]:
        """Prune in rounds; return the MACs before and after."""
        config, context = self.config, self.context
        base_macs = count_macs(self.gm, self.args)
        groups = self.groups()
        rounds = _Rounds(
            {g.key: g.chunk_width for g in groups},
            {g.key: g.ratio for g in groups if g.ratio is not None},
            self.auto_ratios(groups) if config.auto_ratios else None,
            base_macs,
        )
        reference = run_batches(self.gm.eval(), self.batches) if config.steps > 1 else []
        for step in range(1, config.steps + 1):
            progress = step / config.steps
            graph = dependency_graph(self.gm, self.args)
            for group in groups:
                group.width = width_of(graph, self.gm.get_submodule(group.key))
            scores = self.scores(groups, graph)
            self.prune(graph, self.choose(groups, scores, rounds, progress))
            if context.recover is not None and step < config.steps:
                self.recover()
            if reference:
                self.gm.eval()
                moved = fidelity(reference, run_batches(self.gm, self.batches))
                self.schedule.append(
                    ScheduleStep(
                        step=step,
                        ratio=progress,
                        macs=count_macs(self.gm, self.args),
                        metric="cosine_similarity",
                        value=moved.cosine_similarity,
                    )
                )
        return base_macs, count_macs(self.gm, self.args)

    def choose(
        self, groups: Sequence[Group], scores: dict[str, torch.Tensor], rounds: _Rounds, progress: float
    ) -> Plan:
        """This round's plan: the configured ratio, or the MACs target reached as closely as it can be."""
        config, cap = self.config, self.config.max_layer_ratio

        def make(ratio: float, round_to: int = config.round_to) -> Plan:
            ratios = rounds.auto(ratio) if rounds.auto is not None else {}
            ratios.update({k: r * progress if r else ratio for k, r in rounds.own.items()})
            return plan(
                groups,
                scores,
                rounds.original,
                ratio,
                scope=config.scope,
                round_to=round_to,
                max_layer_ratio=cap,
                own_ratios=ratios,
            )

        if not config.target_macs_reduction:
            return make(config.ratio * progress)
        target = rounds.base / config.target_macs_reduction**progress

        def macs_of(candidate: Plan) -> int:
            return trial_macs(self.gm, self.args, candidate)

        found = search_ratio(make, macs_of, target, cap)
        steps = Steps(groups, scores, rounds.original, set(rounds.own), config.round_to, cap)
        found = reach(steps, found, macs_of, target)
        if progress == 1.0 and abs(target / max(found.macs, 1) - 1.0) > MACS_TOLERANCE:
            floor_macs = macs_of(make(cap))
            unrounded = macs_of(make(cap, 1)) if config.round_to > 1 else None
            shares = kept_shares(self.gm, self.args, groups, self.skipped, rounds.base)
            self.warnings.append(
                f"MACS_TARGET_MISSED: asked for {config.target_macs_reduction:g}x fewer MACs, reached "
                f"{rounds.base / max(found.macs, 1):.3g}x (round_to {config.round_to}, max_layer_ratio "
                f"{cap:g}): " + limit_reason(rounds.base, floor_macs, unrounded, shares)
            )
        return found.plan

    @property
    def refits(self) -> bool:
        """Whether each round ends refitting the layers that lost inputs (SPARSEGPT)."""
        return self.config.importance == "sparsegpt"

    def prune(self, graph: object, chosen: Plan) -> None:
        """Apply one round's plan; SPARSEGPT then refits the layers that lost inputs (:mod:`.reconstruct`)."""
        if not self.refits:
            apply(self.gm, graph, chosen)
            return
        before = copy.deepcopy(self.gm)
        survivors = Survivors(self.gm)
        apply(self.gm, graph, chosen, survivors.record)
        with evaluating(before, self.gm):
            found = reconstruct(before, self.gm, survivors, self.batches)
        self.warnings.extend(w for w in found if w not in self.warnings)

    def recover(self) -> None:
        hook = self.context.recover
        assert hook is not None
        try:
            hook(self.gm)
        except Exception as exc:
            if getattr(hook, "fatal", False):
                raise
            self.warnings.append(f"RECOVERY_FAILED: the recovery step between rounds failed: {exc}"[:400])
            return
        what = getattr(hook, "description", "")
        if what and self.context.synthetic:
            note = f"SYNTHETIC_RECOVERY: {what} between rounds on synthetic inputs, not the model's data"
            if note not in self.warnings:
                self.warnings.append(note)


def layer_infos(
    gm: fx.GraphModule, before: dict[str, _Weight], skipped: dict[str, str]
) -> list[LayerPruneInfo]:
    after = weights_of(gm)
    infos: list[LayerPruneInfo] = []
    for path, old in before.items():
        new = after.get(path, old)
        source = origin(gm, path)
        reason = skipped.get(path, "") if new.width == old.width else ""
        infos.append(
            LayerPruneInfo(
                name=source.name,
                op_type=source.op_type,
                weight_name=source.weight_name,
                shape_before=old.shape,
                shape_after=new.shape,
                parameters_before=int(np.prod(old.shape)),
                parameters_after=int(np.prod(new.shape)),
                nonzero_before=old.nonzero,
                nonzero_after=new.nonzero,
                skipped=bool(reason),
                skip_reason=reason,
            )
        )
    return infos


def run(
    model: onnx.ModelProto, config: StructuredConfig, context: PruneContext, method: Method
) -> PruneResult:
    """Prune ``model`` as ``config`` says (see the module doc); the model is not mutated."""
    if not context.inputs:
        raise invalid_spec(
            [FieldViolation("spec.inputs", f"{method.name} pruning needs the model's input shapes")]
        )
    job = Run(model, config, context, method)
    if (config.data_driven or config.auto_ratios) and (context.synthetic or not context.feeds):
        what = "sensitivity analysis" if config.auto_ratios else f"{config.importance} importance"
        job.warnings.append(
            f"SYNTHETIC_IMPORTANCE: {what} was measured on synthetic inputs, not the model's data; "
            "the ranking reflects how the model responds to noise"
            + ("; so does the refit of the layers after the removed channels" if job.refits else "")
        )
    before = weights_of(job.gm)
    base_macs, after_macs = job.execute()
    exported = export_pruned(job.gm, model, context)
    layers = layer_infos(job.gm, before, job.skipped)
    if after_macs >= base_macs:
        job.warnings.append(
            f"NOTHING_PRUNED: no channel could be removed under these settings "
            f"(round_to {config.round_to}, max_layer_ratio {config.max_layer_ratio:g})"
        )
    return PruneResult(
        tensors={},
        layers=layers,
        warnings=job.warnings,
        model=exported,
        module=job.gm,
        sensitivity=job.sensitivity,
        schedule=job.schedule,
    )
