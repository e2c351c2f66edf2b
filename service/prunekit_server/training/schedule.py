"""Where and how fast to train: the device a config asks for, the learning-rate multiplier per step."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from prunekit.spec.finetune_configs import Device, FinetuneConfig

__all__ = ["lr_factor", "resolve_device"]


def resolve_device(device: Device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA raises ``ValueError``."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def lr_factor(
    config: FinetuneConfig, total_steps: int, elapsed: Callable[[], float] | None = None
) -> Callable[[int], float]:
    """The multiplier of ``lr`` at step index ``i`` (0-based): linear warm-up, then the schedule.

    With ``total_steps`` 0 (a time budget) the schedule's progress is
    ``elapsed()``, the fraction of ``max_seconds`` spent (0 without it).
    """
    warmup = config.warmup_steps

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        if total_steps:
            progress = min(1.0, (i - warmup) / max(1, total_steps - warmup))
        else:
            progress = min(1.0, max(0.0, elapsed() if elapsed is not None else 0.0))
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.schedule == "linear":
            return 1.0 - progress
        return 1.0

    return factor
