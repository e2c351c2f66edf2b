"""How the search judges a candidate's quality: a verdict per model file, and the bound it must keep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..measure.accuracy import Accuracy, AccuracyRule
from ..measure.quality import Quality, QualityRule


@dataclass(frozen=True)
class Verdict:
    """A candidate's fidelity to the original and, when the eval data has labels, its accuracy."""

    quality: Quality
    accuracy: Accuracy | None = None


Judging = Callable[[Path], Verdict]
"""A candidate's ONNX file -> its verdict (on the same inputs for every candidate)."""


@dataclass(frozen=True)
class Bound:
    """What a candidate must keep: the accuracy rule when labels can judge it, else the fidelity floors.

    Neither (the default) when fine-tuning follows: the final evaluation judges then.
    """

    fidelity: QualityRule | None = None
    accuracy: AccuracyRule | None = None
    baseline: Accuracy | None = None
    recovers: bool = False
    """Fine-tuning follows: of the candidates meeting the target, the one keeping the most MACs (the
    most capacity to recover) is chosen, quality breaking ties; before training, a narrowed model's
    fidelity says little about what training restores, least of all across removed layers."""

    @property
    def by_accuracy(self) -> bool:
        """True when the accuracy rule (not fidelity) is the bound."""
        return self.accuracy is not None and self.accuracy.judges(self.baseline)

    def met_by(self, verdict: Verdict) -> bool:
        """Whether ``verdict`` keeps the bound."""
        if self.by_accuracy:
            assert self.accuracy is not None
            return self.accuracy.met_by(verdict.accuracy, self.baseline) is True
        return self.fidelity is None or self.fidelity.met_by(verdict.quality)
