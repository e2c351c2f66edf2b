"""The fine-tune stage: the pruned model trained on the job's data, with distillation from the original.

:class:`Tuner` runs one phase of fine-tuning (:func:`~prunekit_server.training.finetune.finetune`)
on a torch module: ``"finetune"`` after pruning, ``"round-01"``, ``"round-02"``...
between the rounds of an ITERATIVE schedule (:class:`RoundRecovery`, the
``PruneContext.recover`` hook). Each phase checkpoints into
``checkpoint_dir/<phase>`` (:class:`~prunekit_server.training.checkpoint.DirectoryCheckpoints`)
and resumes from there when a checkpoint is already present (a retried
worker). Progress goes out as stage ``"finetune"`` with details
``{"finetune": {phase, step, total_steps, epoch, loss, eval_metric, metric}}``
(at most every :data:`PROGRESS_INTERVAL_S` seconds, and for the last step)
and, right after each checkpoint is written, ``{"checkpoint": {phase, name, step}}``.

The teacher is the original model converted to a GraphModule; it distils
when the spec asks for distillation, and always when the data has neither
``label`` nor ``target`` (the ``FINETUNE_DISTILLATION_ONLY`` warning says so).
Before anything is trained the teacher runs on a few samples
(:mod:`.fit`): a model that only runs at its own batch size is
tuned and evaluated in chunks of it, and labels or targets that do not fit
its first output are ``INVALID_DATASET``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
from torch import fx, nn

from prunekit.spec.finetune_configs import FinetuneConfig, FinetunePlan
from prunekit.v1 import report_pb2

from ..errors import FieldViolation, invalid_spec
from ..measure.accuracy import Accuracy, mse_of
from ..npy_headers import invalid_dataset
from ..progress import ProgressFn
from ..pruning import PruneContext, PruneResult, apply_tensors
from ..pruning.structured.export import export_pruned
from ..report.stats import accuracy_stats, quality_stats
from .checkpoint import DirectoryCheckpoints, TrainingState
from .datasets import Dataset
from .evaluate import accuracy, fidelity, predict
from .finetune import FinetuneEvent, FinetuneResult, finetune, resolve_device
from .fit import probe_batch, sample_batch, supervision_violations
from .losses import FeatureMatch
from .masks import SparsityMasks
from .records import finetune_run, loss_name, metric_name
from .replicas import RankWork, Replicas
from .students import ValueStudent, module_named

PROGRESS_INTERVAL_S = 0.5
STAGE = "finetune"
FINAL_PHASE = "finetune"
DISTILLATION_ONLY = (
    "FINETUNE_DISTILLATION_ONLY: the training data has no label or target arrays; the pruned model "
    "was fine-tuned by distillation from the original model alone"
)


def round_phase(index: int) -> str:
    """The phase name of the recovery after round ``index`` (1-based): ``round-01``..."""
    return f"round-{index:02d}"


class _ReportingCheckpoints:
    """A checkpoint sink that reports each checkpoint written (a ``{"checkpoint": ...}`` progress event)."""

    def __init__(self, inner: DirectoryCheckpoints, phase: str, report: Callable[[str, int], None]) -> None:
        self.inner, self.phase, self.report = inner, phase, report

    def due(self, step: int, now: float) -> bool:
        return self.inner.due(step, now)

    def save(self, step: int, state: TrainingState) -> None:
        self.inner.save(step, state)
        self.report(f"ckpt-{step:08d}", step)

    def restore(self) -> TrainingState | None:
        return self.inner.restore()


class _PhaseProgress:
    """One phase's progress: step events (throttled to :data:`PROGRESS_INTERVAL_S`) and checkpoints.

    Fractions move across ``span`` with the steps (or, for a time budget,
    with the seconds spent); a checkpoint reports the last step's fraction.
    """

    def __init__(
        self, progress: ProgressFn, phase: str, span: tuple[float, float], max_seconds: float
    ) -> None:
        self.progress, self.phase, self.span, self.max_seconds = progress, phase, span, max_seconds
        self.began = time.monotonic()
        self.last_time, self.last_step, self.last_fraction = 0.0, -1, span[0]

    def fraction(self, step: int, total: int) -> float:
        start, end = self.span
        if total:
            return start + (end - start) * min(1.0, step / total)
        spent = (time.monotonic() - self.began) / self.max_seconds if self.max_seconds else 0.0
        return start + (end - start) * min(1.0, spent)

    def step(self, event: FinetuneEvent, force: bool = False) -> None:
        """Report ``event`` unless one went out less than the interval ago (the last step always goes)."""
        now = time.monotonic()
        self.last_fraction = self.fraction(event.step, event.total_steps)
        if not force and event.step != event.total_steps and now - self.last_time < PROGRESS_INTERVAL_S:
            return
        self.last_time, self.last_step = now, event.step
        details = {
            "phase": self.phase,
            "step": event.step,
            "total_steps": event.total_steps,
            "epoch": event.epoch,
            "loss": event.loss,
            "eval_metric": event.eval_metric,
            "metric": metric_name(event.metric_name),
        }
        of = f"/{event.total_steps}" if event.total_steps else ""
        message = f"{self.phase}: step {event.step}{of}, loss {event.loss:.4g}"
        self.progress(STAGE, self.last_fraction, message, {"finetune": details})

    def checkpoint(self, name: str, step: int) -> None:
        """Report a checkpoint just written."""
        details = {"phase": self.phase, "name": name, "step": step}
        message = f"{self.phase}: checkpoint at step {step}"
        self.progress(STAGE, self.last_fraction, message, {"checkpoint": details})

    def finish(self, result: FinetuneResult) -> None:
        """Report the phase's last step when it has not gone out yet."""
        if self.last_step == result.steps:
            return
        loss = result.losses[-1] if result.losses else 0.0
        final = FinetuneEvent(
            result.steps,
            result.total_steps,
            result.epochs,
            loss,
            0.0,
            result.final_metric,
            result.metric_name,
        )
        self.step(final, force=True)


