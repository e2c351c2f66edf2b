"""What a fine-tune reports: an event per step, its result, and the report's record of a phase.

The record is a ``FinetuneRun``. Metric names are the API's (``top1_agreement`` for the trainer's
``teacher_agreement``, ``""`` for none); the loss is named as it was made
(``cross_entropy``, ``mse``, ``distillation``, ``feature_mse`` joined by
``+``); the loss curve keeps at most :data:`LOSS_CURVE_POINTS` points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prunekit.v1 import report_pb2

LOSS_CURVE_POINTS = 200
_METRICS = {"teacher_agreement": "top1_agreement", "none": ""}


@dataclass(frozen=True)
class FinetuneEvent:
    """Progress after one step.

    ``epoch`` counts completed epochs; ``lr`` is the rate of the next step;
    ``eval_metric`` is the last evaluation's (None before the first).
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    eval_metric: float | None
    metric_name: str


@dataclass
class FinetuneResult:
    """What a fine-tune did. ``stop_reason``: 'budget', 'max_seconds' or 'early_stopping'."""

    steps: int
    total_steps: int
    epochs: int
    stop_reason: str
    metric_name: str
    final_metric: float | None
    best_metric: float | None
    best_step: int | None
    losses: list[float]
    device: str
    seconds: float
    resumed_from_step: int | None = None


def metric_name(name: str) -> str:
    """The trainer's metric name as the API names it (``top1_agreement``; ``""`` for none)."""
    return _METRICS.get(name, name)


def loss_name(supervision: str, teacher: bool, features: bool) -> str:
    """``cross_entropy``, ``mse``, ``distillation``... joined by ``+``, as the loss was made."""
    parts = {"label": ["cross_entropy"], "target": ["mse"]}.get(supervision, [])
    if teacher:
        parts.append("distillation")
    if features:
        parts.append("feature_mse")
    return "+".join(parts)


def _curve(losses: Sequence[float]) -> tuple[list[float], list[int]]:
    """At most :data:`LOSS_CURVE_POINTS` evenly spaced (loss, step) points, the last step included."""
    n = len(losses)
    if n == 0:
        return [], []
    stride = -(-n // LOSS_CURVE_POINTS)
    picks = list(range(stride - 1, n, stride))
    if picks[-1] != n - 1:
        picks.append(n - 1)
    return [float(losses[i]) for i in picks], [i + 1 for i in picks]


def finetune_run(
    phase: str, result: FinetuneResult, loss: str, mixed_precision: bool
) -> report_pb2.FinetuneRun:
    """The report's record of one phase."""
    values, steps = _curve(result.losses)
    run = report_pb2.FinetuneRun(
        phase=phase,
        steps=result.steps,
        total_steps=result.total_steps,
        epochs=result.epochs,
        stop_reason=result.stop_reason,
        loss=loss,
        metric=metric_name(result.metric_name),
        best_step=result.best_step or 0,
        seconds=result.seconds,
        steps_per_second=result.steps / result.seconds if result.seconds > 0 else 0.0,
        device=result.device,
        mixed_precision=mixed_precision and result.device == "cuda",
        resumed_from_step=result.resumed_from_step or 0,
        loss_curve=values,
        loss_curve_steps=steps,
    )
    if result.final_metric is not None:
        run.final_metric = result.final_metric
    if result.best_metric is not None:
        run.best_metric = result.best_metric
    return run
