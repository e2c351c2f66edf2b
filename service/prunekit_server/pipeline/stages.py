"""The stages of an optimization job and their share of its progress: the one table of progress fractions.

Each stage has a weight; its span of the job's progress (0..1) is its place
among the weights. Fractions are computed exactly (:class:`fractions.Fraction`)
and rounded once, so a stage's start equals the previous stage's end.
Fine-tuning reports as stage ``"finetune"`` inside the prune stage's span
(recovery rounds across it, the final phase in its last ``1/rounds``).
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ..progress import ProgressFn

STAGES: tuple[tuple[str, int], ...] = (
    ("ingest", 1),
    ("analyze", 1),
    ("prune", 1),
    ("quantize", 1),
    ("evaluate", 1),
    ("benchmark", 4),
    ("report", 1),
)
"""(stage, weight) in running order: ingest 0-0.1, analyze 0.1-0.2, prune and fine-tune 0.2-0.3,
quantize 0.3-0.4, evaluate 0.4-0.5, benchmark 0.5-0.9, report 0.9-1.0."""
HALF = Fraction(1, 2)
_TOTAL = sum(weight for _, weight in STAGES)


def _place(stage: str) -> tuple[int, int]:
    before = 0
    for name, weight in STAGES:
        if name == stage:
            return before, weight
        before += weight
    raise KeyError(stage)


def at(stage: str, part: Fraction | int = 0) -> float:
    """The job's fraction done at ``part`` (0..1) of ``stage``."""
    before, weight = _place(stage)
    return float((before + Fraction(part) * weight) / _TOTAL)


def span(stage: str, first: Fraction | int = 0, last: Fraction | int = 1) -> tuple[float, float]:
    """The fractions from ``first`` to ``last`` (parts of ``stage``, default all of it)."""
    return at(stage, first), at(stage, last)


FINETUNE_WEIGHT = 16
"""Extra weight of the prune stage when the job fine-tunes: in the digits demo (400 steps) and the
fine-tuning tests, fine-tuning is most of a job's time, so it gets most of the bar."""
SEARCH_WEIGHT = 6
"""Extra weight of the prune stage when a latency target is searched (timing candidates end to end)."""


def _stage_of(fraction: float) -> str:
    """The stage of the default table whose span holds ``fraction``."""
    for name, _ in STAGES:
        if fraction < at(name, 1):
            return name
    return STAGES[-1][0]


def reweighted(progress: ProgressFn, *, finetunes: bool, searches: bool) -> ProgressFn:
    """``progress`` with the fractions of the default table moved onto one whose prune stage (where
    fine-tuning and the latency search report) weighs what those take; the same ``progress`` without
    either."""
    extra = (FINETUNE_WEIGHT if finetunes else 0) + (SEARCH_WEIGHT if searches else 0)
    if not extra:
        return progress
    weights = [(name, weight + (extra if name == "prune" else 0)) for name, weight in STAGES]
    total = sum(w for _, w in weights)

    def moved(stage: str, fraction: float, message: str, details: Mapping[str, Any] | None = None) -> None:
        name = _stage_of(fraction)
        start, end = span(name)
        part = (
            Fraction(0)
            if end <= start
            else Fraction(min(max(fraction, start), end) - start) / Fraction(end - start)
        )
        before = sum(w for n, w in weights[: [n for n, _ in weights].index(name)])
        weight = dict(weights)[name]
        moved_to = float((before + part * weight) / total)
        if details is None:
            progress(stage, moved_to, message)
        else:
            progress(stage, moved_to, message, details)

    return moved