class Tuner:
    """Fine-tunes students on the job's data against one teacher; collects a ``FinetuneRun`` per phase.

    ``teacher`` is the original model as a GraphModule; it is used for
    distillation when ``plan.distill`` or when ``train`` has no supervision.
    ``model_batch`` is the batch dimension of the model's inputs; a model that
    runs at no other size is tuned and evaluated in chunks of it
    (``fixed_batch``). With ``replicas`` (rank 0 of a data-parallel group) each
    run is handed to the other ranks first (:class:`~.replicas.RankWork`).
    Raises ``INVALID_SPEC`` for a CUDA device the worker
    lacks, ``INVALID_DATASET`` for labels or targets that do not fit the
    model's first output.
    """

    def __init__(
        self,
        plan: FinetunePlan,
        train: Dataset,
        eval_set: Dataset | None,
        teacher: fx.GraphModule,
        checkpoint_dir: Path,
        progress: ProgressFn,
        model_batch: int = 1,
        replicas: Replicas | None = None,
    ) -> None:
        try:
            resolve_device(plan.config.device)
        except ValueError as exc:
            raise invalid_spec([FieldViolation("spec.finetune.device", str(exc))]) from None
        self.plan, self.train, self.eval_set = plan, train, eval_set
        self.teacher, self.replicas = teacher, replicas
        self.fixed_batch, output = probe_batch(teacher, train, model_batch)
        bad = supervision_violations("train", train, output)
        bad += supervision_violations("eval", eval_set, output)
        if bad:
            raise invalid_dataset(bad)
        self.supervised = train.label is not None or train.target is not None
        self.distills = plan.distill or not self.supervised
        self.checkpoint_dir, self.progress = checkpoint_dir, progress
        self.runs: list[report_pb2.FinetuneRun] = []
        self.warnings = [] if self.supervised else [DISTILLATION_ONLY]
        supervision = "label" if train.label is not None else "target" if train.target is not None else "none"
        self.loss = loss_name(supervision, self.distills, bool(plan.feature_layers))

    def features(self, student: nn.Module) -> FeatureMatch | None:
        """The plan's feature matching; ``INVALID_SPEC`` naming each layer that cannot be matched."""
        names = self.plan.feature_layers
        if not names:
            return None
        field = "spec.finetune.distillation.feature_layers"
        bad: list[FieldViolation] = []
        pairs: list[tuple[nn.Module, nn.Module]] = []
        for i, name in enumerate(names):
            s = module_named(student, name) if isinstance(student, fx.GraphModule) else None
            t = module_named(self.teacher, name)
            if s is None or t is None:
                bad.append(FieldViolation(f"{field}[{i}]", f"{name!r} names no layer of the model"))
            else:
                pairs.append((s, t))
        if bad:
            raise invalid_spec(bad)
        match = FeatureMatch(pairs, self.plan.feature_weight)
        size = self.fixed_batch or min(len(self.train), self.plan.config.batch_size)
        problems = match.mismatches(student, self.teacher, sample_batch(self.train, size))
        if problems:
            raise invalid_spec(
                [FieldViolation(f"{field}[{i}]", f"{names[i]!r}: {why}") for i, why in problems.items()]
            )
        return match

    def run(
        self,
        student: nn.Module,
        phase: str,
        config: FinetuneConfig,
        span: tuple[float, float],
        masks: SparsityMasks | None = None,
    ) -> FinetuneResult:
        """Fine-tune ``student`` in place for one phase; progress fractions move across ``span``."""
        features = self.features(student)
        reporter = _PhaseProgress(self.progress, phase, span, config.max_seconds)
        sink = _ReportingCheckpoints(
            DirectoryCheckpoints(
                self.checkpoint_dir / phase,
                self.plan.checkpoint_every_steps,
                self.plan.checkpoint_every_seconds,
            ),
            phase,
            reporter.checkpoint,
        )
        teacher = self.teacher if self.distills else None
        if self.replicas is not None:
            work = RankWork(
                student, teacher, self.train, self.eval_set, config, features, masks, self.fixed_batch
            )
            self.replicas.share(work)
        try:
            result = finetune(
                student,
                teacher,
                self.train,
                self.eval_set,
                config,
                reporter.step,
                sink,
                features=features,
                masks=masks,
                fixed_batch=self.fixed_batch,
                replicas=self.replicas,
            )
        finally:
            student.cpu()
            self.teacher.cpu()
        reporter.finish(result)
        self.runs.append(finetune_run(phase, result, self.loss, config.mixed_precision))
        return result

    def before(self, student: nn.Module) -> tuple[report_pb2.AccuracyStats | None, report_pb2.QualityStats]:
        """The student's accuracy (or MSE) and fidelity to the teacher on the eval split (else train)."""
        data = self.eval_set if self.eval_set is not None else self.train
        fixed = self.fixed_batch
        quality = quality_stats(fidelity(student, self.teacher, data, fixed_batch=fixed))
        measured: Accuracy | None = None
        if data.label is not None:
            measured = accuracy(student, data, fixed_batch=fixed)
        elif data.target is not None:
            measured = mse_of(predict(student, data, fixed_batch=fixed).numpy(), data.target)
        return (accuracy_stats(measured) if measured is not None else None), quality

    def report(
        self, before: report_pb2.AccuracyStats | None, quality_before: report_pb2.QualityStats
    ) -> report_pb2.FinetuneReport:
        """The ``FinetuneReport`` of every phase run so far (``attempts`` is the executor's)."""
        out = report_pb2.FinetuneReport(runs=self.runs, quality_before=quality_before)
        if before is not None:
            out.before.CopyFrom(before)
        return out


