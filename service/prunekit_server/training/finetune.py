"""The fine-tuning loop: hard losses, distillation from a teacher, budgets, checkpoints.

:func:`finetune` trains ``student`` in place on a :class:`Dataset` and
returns a :class:`FinetuneResult`. The loss follows the data: cross-entropy
on ``label``, MSE on ``target``; with a ``teacher`` it adds distillation (KL
divergence of temperature-softened outputs, scaled by ``temperature**2``),
weighted ``alpha * distill + (1 - alpha) * hard``; unlabelled data with a
teacher trains on distillation alone. The eval metric (higher is better) is
top-1 accuracy with labels, ``-MSE`` with targets, top-1 agreement with the
teacher otherwise.

Budget: ``steps`` and/or ``epochs`` (the smaller wins), capped by
``max_seconds`` of training time (summed over resumed runs), and early
stopping after ``patience`` evaluations without improvement. With only
``max_seconds`` the run is time-boxed: ``total_steps`` is 0 (unknown) and the
schedule follows the elapsed fraction of the time. A run stopped by
``max_seconds`` is evaluated once more at its last step.

Extras: ``features`` (:class:`~.losses.FeatureMatch`) adds feature matching
against the teacher to the loss; ``masks`` (:class:`~.masks.SparsityMasks`)
are re-applied after every optimizer step, so pruned weights stay zero. The
student's BatchNorms run in train mode while tuning; the student ends in
eval mode, with its best-evaluated weights when ``restore_best``.

A model that only runs at its own batch size is called in chunks of
``fixed_batch`` samples (:func:`~.evaluate.run_model`): a step's loss covers
every sample of its batch, BatchNorms see the chunks, and feature matching
sees each step's last chunk.

Determinism: the batch order of an epoch depends on ``(seed, epoch)`` only and a checkpoint holds
every RNG state and why the run stopped, so a run resumed from a checkpoint ends in the same weights
as an uninterrupted one (on CPU, with a step budget; a time budget stops wherever the clock says).

Data parallel: with ``replicas`` every rank runs :func:`finetune` with the same arguments on its shard
of each global batch (:mod:`.replicas`), BatchNorm over the whole batch (:mod:`.sync_bn`)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from prunekit.spec.finetune_configs import FinetuneConfig

from ..measure.accuracy import accuracy_of
from .checkpoint import CheckpointSink, TrainingState, rng_state, set_rng_state
from .datasets import Batch, Dataset
from .evaluate import batch_tensors, predict, run_model
from .losses import FeatureMatch, distillation_loss
from .masks import SparsityMasks
from .records import FinetuneEvent, FinetuneResult
from .replicas import Replicas, average_gradients, shard
from .schedule import lr_factor, resolve_device
from .sync_bn import synced_batchnorm

__all__ = [
    "FinetuneConfig",
    "FinetuneEvent",
    "FinetuneResult",
    "distillation_loss",
    "finetune",
    "lr_factor",
    "resolve_device",
]


class _Trainer:
    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        train: Dataset,
        eval_set: Dataset | None,
        config: FinetuneConfig,
        features: FeatureMatch | None = None,
        masks: SparsityMasks | None = None,
        fixed_batch: int | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        if features is not None and teacher is None:
            raise ValueError("feature matching needs a teacher")
        if train.label is None and train.target is None and teacher is None:
            raise ValueError("unlabelled data needs a teacher (distillation)")
        if len(train) == 0:
            raise ValueError("the training set is empty")
        self.replicas = replicas if replicas is not None and replicas.world > 1 else None
        if self.replicas is not None and min(config.batch_size, len(train)) < self.replicas.world:
            raise ValueError(
                f"a batch of {config.batch_size} samples cannot be split over {self.replicas.world} ranks"
            )
        self.c = config
        self.fixed_batch = fixed_batch
        self.device = resolve_device(config.device)
        self.amp = self.device.type == "cuda" and config.mixed_precision
        self.student = student.to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.train, self.eval_set = train, eval_set
        self.per_epoch = train.batches_per_epoch(config.batch_size, drop_last=True)
        budgets = [b for b in (config.steps, config.epochs * self.per_epoch) if b > 0]
        self.total = min(budgets) if budgets else 0
        self.features, self.masks = features, masks
        params = [p for p in student.parameters() if p.requires_grad]
        self.opt: torch.optim.Optimizer
        if config.optimizer == "sgd":
            wd, mom = config.weight_decay, config.momentum
            self.opt = torch.optim.SGD(params, lr=config.lr, momentum=mom, weight_decay=wd)
        else:
            self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.elapsed = 0.0
        spent = (lambda: self.elapsed / config.max_seconds) if config.max_seconds else None
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(config, self.total, spent))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if eval_set is None:
            self.metric_name = "none"
        elif eval_set.label is not None:
            self.metric_name = "accuracy"
        elif eval_set.target is not None:
            self.metric_name = "neg_mse"
        else:
            self.metric_name = "teacher_agreement"
        self.teacher_eval = (
            predict(self.teacher, eval_set, fixed_batch=fixed_batch)
            if self.teacher is not None and eval_set is not None and self.metric_name == "teacher_agreement"
            else None
        )
        self.step = self.epoch = self.batch_in_epoch = self.bad_evals = 0
        self.stop_reason = "budget"
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_metric: float | None = None
        self.best_weights: dict[str, torch.Tensor] = {}
        self.losses: list[float] = []
        self.last_eval_step = -1

    def finished(self) -> bool:
        """The step budget is spent (never, for a time budget)."""
        return bool(self.total) and self.step >= self.total

    def loss(self, batch: Batch) -> torch.Tensor:
        x = batch_tensors(batch, self.device)
        n = len(batch)
        t_out = None
        feature_loss = None
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            with self.features.capture() if self.features is not None else nullcontext():
                out = run_model(self.student, x, self.fixed_batch).float().reshape(n, -1)
                if self.teacher is not None:
                    with torch.no_grad():
                        t_out = run_model(self.teacher, x, self.fixed_batch).float().reshape(n, -1)
            if self.features is not None:
                feature_loss = self.features.loss()
        soft = None if t_out is None else distillation_loss(out, t_out, self.c.temperature)
        hard = None
        if batch.label is not None:
            hard = functional.cross_entropy(out, torch.from_numpy(batch.label).to(self.device))
        elif batch.target is not None:
            hard = functional.mse_loss(
                out, torch.from_numpy(batch.target).to(self.device).float().reshape(n, -1)
            )
        result: torch.Tensor | None = soft if hard is None else hard
        if soft is not None and hard is not None:
            result = self.c.alpha * soft + (1.0 - self.c.alpha) * hard
        assert result is not None  # guaranteed by the constructor's check
        return result if feature_loss is None else result + feature_loss

    def train_step(self, batch: Batch) -> float:
        self.opt.zero_grad(set_to_none=True)
        if self.replicas is None:
            loss = self.loss(batch)
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        else:
            part = shard(batch, self.replicas.rank, self.replicas.world)
            loss = self.loss(part) * (len(part) * self.replicas.world / len(batch))
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            loss = average_gradients(self.replicas, self.student, loss.detach())
        if self.c.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.student.parameters(), self.c.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.masks is not None:
            self.masks.apply(self.student)
        if self.replicas is not None:
            self.replicas.average([b for b in self.student.buffers() if b.is_floating_point()])
        self.sched.step()
        return float(loss.detach())

    def any(self, flag: bool) -> bool:
        """``flag``, or whether it holds on any rank (all ranks call this at the same steps)."""
        return flag if self.replicas is None else self.replicas.any(flag)

    def evaluate(self) -> float:
        assert self.eval_set is not None
        outputs = predict(self.student, self.eval_set, fixed_batch=self.fixed_batch)
        if self.metric_name == "accuracy":
            assert self.eval_set.label is not None
            top1 = accuracy_of(outputs.numpy(), self.eval_set.label).top1
            return top1 if top1 is not None else 0.0
        if self.metric_name == "neg_mse":
            assert self.eval_set.target is not None
            target = torch.from_numpy(self.eval_set.target).float().reshape(outputs.shape)
            return -float(functional.mse_loss(outputs, target))
        assert self.teacher_eval is not None
        return float((outputs.argmax(1) == self.teacher_eval.argmax(1)).float().mean())

    def state(self) -> TrainingState:
        trainer = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "bad_evals": self.bad_evals,
            "best": self.best,
            "best_step": self.best_step,
            "last_metric": self.last_metric,
            "losses": list(self.losses),
            "elapsed": self.elapsed,
            "last_eval_step": self.last_eval_step,
            "stop_reason": self.stop_reason,
            "rng": rng_state(),
            "config": self.c.to_dict(),
        }
        return {
            "model": self.student.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": dict(self.best_weights),
            "trainer": trainer,
        }

    def fits(self, state: TrainingState) -> bool:
        """Whether ``state`` was written by this config for a model of these parameter shapes."""
        if state.get("trainer", {}).get("config") != self.c.to_dict():
            return False
        ours = {k: tuple(v.shape) for k, v in self.student.state_dict().items()}
        theirs = {k: tuple(getattr(v, "shape", ())) for k, v in state.get("model", {}).items()}
        return ours == theirs

    def load(self, state: TrainingState) -> None:
        self.student.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_weights = dict(state.get("best", {}))
        t = state["trainer"]
        self.step, self.epoch, self.batch_in_epoch = int(t["step"]), int(t["epoch"]), int(t["batch_in_epoch"])
        self.bad_evals, self.best, self.best_step = int(t["bad_evals"]), t["best"], t["best_step"]
        self.last_metric, self.losses, self.elapsed = t["last_metric"], list(t["losses"]), float(t["elapsed"])
        self.last_eval_step = int(t.get("last_eval_step", -1))
        self.stop_reason = str(t.get("stop_reason", "budget"))
        set_rng_state(t["rng"])

    def after_step(self, end_of_epoch: bool) -> bool:
        """Evaluate when due; True when early stopping says stop."""
        every = self.c.eval_every
        due = (every and self.step % every == 0) or (not every and end_of_epoch) or self.step == self.total
        if self.eval_set is None or not due:
            return False
        return self.record_eval()

    def record_eval(self) -> bool:
        """Evaluate now, keep the best weights; True when early stopping says stop."""
        self.last_metric = self.evaluate()
        self.last_eval_step = self.step
        if self.best is None or self.last_metric > self.best:
            self.best, self.best_step, self.bad_evals = self.last_metric, self.step, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
            return False
        self.bad_evals += 1
        return bool(self.c.patience) and self.bad_evals >= self.c.patience


def _train_on(
    t: _Trainer,
    batch: Batch,
    began: float,
    stop_reason: str,
    progress: Callable[[FinetuneEvent], None] | None,
    checkpoint: CheckpointSink | None,
) -> str:
    """One step on ``batch``: train, evaluate when due, report, checkpoint when due; the stop reason after."""
    config = t.c
    t.losses.append(t.train_step(batch))
    t.step += 1
    t.batch_in_epoch += 1
    end_of_epoch = t.batch_in_epoch >= t.per_epoch
    if t.after_step(end_of_epoch):
        stop_reason = "early_stopping"
    if end_of_epoch:
        t.epoch, t.batch_in_epoch = t.epoch + 1, 0
    now = time.monotonic()
    t.elapsed = now - began
    out_of_time = bool(config.max_seconds) and t.any(t.elapsed >= config.max_seconds and not t.finished())
    if out_of_time and stop_reason == "budget":
        stop_reason = "max_seconds"
        if t.eval_set is not None and t.last_eval_step != t.step:
            t.record_eval()
    if progress is not None:
        lr = float(t.opt.param_groups[0]["lr"])
        progress(FinetuneEvent(t.step, t.total, t.epoch, t.losses[-1], lr, t.last_metric, t.metric_name))
    if checkpoint is not None and not t.finished() and checkpoint.due(t.step, now):
        checkpoint.save(t.step, t.state())
    return stop_reason


def _result(t: _Trainer, stop_reason: str, resumed_from: int | None) -> FinetuneResult:
    return FinetuneResult(
        steps=t.step,
        total_steps=t.total,
        epochs=t.epoch,
        stop_reason=stop_reason,
        metric_name=t.metric_name,
        final_metric=t.last_metric,
        best_metric=t.best,
        best_step=t.best_step,
        losses=t.losses,
        device=t.device.type,
        seconds=t.elapsed,
        resumed_from_step=resumed_from,
    )


def finetune(
    student: nn.Module,
    teacher: nn.Module | None,
    train: Dataset,
    eval: Dataset | None,
    config: FinetuneConfig,
    progress: Callable[[FinetuneEvent], None] | None = None,
    checkpoint: CheckpointSink | None = None,
    *,
    features: FeatureMatch | None = None,
    masks: SparsityMasks | None = None,
    fixed_batch: int | None = None,
    replicas: Replicas | None = None,
) -> FinetuneResult:
    """Fine-tune ``student`` in place (see the module docstring for losses, budget and metric).

    With a ``checkpoint`` sink the run first resumes from its newest valid
    checkpoint, saves whenever the sink says it is due, and once at the end (a
    run resumed from the checkpoint of a run that had stopped, by early
    stopping or ``max_seconds``, stays stopped). Batches smaller than
    ``batch_size`` at an epoch's end are dropped (unless the dataset is
    smaller than one batch); ``fixed_batch``: the models run in chunks of
    exactly that many samples; ``replicas``: this rank of a data-parallel
    run (see the module docstring). Exceptions from ``progress``
    propagate (the run stops there; resume it from the checkpoint). A
    checkpoint written under another config, or for parameters of other
    shapes, is ignored: the run starts afresh (``resumed_from_step`` None).

    Side effects: the global torch/numpy/random RNGs are seeded from
    ``config.seed``; ``student`` and ``teacher`` are moved to the device;
    the teacher is put in eval mode and never updated.
    """
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    t = _Trainer(student, teacher, train, eval, config, features, masks, fixed_batch, replicas)
    if t.replicas is not None and t.replicas.rank != 0:
        checkpoint = None
    restored = checkpoint.restore() if checkpoint is not None else None
    if t.replicas is not None:
        restored = t.replicas.share(restored)
    resumed_from = None
    if restored is not None and t.fits(restored):
        t.load(restored)
        resumed_from = t.step
    began = time.monotonic() - t.elapsed
    stop_reason = t.stop_reason
    student.train()
    try:
        with synced_batchnorm(student, t.replicas if fixed_batch is None else None):
            while not t.finished() and stop_reason == "budget":
                batches = train.batches(
                    config.batch_size,
                    shuffle=True,
                    seed=config.seed,
                    epoch=t.epoch,
                    drop_last=True,
                    start=t.batch_in_epoch,
                )
                for batch in batches:
                    stop_reason = _train_on(t, batch, began, stop_reason, progress, checkpoint)
                    if stop_reason != "budget" or t.finished():
                        break
        if checkpoint is not None:
            t.stop_reason = stop_reason
            checkpoint.save(t.step, t.state())
    finally:
        student.eval()
    if config.restore_best and t.best_weights:
        student.load_state_dict(t.best_weights)
    return _result(t, stop_reason, resumed_from)
