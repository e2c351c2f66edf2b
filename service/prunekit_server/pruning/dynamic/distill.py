"""Distilling a learned token scorer and the layers after the token-skipping point from the original.

The student is the masked tail (:class:`~.tail.TailStudent`) fed the point's hidden states of the train
inputs and a mask keeping each input's ``k`` best scored tokens (the first token always), ``k`` drawn
each step from the kept counts to calibrate over; the loss is KL at :data:`TEMPERATURE` to the
original's outputs on the same inputs alone (labels would pull the layers away from the original,
whose agreement the calibration rule may be).

The scores are the attention the first token paid each token in the layer before, or (a
:class:`Scorer`) a learned linear function of each token's hidden state plus a learned multiple of the
log of that attention. Top-k is relaxed for the scorer's gradients: the forward pass uses the hard 0/1
mask the graph computes, the backward pass the gradient of ``sigmoid((score - t) / tau)``, ``t`` halfway
between the ``k``-th and ``k+1``-th score, ``tau`` annealed from the scores' spread to 5 % of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from .heads import TEMPERATURE
from .tail import TailStudent

__all__ = ["BATCH", "LEARNING_RATE", "Scorer", "ScorerWeights", "TokenTraining", "distill_tail", "keep_mask"]

BATCH = 64
LEARNING_RATE = 3e-4
SCORER_LEARNING_RATE = 1e-2
ATTENTION_FLOOR = 1e-6
"""Added to the attention before its log, in training and in the graph alike."""
_MIN_TAU = 0.05


@dataclass(frozen=True)
class ScorerWeights:
    """A trained scorer, folded: ``score = hidden @ weight + bias + attention_weight * log(attention +
    floor)``."""

    weight: np.ndarray
    bias: float
    attention_weight: float


class Scorer(torch.nn.Module):
    """The learned token scorer on standardized hidden states (see the module docstring)."""

    def __init__(self, points: torch.Tensor, seed: int) -> None:
        super().__init__()
        width = points.shape[-1]
        flat = points.reshape(-1, width)
        self.mean = flat.mean(0)
        self.std = flat.std(0, unbiased=False).clamp_min(1e-6)
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(width, generator=generator) * 0.01)
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.attention_weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, points: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        standard = (points - self.mean) / self.std
        logs = torch.log(attention + ATTENTION_FLOOR)
        scores: torch.Tensor = standard @ self.weight + self.bias + self.attention_weight * logs
        return scores

    def folded(self) -> ScorerWeights:
        """The weights with the standardization folded in."""
        with torch.no_grad():
            weight = self.weight / self.std
            bias = self.bias - (self.mean * weight).sum()
        return ScorerWeights(
            weight.numpy().astype(np.float32), float(bias), float(self.attention_weight.detach())
        )


@dataclass(frozen=True)
class TokenTraining:
    """The train inputs as the tail sees them: hidden states ``(n, T, D)`` at the point, the attention
    each token got ``(n, T)`` and the original's logits ``(n, classes)``."""

    points: np.ndarray
    scores: np.ndarray
    teacher: np.ndarray


def keep_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """``(n, T)`` 0/1: each row's ``keep`` highest scores, the first token always among them."""
    boosted = scores.clone()
    boosted[:, 0] = torch.inf
    index = boosted.topk(min(keep, scores.shape[1]), dim=1).indices
    return torch.zeros_like(scores).scatter_(1, index, 1.0)


def _as_logits(out: torch.Tensor, final_op: str) -> torch.Tensor:
    """The tail's output as logits (a ``Softmax`` output as log-probabilities)."""
    if final_op == "Softmax":
        return torch.log(out.float().clamp_min(1e-12))
    return out.float()


def _relaxed_mask(scores: torch.Tensor, keep: int, progress: float) -> torch.Tensor:
    """The hard top-``keep`` mask forward, a sigmoid's gradient backward (see the module docstring)."""
    hard = keep_mask(scores.detach(), keep)
    rest = scores[:, 1:].detach().sort(dim=1, descending=True).values
    if keep < 2 or keep >= scores.shape[1]:
        return hard
    threshold = (rest[:, keep - 2] + rest[:, keep - 1]) / 2
    tau = max(_MIN_TAU, 1.0 - progress) * scores.detach().std().clamp_min(1e-3)
    soft = torch.sigmoid((scores - threshold[:, None]) / tau)
    return hard + soft - soft.detach()


def distill_tail(
    student: TailStudent,
    data: TokenTraining,
    keeps: Sequence[int],
    steps: int,
    seed: int,
    final_op: str = "",
    scorer: Scorer | None = None,
) -> list[float]:
    """Train ``student`` (and ``scorer``) ``steps`` Adam steps (see the module docstring); the losses."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.from_numpy(data.points.astype(np.float32))
    attention = torch.from_numpy(data.scores.astype(np.float32))
    teacher = functional.softmax(torch.from_numpy(data.teacher.astype(np.float32)) / TEMPERATURE, dim=1)
    groups = [{"params": student.parameters(), "lr": LEARNING_RATE}]
    if scorer is not None:
        groups.append({"params": list(scorer.parameters()), "lr": SCORER_LEARNING_RATE})
    if not keeps or not any(group["params"] for group in groups):
        return []
    optimizer = torch.optim.Adam(groups)
    n = points.shape[0]
    losses = []
    for step in range(steps):
        index = torch.randint(0, n, (min(BATCH, n),), generator=generator)
        keep = int(keeps[int(torch.randint(0, len(keeps), (1,), generator=generator))])
        if scorer is None:
            mask = keep_mask(attention[index], keep)
        else:
            mask = _relaxed_mask(scorer(points[index], attention[index]), keep, step / max(1, steps))
        logits = _as_logits(student(points[index], mask), final_op)
        log_probs = functional.log_softmax(logits / TEMPERATURE, dim=1)
        loss = functional.kl_div(log_probs, teacher[index], reduction="batchmean") * TEMPERATURE**2
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
