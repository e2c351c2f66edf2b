"""The rules of a spec's ``finetune``.

Needs ``prune`` and ``data.train``; a budget (``epochs``, ``steps`` or ``max_seconds`` > 0) within the
server's caps (``max_finetune_epochs``, ``max_finetune_steps``, which ``steps_per_round`` obeys too, and
``max_finetune_seconds``); every number finite and >= 0; ``batch_size`` <= 4096; ``learning_rate`` <= 10;
``momentum`` < 1 and only for SGD; ``steps_per_round`` only with an ITERATIVE prune schedule;
``distillation``: ``temperature`` >= 0, ``alpha`` in [0, 1] when set, ``feature_weight`` >= 0,
``feature_layers`` at most 256 non-empty printable names; ``workers`` >= 0, at most ``batch_size`` and
the server's ``max_finetune_workers`` (1 where its executor is not ``ray``).
"""

from __future__ import annotations

import math
from typing import Any

from prunekit.v1 import spec_pb2

from .limits import ANY_SERVER, SpecLimits
from .violation import FieldViolation

__all__ = [
    "BUDGET",
    "MAX_FEATURE_LAYERS",
    "MAX_FINETUNE_BATCH",
    "MAX_LEARNING_RATE",
    "config_problems",
    "finetune_violations",
]

MAX_FINETUNE_BATCH = 4096
#: ``batch_size`` 0 means this.
DEFAULT_BATCH_SIZE = 32
MAX_LEARNING_RATE = 10.0
MAX_FEATURE_LAYERS = 256
MAX_NAME_LENGTH = 256

BUDGET = "set a budget: epochs, steps or max_seconds (> 0)"

_INTS = ("epochs", "steps", "batch_size", "warmup_steps", "seed", "eval_every", "patience")
_SPEC_INTS = (*_INTS, "checkpoint_every_steps", "steps_per_round")
_FLOATS = ("max_seconds", "momentum", "weight_decay", "grad_clip")
_SPEC_FLOATS = (*_FLOATS, "learning_rate", "checkpoint_every_seconds")
_CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("cosine", "linear", "constant"),
    "device": ("auto", "cpu", "cuda"),
}


def _count_problem(value: object) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else "must be >= 0"


def _amount_problem(value: object) -> str | None:
    good = (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )
    return None if good else "must be a finite number >= 0"


def _has_budget(epochs: int, steps: int, max_seconds: float) -> bool:
    return epochs > 0 or steps > 0 or (math.isfinite(max_seconds) and max_seconds > 0)


def _learning_rate_cap(value: float) -> str | None:
    too_high = math.isfinite(value) and value > MAX_LEARNING_RATE
    return f"must be at most {MAX_LEARNING_RATE:g}" if too_high else None


