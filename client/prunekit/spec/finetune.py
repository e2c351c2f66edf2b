"""The rules of a spec's ``finetune``.

Needs ``prune`` and ``data.train``; a budget (``epochs``, ``steps`` or ``max_seconds`` > 0); every number
finite and >= 0; ``batch_size`` <= 4096; ``learning_rate`` <= 10; ``momentum`` < 1 and only for SGD;
``steps_per_round`` only with an ITERATIVE prune schedule; ``distillation``: ``temperature`` >= 0,
``alpha`` in [0, 1] when set, ``feature_weight`` >= 0, ``feature_layers`` at most 256 non-empty printable
names.
"""

from __future__ import annotations

import math

from prunekit.v1 import spec_pb2

from .violation import FieldViolation

__all__ = ["MAX_FEATURE_LAYERS", "MAX_FINETUNE_BATCH", "MAX_LEARNING_RATE", "finetune_violations"]

MAX_FINETUNE_BATCH = 4096
MAX_LEARNING_RATE = 10.0
MAX_FEATURE_LAYERS = 256
MAX_NAME_LENGTH = 256

_INTS = (
    "epochs",
    "steps",
    "batch_size",
    "warmup_steps",
    "seed",
    "eval_every",
    "patience",
    "checkpoint_every_steps",
    "steps_per_round",
)
_FLOATS = (
    "max_seconds",
    "learning_rate",
    "momentum",
    "weight_decay",
    "grad_clip",
    "checkpoint_every_seconds",
)


def _numbers(ft: spec_pb2.FinetuneSpec, path: str, found: list[FieldViolation]) -> None:
    for name in _INTS:
        if getattr(ft, name) < 0:
            found.append(FieldViolation(f"{path}.{name}", "must be >= 0"))
    for name in _FLOATS:
        value = getattr(ft, name)
        if not math.isfinite(value) or value < 0:
            found.append(FieldViolation(f"{path}.{name}", "must be a finite number >= 0"))
    if ft.batch_size > MAX_FINETUNE_BATCH:
        found.append(
            FieldViolation(f"{path}.batch_size", f"must be between 0 (default 32) and {MAX_FINETUNE_BATCH}")
        )
    if math.isfinite(ft.learning_rate) and ft.learning_rate > MAX_LEARNING_RATE:
        found.append(FieldViolation(f"{path}.learning_rate", f"must be at most {MAX_LEARNING_RATE:g}"))
    if ft.momentum:
        if ft.optimizer != spec_pb2.OPTIMIZER_SGD:
            found.append(FieldViolation(f"{path}.momentum", "only with optimizer SGD"))
        elif math.isfinite(ft.momentum) and ft.momentum >= 1.0:
            found.append(FieldViolation(f"{path}.momentum", "must be 0 (default 0.9) or 0 < value < 1"))


def _distillation(d: spec_pb2.DistillationSpec, path: str, found: list[FieldViolation]) -> None:
    if not math.isfinite(d.temperature) or d.temperature < 0:
        found.append(FieldViolation(f"{path}.temperature", "must be 0 (default 4) or a finite number > 0"))
    if d.HasField("alpha") and not (math.isfinite(d.alpha) and 0.0 <= d.alpha <= 1.0):
        found.append(FieldViolation(f"{path}.alpha", "must be between 0 and 1 (unset: 0.5)"))
    if not math.isfinite(d.feature_weight) or d.feature_weight < 0:
        found.append(FieldViolation(f"{path}.feature_weight", "must be 0 (default 1) or a finite number > 0"))
    layers = list(d.feature_layers)
    if len(layers) > MAX_FEATURE_LAYERS:
        found.append(FieldViolation(f"{path}.feature_layers", f"at most {MAX_FEATURE_LAYERS} layers"))
    for i, name in enumerate(layers):
        if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            found.append(
                FieldViolation(
                    f"{path}.feature_layers[{i}]",
                    f"an ONNX node name of 1 to {MAX_NAME_LENGTH} printable characters",
                )
            )
        elif name in layers[:i]:
            found.append(FieldViolation(f"{path}.feature_layers[{i}]", f"{name!r} is listed twice"))
    if d.feature_weight and not layers:
        found.append(FieldViolation(f"{path}.feature_weight", "only with feature_layers"))


def finetune_violations(spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation]) -> None:
    """Rules of ``spec.finetune`` (see the module docstring); ``path`` is the finetune field's path."""
    ft = spec.finetune
    if not spec.HasField("prune"):
        found.append(FieldViolation(path, "needs prune: fine-tuning recovers a pruned model"))
    if not spec.data.train:
        found.append(FieldViolation(path, "needs data.train: the shards to fine-tune on"))
    if not (ft.epochs > 0 or ft.steps > 0 or (math.isfinite(ft.max_seconds) and ft.max_seconds > 0)):
        found.append(FieldViolation(path, "set a budget: epochs, steps or max_seconds (> 0)"))
    _numbers(ft, path, found)
    iterative = spec.HasField("prune") and spec.prune.schedule == spec_pb2.PRUNE_SCHEDULE_ITERATIVE
    if ft.steps_per_round and not iterative:
        found.append(FieldViolation(f"{path}.steps_per_round", "only with prune.schedule ITERATIVE"))
    if ft.HasField("distillation"):
        _distillation(ft.distillation, f"{path}.distillation", found)
