"""AUTO quantization: which candidates to build, and which one to keep once they are measured.

AUTO is not a mode of its own: the spec room's
:func:`~prunekit.spec.translate.quantize_plan` expands it into one config per
candidate mode (the spec's ``candidates``, or every mode), the pipeline builds
and measures them all, and :func:`select_fastest` keeps the fastest candidate
whose quality meets the rule. The unquantized model competes too (the
pipeline passes it first), so a quantization that does not pay off on this
machine is never kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prunekit.spec.quantize_configs import QuantizePlan

from ..measure.quality import Quality, QualityRule

__all__ = ["SELECTION_RULE", "Candidate", "QuantizePlan", "select_fastest"]

SELECTION_RULE = (
    "AUTO keeps, per source model, the candidate with the lowest p50 at the primary batch size among "
    "those meeting the quality rule; the unquantized model is a candidate, and wins ties"
)


@dataclass(frozen=True)
class Candidate:
    """One measured model AUTO may keep: its name, p50 latency and quality against the original."""

    name: str
    p50_ms: float
    quality: Quality


def select_fastest(candidates: Sequence[Candidate], rule: QualityRule) -> str | None:
    """The name of the fastest candidate meeting ``rule`` (the earliest on ties); None when none does."""
    passing = [
        (c.p50_ms, i, c.name) for i, c in enumerate(candidates) if rule.met_by(c.quality) and c.p50_ms > 0
    ]
    return min(passing)[2] if passing else None