def _temperature_problem(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be a finite number > 0"


def _alpha_problem(value: float) -> str | None:
    return None if math.isfinite(value) and 0.0 <= value <= 1.0 else "must be between 0 and 1"


def config_problems(config: Any) -> list[tuple[str, str]]:
    """``(field, problem)`` for each rule a :class:`~.finetune_configs.FinetuneConfig`'s values break.

    The values are the spec's with every default applied, so no 0 stands for a default here.
    """
    found = [(n, p) for n in _INTS if (p := _count_problem(getattr(config, n)))]
    found += [(n, p) for n in _FLOATS if (p := _amount_problem(getattr(config, n)))]
    if not found and not _has_budget(config.epochs, config.steps, config.max_seconds):
        found.append(("", BUDGET))
    if not found and not 1 <= config.batch_size <= MAX_FINETUNE_BATCH:
        found.append(("batch_size", f"must be between 1 and {MAX_FINETUNE_BATCH}"))
    for name, problem in (
        ("lr", _amount_problem(config.lr) or _learning_rate_cap(config.lr)),
        ("temperature", _temperature_problem(config.temperature)),
        ("alpha", _alpha_problem(config.alpha)),
    ):
        if problem:
            found.append((name, problem))
    for name, choices in _CHOICES.items():
        if getattr(config, name) not in choices:
            found.append((name, f"must be one of {', '.join(choices)}, got {getattr(config, name)!r}"))
    return found


def _numbers(ft: spec_pb2.FinetuneSpec, path: str, found: list[FieldViolation]) -> None:
    for name in _SPEC_INTS:
        if problem := _count_problem(getattr(ft, name)):
            found.append(FieldViolation(f"{path}.{name}", problem))
    for name in _SPEC_FLOATS:
        if problem := _amount_problem(getattr(ft, name)):
            found.append(FieldViolation(f"{path}.{name}", problem))
    if ft.batch_size > MAX_FINETUNE_BATCH:
        found.append(
            FieldViolation(f"{path}.batch_size", f"must be between 0 (default 32) and {MAX_FINETUNE_BATCH}")
        )
    if problem := _learning_rate_cap(ft.learning_rate):
        found.append(FieldViolation(f"{path}.learning_rate", problem))
    if ft.momentum:
        if ft.optimizer != spec_pb2.OPTIMIZER_SGD:
            found.append(FieldViolation(f"{path}.momentum", "only with optimizer SGD"))
        elif math.isfinite(ft.momentum) and ft.momentum >= 1.0:
            found.append(FieldViolation(f"{path}.momentum", "must be 0 (default 0.9) or 0 < value < 1"))


def _distillation(d: spec_pb2.DistillationSpec, path: str, found: list[FieldViolation]) -> None:
    if d.temperature != 0.0 and _temperature_problem(d.temperature):
        found.append(FieldViolation(f"{path}.temperature", "must be 0 (default 4) or a finite number > 0"))
    if d.HasField("alpha") and _alpha_problem(d.alpha):
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


def _budget_caps(
    ft: spec_pb2.FinetuneSpec, path: str, found: list[FieldViolation], limits: SpecLimits
) -> None:
    caps = (
        ("epochs", ft.epochs, limits.max_finetune_epochs, "max_finetune_epochs"),
        ("steps", ft.steps, limits.max_finetune_steps, "max_finetune_steps"),
        ("steps_per_round", ft.steps_per_round, limits.max_finetune_steps, "max_finetune_steps"),
        ("max_seconds", ft.max_seconds, limits.max_finetune_seconds, "max_finetune_seconds"),
    )
    for name, value, cap, setting in caps:
        if cap > 0 and math.isfinite(value) and value > cap:
            found.append(FieldViolation(f"{path}.{name}", f"at most {cap:g} on this server ({setting})"))
    workers, batch = ft.workers, ft.batch_size or DEFAULT_BATCH_SIZE
    if workers < 0:
        found.append(FieldViolation(f"{path}.workers", "must be 0 or more (0 and 1: one process)"))
    elif workers > batch:
        found.append(
            FieldViolation(f"{path}.workers", f"at most batch_size ({batch}): each rank needs samples")
        )
    elif limits.max_finetune_workers == 1 and workers > 1:
        found.append(
            FieldViolation(f"{path}.workers", "more than 1 needs a server with PRUNEKIT_EXECUTOR=ray")
        )
    elif limits.max_finetune_workers > 0 and workers > limits.max_finetune_workers:
        cap = limits.max_finetune_workers
        found.append(
            FieldViolation(f"{path}.workers", f"at most {cap} on this server (max_finetune_workers)")
        )


def finetune_violations(
    spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation], limits: SpecLimits = ANY_SERVER
) -> None:
    """Rules of ``spec.finetune`` (see the module docstring); ``path`` is the finetune field's path."""
    ft = spec.finetune
    if not (spec.HasField("prune") or spec.HasField("target")):
        found.append(FieldViolation(path, "needs prune or target: fine-tuning recovers a pruned model"))
    if not spec.data.train:
        found.append(FieldViolation(path, "needs data.train: the shards to fine-tune on"))
    if not _has_budget(ft.epochs, ft.steps, ft.max_seconds):
        found.append(FieldViolation(path, BUDGET))
    _numbers(ft, path, found)
    _budget_caps(ft, path, found, limits)
    iterative = spec.HasField("prune") and spec.prune.schedule == spec_pb2.PRUNE_SCHEDULE_ITERATIVE
    if ft.steps_per_round and not iterative:
        found.append(FieldViolation(f"{path}.steps_per_round", "only with prune.schedule ITERATIVE"))
    if ft.HasField("distillation"):
        _distillation(ft.distillation, f"{path}.distillation", found)
