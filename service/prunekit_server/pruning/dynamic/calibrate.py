"""Choosing the exit threshold: where each input leaves at a threshold, and the cheapest one meeting a rule.

Routing follows the graph's rule exactly: inputs are taken in consecutive batches of the model's batch
size, and a batch leaves at the first exit where its least confident item reaches the threshold. The
metric is top-1 accuracy on labels or top-1 agreement with the original; the cost is the expected share
of the original's MACs (heads included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["THRESHOLDS", "CalibrationRule", "Routing", "SweepPoint", "choose", "route", "sweep"]

THRESHOLDS: tuple[float, ...] = (
    0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0,
)  # fmt: skip
"""The thresholds swept when calibrating (and reported)."""


@dataclass(frozen=True)
class CalibrationRule:
    """What a threshold must keep: ``metric`` ``"accuracy"`` (at most ``max_drop`` below the original's)
    or ``"top1_agreement"`` (at least ``min_agreement``)."""

    metric: str
    max_drop: float = 0.01
    min_agreement: float = 0.99

    def meets(self, metric: float, original_metric: float) -> bool:
        """Whether ``metric`` meets the rule, the original scoring ``original_metric``."""
        if self.metric == "accuracy":
            return original_metric - metric <= self.max_drop + 1e-12
        return metric >= self.min_agreement - 1e-12

    def describe(self) -> str:
        """The rule in words."""
        if self.metric == "accuracy":
            return f"top-1 accuracy at most {self.max_drop * 100:g} points below the original's"
        return f"top-1 agreement with the original at least {self.min_agreement:g}"


@dataclass(frozen=True)
class Routing:
    """Per-input facts of a gated model on some inputs.

    ``confidence``: ``(exits, n)`` largest softmax probability of each head; ``predictions``:
    ``(exits + 1, n)`` argmax of each head, then the original's; ``costs``: ``exits + 1`` MACs shares of
    leaving at each exit (the last: the full network); ``reference``: labels or the original's argmax;
    ``batch``: the model's batch size.
    """

    confidence: np.ndarray
    predictions: np.ndarray
    costs: np.ndarray
    reference: np.ndarray
    batch: int = 1


@dataclass(frozen=True)
class SweepPoint:
    """One threshold: its metric, expected MACs share and the share of inputs leaving at each exit."""

    threshold: float
    metric: float
    macs_fraction: float
    shares: tuple[float, ...]


def route(routing: Routing, threshold: float) -> np.ndarray:
    """The exit each input leaves at (``exits`` for the full network)."""
    exits, n = routing.confidence.shape
    starts = np.arange(0, n, max(1, routing.batch))
    least = np.minimum.reduceat(routing.confidence, starts, axis=1) if n else routing.confidence
    per_item = np.repeat(least, np.diff(np.append(starts, n)), axis=1) if n else least
    leaves = np.full(n, exits, dtype=np.int64)
    for k in range(exits - 1, -1, -1):
        leaves = np.where(per_item[k] >= threshold, k, leaves)
    return leaves


def _point(routing: Routing, threshold: float) -> SweepPoint:
    leaves = route(routing, threshold)
    n = leaves.shape[0]
    chosen = routing.predictions[leaves, np.arange(n)]
    metric = float(np.mean(chosen == routing.reference)) if n else 0.0
    cost = float(np.mean(routing.costs[leaves])) if n else 1.0
    count = routing.confidence.shape[0] + 1
    shares = tuple(float(np.mean(leaves == k)) if n else 0.0 for k in range(count))
    return SweepPoint(threshold, metric, cost, shares)


def sweep(routing: Routing, thresholds: Sequence[float] = THRESHOLDS) -> list[SweepPoint]:
    """One :class:`SweepPoint` per threshold, in the given order."""
    return [_point(routing, t) for t in thresholds]


def choose(points: Sequence[SweepPoint], rule: CalibrationRule, original_metric: float) -> SweepPoint | None:
    """The cheapest point meeting ``rule`` (the higher threshold on a tie); None when none does."""
    good = [p for p in points if rule.meets(p.metric, original_metric)]
    if not good:
        return None
    return min(good, key=lambda p: (round(p.macs_fraction, 12), -p.threshold))
