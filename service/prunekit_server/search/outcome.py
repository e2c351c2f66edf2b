"""What a latency-target search found: its candidates, the tables it used, the one it chose."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..measure.accuracy import Accuracy
from ..measure.quality import Quality
from ..pruning.base import PruneResult
from ..pruning.sensitivity import LayerCurve
from .table import LatencyTable

TOLERANCE = 0.07
"""A candidate meets the target when its measured speed-up is at least target / (1 + TOLERANCE)."""


@dataclass(frozen=True)
class LayerWidth:
    layer: str
    before: int
    after: int


@dataclass
class CandidateRecord:
    """One assembled, timed candidate (see ``SearchCandidate`` in the report)."""

    name: str
    quantization: str
    predicted_ms: float
    table_ms: float
    """The tables' prediction alone, before the search's calibration (see ``predicted_ms``)."""
    measured_ms: float
    measured_speedup: float
    macs: int
    size_bytes: int
    quality: Quality | None
    widths: tuple[LayerWidth, ...]
    accuracy: Accuracy | None = None
    """On the eval split's labels, when it has them."""
    meets_target: bool = False
    faithful: bool = True
    """Its quality meets the search's quality rule (always, when the job fine-tunes afterwards)."""
    pareto: bool = False
    selected: bool = False
    removed: tuple[str, ...] = ()
    """Units (layers or blocks) removed before narrowing (the ``layer`` technique)."""
    factorized: tuple[str, ...] = ()
    """Layers split in two by truncated SVD before narrowing (the ``low_rank`` technique)."""
    kept: dict[str, int] = field(default_factory=dict)
    """Group key -> kept chunk width (what :meth:`~.candidates.Bench.assemble` takes)."""

    @property
    def prediction_error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms if self.measured_ms > 0 else 0.0

    @property
    def table_error(self) -> float:
        return (self.table_ms - self.measured_ms) / self.measured_ms if self.measured_ms > 0 else 0.0

    @property
    def cosine(self) -> float:
        return self.quality.cosine_similarity if self.quality is not None else 0.0

    @property
    def score(self) -> float:
        """What ranks candidates by quality: top-1 accuracy when measured, else cosine similarity."""
        if self.accuracy is not None and self.accuracy.top1 is not None:
            return self.accuracy.top1
        return self.cosine


@dataclass(frozen=True)
class TableUse:
    key: str
    description: str
    reused: bool
    entries_used: int
    entries_timed: int
    seconds: float


@dataclass
class SearchOutcome:
    """The search's account, and the chosen model: pruned (``result``) then quantized by ``quantization``."""

    target_ms: float
    target_speedup: float
    baseline_ms: float
    techniques: tuple[str, ...]
    absolute: bool = False
    """The target was given in milliseconds (``latency_ms``): judged on p50, not on the speed-up."""
    candidates: list[CandidateRecord] = field(default_factory=list)
    table: LatencyTable | None = None
    met: bool = False
    seconds: float = 0.0
    selected: str = ""
    quantization: str = "none"
    result: PruneResult | None = None
    model: onnx.ModelProto | None = None
    warnings: list[str] = field(default_factory=list)
    curves: dict[str, LayerCurve] = field(default_factory=dict)
    """Sensitivity curves by module path, measured on the first base and reused by the others where a
    group's path and width match (see :func:`~.build.group_spaces`)."""
    calibration: dict[str, list[float]] = field(default_factory=dict)
    """Per quantization mode: measured / table-predicted p50 of every candidate so far (see
    :attr:`~.candidates.Bench.history`)."""

    def chosen(self) -> CandidateRecord | None:
        return next((c for c in self.candidates if c.name == self.selected), None)

    @property
    def tables(self) -> list[TableUse]:
        """How the search used its node kind's table."""
        t = self.table
        if t is None:
            return []
        return [TableUse(t.kind.key, t.kind.describe(), t.reused, len(t.used), len(t.timed), t.seconds)]
