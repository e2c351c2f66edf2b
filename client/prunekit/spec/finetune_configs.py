"""The fine-tuning technique's configs: :class:`FinetuneConfig` (a phase) and :class:`FinetunePlan` (a job).

Frozen dataclasses whose fields describe themselves; the config round-trips through JSON
(``{"technique": "finetune", <field>: <value>, ...}``) like every technique config. Their checks are the
rules of :mod:`.finetune`, the same the spec checks run. :func:`.translate.finetune_plan` reads a
``FinetuneSpec`` into a plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .finetune import config_problems
from .technique import config_from_dict, config_to_dict, describe_fields

__all__ = ["Device", "FinetuneConfig", "FinetunePlan", "Optimizer", "Schedule"]

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "linear", "constant"]
Device = Literal["auto", "cpu", "cuda"]


def _d(text: str) -> dict[str, str]:
    return {"description": text}


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune. Invalid values raise ``ValueError``; round-trips through JSON.

    The budget is the smallest of ``epochs`` and ``steps`` that are set, capped
    by ``max_seconds``; with only ``max_seconds`` set, training runs for that
    long and the learning-rate schedule follows the elapsed fraction of it.
    """

    technique: ClassVar[str] = "finetune"

    epochs: int = field(default=1, metadata=_d("Passes over the training data (0: no epoch limit)."))
    steps: int = field(default=0, metadata=_d("Optimizer steps (0: no step limit); the smaller budget wins."))
    max_seconds: float = field(
        default=0.0,
        metadata=_d("Training-time cap in seconds (0: none); alone, a time budget the schedule follows."),
    )
    batch_size: int = field(default=32, metadata=_d("Samples per step."))
    optimizer: Optimizer = field(default="adamw", metadata=_d("'sgd' (with momentum) or 'adamw'."))
    lr: float = field(default=1e-3, metadata=_d("Peak learning rate."))
    momentum: float = field(default=0.9, metadata=_d("SGD momentum."))
    weight_decay: float = field(default=0.0, metadata=_d("Weight decay (decoupled for AdamW)."))
    schedule: Schedule = field(
        default="cosine", metadata=_d("'cosine', 'linear' or 'constant' after warm-up.")
    )
    warmup_steps: int = field(default=0, metadata=_d("Steps of linear warm-up to the peak rate."))
    grad_clip: float = field(default=0.0, metadata=_d("Max global gradient norm (0: no clipping)."))
    seed: int = field(default=0, metadata=_d("Seed of the batch order and of every RNG."))
    eval_every: int = field(default=0, metadata=_d("Evaluate every N steps (0: at the end of each epoch)."))
    patience: int = field(default=0, metadata=_d("Stop after N evaluations without improvement (0: never)."))
    restore_best: bool = field(default=True, metadata=_d("End with the best-evaluated weights."))
    device: Device = field(default="auto", metadata=_d("'auto' (CUDA when available), 'cpu' or 'cuda'."))
    mixed_precision: bool = field(default=True, metadata=_d("float16 autocast on CUDA (ignored on CPU)."))
    temperature: float = field(default=4.0, metadata=_d("Distillation softmax temperature, > 0."))
    alpha: float = field(default=0.5, metadata=_d("Weight of distillation vs the hard loss, in [0, 1]."))

    def __post_init__(self) -> None:
        problems = config_problems(self)
        if problems:
            name, problem = problems[0]
            raise ValueError(f"{name} {problem}" if name else problem)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"technique": "finetune", <field>: <value>, ...}``."""
        return config_to_dict(self, "technique")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Inverse of :meth:`to_dict`; ``ValueError`` on unknown keys or invalid values."""
        registry = {cls.technique: cls}
        return config_from_dict(cls, FinetuneConfig, registry, "technique", "training technique", data)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> human description."""
        return describe_fields(cls)


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
