"""The fine-tuning config: budget, optimizer, schedule, losses, device.

A frozen dataclass whose fields describe themselves and which round-trips
through JSON (``{"technique": "finetune", <field>: <value>, ...}``) with the
helpers every technique config shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..technique_config import config_from_dict, config_to_dict, describe_fields

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
        ints = ("epochs", "steps", "batch_size", "warmup_steps", "seed", "eval_every", "patience")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.epochs == 0 and self.steps == 0 and not self.max_seconds > 0:
            raise ValueError("set epochs, steps or max_seconds (> 0)")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for name in ("max_seconds", "momentum", "weight_decay", "grad_clip"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError("lr must be a finite number >= 0")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant', got {self.schedule!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError("temperature must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")

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
