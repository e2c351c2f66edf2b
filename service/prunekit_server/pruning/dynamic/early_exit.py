"""EARLY_EXIT end to end: find exit points, train their heads, calibrate the threshold, build the model.

Exit points are the spec's (``exits``) or chosen automatically (:func:`~.points.choose_points`). The
probe model gives every point's pooled features and the original's outputs on the train inputs (heads
are trained on them, :func:`~.heads.train_head`) and on the calibration inputs (the eval split). The
threshold is the spec's, or the cheapest of :data:`~.calibrate.THRESHOLDS` meeting the rule. Automatic
exits that almost no input takes at that threshold (under :data:`MIN_EXIT_SHARE`) are dropped and the
threshold chosen again: an unused exit only costs its head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from prunekit.spec.dynamic_configs import DynamicConfig
from prunekit.v1 import model_pb2

from ...measure.accuracy import run_batched
from ...measure.latency import cpu_session
from .calibrate import THRESHOLDS, CalibrationRule, Routing, SweepPoint, choose, sweep
from .compose import build_early_exit
from .heads import Head, probe_model, train_head
from .points import (
    ExitPoint,
    Graph,
    Output,
    choose_points,
    classifier_output,
    exit_points,
    named_points,
    no_points_error,
)

__all__ = ["EarlyExit", "Split", "early_exit"]

MIN_EXIT_SHARE = 0.02
DEFAULT_BATCH = 64


@dataclass(frozen=True)
class Split:
    """Samples of one split: each model input's array (samples first) and labels when there are any."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


@dataclass
class EarlyExit:
    """The built model and what choosing it found: exits, their MACs costs, the sweep and the threshold.

    ``costs`` has one MACs share per exit then the full network's; ``head_agreement`` each head's top-1
    agreement with the original on the calibration inputs; ``shares`` the share leaving at each exit (then
    the full network) at ``threshold`` on them.
    """

    model: onnx.ModelProto
    points: list[ExitPoint]
    costs: list[float]
    threshold: float
    calibrated: bool
    metric: str
    rule: str
    sweep: list[SweepPoint]
    head_agreement: list[float]
    shares: list[float]
    warnings: list[str] = field(default_factory=list)
    graph: Graph | None = None
    output: Output | None = None
    heads: list[Head] = field(default_factory=list)


def _features(probe: onnx.ModelProto, split: Split, scratch: Path, batch: int) -> list[np.ndarray]:
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "dynamic_probe.onnx"
    path.write_bytes(probe.SerializeToString())
    outputs = run_batched(cpu_session(path), split.inputs, batch)
    count = len(outputs.items[0]) if outputs.items else 0
    return [np.concatenate([item[j] for item in outputs.items]).reshape(len(split), -1) for j in range(count)]


def _teacher_logits(original: np.ndarray, output: Output) -> np.ndarray:
    if output.final_op == "Softmax":
        logits: np.ndarray = np.log(np.clip(original, 1e-12, None))
        return logits
    return original


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return out


def _routing(
    heads: Sequence[Head], features: Sequence[np.ndarray], original: np.ndarray, costs: Sequence[float],
    reference: np.ndarray, batch: int,
) -> Routing:  # fmt: skip
    logits = [head.logits(f) for head, f in zip(heads, features, strict=True)]
    return Routing(
        confidence=np.stack([_softmax(z).max(axis=1) for z in logits]),
        predictions=np.stack([*(z.argmax(axis=1) for z in logits), original.argmax(axis=1)]),
        costs=np.asarray(costs, dtype=np.float64),
        reference=reference,
        batch=batch,
    )


def _points(graph: Graph, output: Output, config: DynamicConfig) -> list[ExitPoint]:
    found = exit_points(graph, output)
    if config.exits:
        return named_points(found, config.exits, "spec.prune.dynamic.exits")
    chosen = choose_points(found, config.max_exits)
    if not chosen:
        raise no_points_error(output)
    return chosen


def _batch(inputs: Sequence[model_pb2.InputSpec]) -> int:
    return int(inputs[0].shape[0]) if inputs and inputs[0].shape else 1