class RoundRecovery:
    """A ``PruneContext.recover`` hook: fine-tune the pruned GraphModule after each round but the last.

    ``fatal``: a failure (bad data, an interrupted run) ends the job, it is
    not a warning.
    """

    description = "fine-tuned on the job's data"
    fatal = True

    def __init__(self, tuner: Tuner, rounds: int, span: tuple[float, float]) -> None:
        self.tuner, self.rounds, self.span = tuner, rounds, span
        self.calls = 0

    def __call__(self, module: nn.Module) -> None:
        self.calls += 1
        start, end = self.span
        width = (end - start) / self.rounds
        span = (start + width * (self.calls - 1), start + width * self.calls)
        config = self.tuner.plan.round_config(self.rounds, len(self.tuner.train), self.calls)
        self.tuner.run(module, round_phase(self.calls), config, span)


@dataclass
class Tuned:
    """The fine-tuned pruned model, its prune result (values-only: every trained tensor) and the report."""

    model: onnx.ModelProto
    result: PruneResult
    report: report_pb2.FinetuneReport


def finetune_pruned(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    result: PruneResult,
    context: PruneContext,
    tuner: Tuner,
    *,
    rounds: int,
    span: tuple[float, float],
) -> Tuned:
    """Run the final phase on the pruned model and write the trained weights back into ONNX.

    Structured methods train ``result.module`` and export it again
    (:func:`~prunekit_server.pruning.structured.export.export_pruned`).
    Values-only methods train a :class:`.students.ValueStudent` with
    the pruned weights masked at zero, and write its tensors into the
    original's initializers (``result.tensors`` then holds every trained one).
    """
    values = None
    if result.module is not None:
        student: nn.Module = result.module
        masks = None
    else:
        values = ValueStudent(pruned, context.inputs, result.tensors)
        student, masks = values.module, values.masks
    before, quality = tuner.before(student)
    config = tuner.plan.final_config(rounds, len(tuner.train))
    tuner.run(student, FINAL_PHASE, config, span, masks)
    if values is None:
        assert isinstance(student, fx.GraphModule)
        model = export_pruned(student, original, context)
        return Tuned(model, result, tuner.report(before, quality))
    tensors = {**result.tensors, **values.tensors()}
    tuned = dataclasses.replace(result, tensors=tensors)
    return Tuned(apply_tensors(original, tensors), tuned, tuner.report(before, quality))
