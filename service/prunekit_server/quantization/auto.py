"""AUTO quantization: which candidates to build, and which one to keep once they are measured.

AUTO is not a mode of its own: :func:`plan_from_spec` expands it into one
config per candidate mode (the spec's ``candidates``, or every registered
mode), the pipeline builds and measures them all, and :func:`select_fastest`
keeps the fastest candidate whose quality meets the rule. The unquantized
model competes too (the pipeline passes it first), so a quantization that
does not pay off on this machine is never kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prunekit.v1 import spec_pb2

from ..measure.quality import Quality, QualityRule
from .base import QuantizeConfig, config_for_mode, spec_modes

SELECTION_RULE = (
    "AUTO keeps, per source model, the candidate with the lowest p50 at the primary batch size among "
    "those meeting the quality rule; the unquantized model is a candidate, and wins ties"
)


@dataclass(frozen=True)
class QuantizePlan:
    """The configs a ``QuantizeSpec`` asks for; ``auto`` when they are AUTO's candidates."""

    configs: tuple[QuantizeConfig, ...]
    auto: bool = False


def plan_from_spec(q: spec_pb2.QuantizeSpec) -> QuantizePlan:
    """The plan for ``q``: nothing for NONE, one config for a mode, every candidate for AUTO.

    Raises ``INVALID_SPEC`` for a mode no module registered.
    """
    if q.mode in (spec_pb2.QUANTIZE_MODE_UNSPECIFIED, spec_pb2.QUANTIZE_MODE_NONE):
        return QuantizePlan(configs=())
    if q.mode != spec_pb2.QUANTIZE_MODE_AUTO:
        return QuantizePlan(configs=(config_for_mode(q, q.mode),))
    modes = list(q.candidates) or spec_modes()
    return QuantizePlan(configs=tuple(config_for_mode(q, mode) for mode in modes), auto=True)


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