def early_exit(
    model: onnx.ModelProto,
    inputs: Sequence[model_pb2.InputSpec],
    config: DynamicConfig,
    train: Split,
    calibration: Split,
    rule: CalibrationRule,
    scratch: Path,
    seed: int = 0,
) -> EarlyExit:
    """Build the early-exit form of ``model`` (see the module docstring).

    Raises ``DYNAMIC_NOT_APPLICABLE`` for a model with no classifier output or no exit point, and
    ``INVALID_SPEC`` for ``exits`` that are not exit points.
    """
    graph = Graph(model, inputs)
    output = classifier_output(graph)
    points = _points(graph, output, config)
    batch = _batch(inputs)
    run_batch = batch if batch > 1 else DEFAULT_BATCH
    probe = probe_model(model, points, output.name)
    train_out, *train_features = _features(probe, train, scratch, run_batch)
    cal_out, *cal_features = _features(probe, calibration, scratch, run_batch)
    teacher = _teacher_logits(train_out, output)
    heads = [
        train_head(f, teacher, train.labels, config.steps, seed + k) for k, f in enumerate(train_features)
    ]
    reference = calibration.labels if rule.metric == "accuracy" and calibration.labels is not None else None
    original_metric = float(np.mean(cal_out.argmax(axis=1) == reference)) if reference is not None else 1.0
    ref = reference if reference is not None else cal_out.argmax(axis=1)
    keep = list(range(len(points)))
    while True:
        costs = _costs(graph, [points[k] for k in keep], [heads[k] for k in keep])
        routing = _routing(
            [heads[k] for k in keep], [cal_features[k] for k in keep], cal_out, costs, ref, batch
        )
        swept = sweep(routing, sorted({*THRESHOLDS, config.threshold} - {0.0}))
        chosen = _threshold(config, swept, rule, original_metric, routing)
        unused = [k for k, share in zip(keep, chosen.shares, strict=False) if share < MIN_EXIT_SHARE]
        if config.exits or not unused or len(unused) == len(keep):
            break
        keep = [k for k in keep if k not in unused]
    warnings = []
    if not config.threshold and not rule.meets(chosen.metric, original_metric):
        warnings.append(
            f"DYNAMIC_RULE_NOT_MET: no threshold meets the calibration rule ({rule.describe()}); "
            f"the highest, {chosen.threshold:g}, is used"
        )
    if chosen.shares[-1] >= 1.0 - 1e-12:
        warnings.append(
            "DYNAMIC_NO_EARLY_EXIT: at this threshold no calibration input leaves early; the model pays the "
            "heads for nothing"
        )
    kept_points, kept_heads = [points[k] for k in keep], [heads[k] for k in keep]
    agreement = [float(np.mean(routing.predictions[i] == routing.predictions[-1])) for i in range(len(keep))]
    return EarlyExit(
        model=build_early_exit(graph, output, kept_points, kept_heads, chosen.threshold),
        points=kept_points,
        costs=list(costs),
        threshold=chosen.threshold,
        calibrated=not config.threshold,
        metric=rule.metric if reference is not None else "top1_agreement",
        rule=rule.describe(),
        sweep=swept,
        head_agreement=agreement,
        shares=list(chosen.shares),
        warnings=warnings,
        graph=graph,
        output=output,
        heads=kept_heads,
    )


def _threshold(
    config: DynamicConfig, swept: list[SweepPoint], rule: CalibrationRule, original: float, routing: Routing
) -> SweepPoint:
    """The spec's threshold, the cheapest meeting the rule, or (none does) the highest swept."""
    if config.threshold:
        return sweep(routing, (config.threshold,))[0]
    chosen = choose(swept, rule, original)
    return chosen if chosen is not None else swept[-1]


def _costs(graph: Graph, points: Sequence[ExitPoint], heads: Sequence[Head]) -> list[float]:
    total = graph.total_macs
    head_macs = [int(h.weight.size) for h in heads]
    costs = [p.macs_fraction + sum(head_macs[: k + 1]) / total for k, p in enumerate(points)]
    return [*costs, 1.0 + sum(head_macs) / total]
