"""The fine-tuning spec turned into configs, and fine-tuning facts turned into report messages.

:func:`finetune_plan` applies the proto's defaults (AdamW at 1e-3, SGD at
1e-2 with momentum 0.9, batch 32, temperature 4, alpha 0.5, feature weight 1,
a checkpoint every 60 s when neither interval is set, device AUTO, mixed
precision on) to a spec that passed the spec rules. :meth:`FinetunePlan.round_config`
splits the budget of an ITERATIVE schedule: ``steps_per_round`` steps for
each recovery round when set, else the budget divided evenly between the
rounds (the recovery after each of the first ``rounds - 1`` rounds and the
final fine-tune after the last one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from prunekit.v1 import report_pb2, spec_pb2

from ..errors import FieldViolation, invalid_spec
from ..training.config import Device, FinetuneConfig, Optimizer, Schedule
from ..training.evaluate import Accuracy, Fidelity
from ..training.finetune import FinetuneResult

DEFAULT_CHECKPOINT_SECONDS = 60.0
LOSS_CURVE_POINTS = 200
_OPTIMIZERS: dict[int, Optimizer] = {
    spec_pb2.OPTIMIZER_UNSPECIFIED: "adamw",
    spec_pb2.OPTIMIZER_ADAMW: "adamw",
    spec_pb2.OPTIMIZER_SGD: "sgd",
}
_SCHEDULES: dict[int, Schedule] = {
    spec_pb2.LR_SCHEDULE_UNSPECIFIED: "cosine",
    spec_pb2.LR_SCHEDULE_COSINE: "cosine",
    spec_pb2.LR_SCHEDULE_LINEAR: "linear",
    spec_pb2.LR_SCHEDULE_CONSTANT: "constant",
}
_DEVICES: dict[int, Device] = {
    spec_pb2.DEVICE_UNSPECIFIED: "auto",
    spec_pb2.DEVICE_CPU: "cpu",
    spec_pb2.DEVICE_CUDA: "cuda",
}
_METRICS = {"teacher_agreement": "top1_agreement", "none": ""}


@dataclass(frozen=True)
class FinetunePlan:
    """A job's fine-tuning: the config of the final phase and everything around it."""

    config: FinetuneConfig
    distill: bool
    feature_layers: tuple[str, ...]
    feature_weight: float
    checkpoint_every_steps: int
    checkpoint_every_seconds: float
    steps_per_round: int

    def round_config(self, rounds: int, train_samples: int, round_index: int) -> FinetuneConfig:
        """The config of the recovery after round ``round_index`` (1-based) of ``rounds``.

        Seeds differ per round (``seed + round_index``) so the rounds see
        different batch orders.
        """
        c = self.config
        seed = c.seed + round_index
        if self.steps_per_round:
            return dataclasses.replace(c, steps=self.steps_per_round, epochs=0, max_seconds=0.0, seed=seed)
        return self.share(rounds, train_samples, seed)

    def final_config(self, rounds: int, train_samples: int) -> FinetuneConfig:
        """The config of the phase after pruning: the whole budget, or its share when rounds split it."""
        if rounds <= 1 or self.steps_per_round:
            return self.config
        return self.share(rounds, train_samples, self.config.seed)

    def share(self, rounds: int, train_samples: int, seed: int) -> FinetuneConfig:
        """The config with one of ``rounds`` equal parts of the budget (steps and seconds)."""
        c = self.config
        per_epoch = train_samples // c.batch_size if train_samples >= c.batch_size else 1
        budgets = [b for b in (c.steps, c.epochs * per_epoch) if b > 0]
        steps = max(1, min(budgets) // rounds) if budgets else 0
        return dataclasses.replace(c, steps=steps, epochs=0, max_seconds=c.max_seconds / rounds, seed=seed)


def finetune_plan(spec: spec_pb2.FinetuneSpec) -> FinetunePlan:
    """The plan of a ``FinetuneSpec`` (already checked by the spec rules); ``INVALID_SPEC`` otherwise."""
    optimizer = _OPTIMIZERS[spec.optimizer]
    lr = spec.learning_rate or (1e-2 if optimizer == "sgd" else 1e-3)
    distill = spec.HasField("distillation")
    d = spec.distillation
    try:
        config = FinetuneConfig(
            epochs=spec.epochs,
            steps=spec.steps,
            max_seconds=spec.max_seconds,
            batch_size=spec.batch_size or 32,
            optimizer=optimizer,
            lr=lr,
            momentum=spec.momentum or 0.9,
            weight_decay=spec.weight_decay,
            schedule=_SCHEDULES[spec.schedule],
            warmup_steps=spec.warmup_steps,
            grad_clip=spec.grad_clip,
            seed=spec.seed,
            eval_every=spec.eval_every,
            patience=spec.patience,
            device=_DEVICES[spec.device],
            mixed_precision=spec.mixed_precision if spec.HasField("mixed_precision") else True,
            temperature=d.temperature or 4.0,
            alpha=d.alpha if d.HasField("alpha") else 0.5,
        )
    except ValueError as exc:
        raise invalid_spec([FieldViolation("spec.finetune", str(exc))]) from None
    steps, seconds = spec.checkpoint_every_steps, spec.checkpoint_every_seconds
    return FinetunePlan(
        config=config,
        distill=distill,
        feature_layers=tuple(d.feature_layers) if distill else (),
        feature_weight=d.feature_weight or 1.0,
        checkpoint_every_steps=steps,
        checkpoint_every_seconds=seconds or (0.0 if steps else DEFAULT_CHECKPOINT_SECONDS),
        steps_per_round=spec.steps_per_round,
    )


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


def accuracy_stats(accuracy: Accuracy | None, mse: float | None, samples: int) -> report_pb2.AccuracyStats:
    """``AccuracyStats`` from top-1/top-5 on labels, or from the MSE on targets."""
    stats = report_pb2.AccuracyStats(samples=samples)
    if accuracy is not None:
        stats.top1 = accuracy.top1
        if accuracy.top5 is not None:
            stats.top5 = accuracy.top5
    if mse is not None:
        stats.mse = mse
    return stats


def quality_stats(fidelity: Fidelity) -> report_pb2.QualityStats:
    """``QualityStats`` of a fidelity measured with the training module."""
    return report_pb2.QualityStats(
        top1_agreement=fidelity.top1_agreement,
        cosine_similarity=fidelity.cosine_similarity,
        max_abs_error=fidelity.max_abs_error,
        samples=fidelity.samples,
    )
