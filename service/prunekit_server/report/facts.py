"""What the report stage reads: the job's facts (:class:`Facts`) and the models the job made.

:class:`Variant` and :class:`Pruned` are the pipeline's bookkeeping of its models (it makes them, see
``pipeline/variants.py``); the measurements come from :mod:`..measure` (:class:`~..measure.timings.Timings`,
:class:`~..measure.evaluation.Evaluation`, :class:`~..measure.settings.RunSettings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from prunekit.v1 import model_pb2, report_pb2

from ..measure.accuracy import Accuracy, AccuracyRule
from ..measure.evaluation import Evaluation
from ..measure.quality import Quality
from ..measure.settings import RunSettings
from ..measure.timings import Timings
from ..modelio.ingest import IngestedModel
from ..pruning import PruneConfig, PruneResult
from ..quantization import QuantizationDetails
from ..search.outcome import SearchOutcome


@dataclass
class Variant:
    """A model the job made: its ONNX file (measured), every file of it, and how it was made."""

    name: str
    source: str
    onnx_path: Path
    files: list[report_pb2.ModelFile]
    torchscript_path: Path | None = None
    quantization: QuantizationDetails | None = None
    auto_candidate: bool = False


@dataclass
class Pruned:
    """The prune stage's outcome; ``warnings`` are the TorchScript write-back's (coded or not)."""

    variant: Variant
    model: onnx.ModelProto
    result: PruneResult
    config: PruneConfig
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Facts:
    """Everything the earlier stages found, as the report stage needs it.

    ``evaluation`` (from :func:`..measure.evaluation.evaluate_models`) gives fidelity,
    accuracy and what they were measured on; without it, ``qualities`` and
    ``quality_inputs`` (synthetic inputs, no accuracy) are used. ``data`` and
    ``finetune`` are copied into the report; variants named in ``finetuned``
    get the ``FINETUNED`` flag; ``max_accuracy_drop`` is the spec's accuracy
    rule (0: none); ``extra_warnings`` are ``"CODE: message"`` strings of
    other stages (e.g. ``FINETUNE_DISTILLATION_ONLY``).
    """

    ingested: IngestedModel
    base_analysis: model_pb2.ModelAnalysis
    pruned: Pruned | None
    variants: Sequence[Variant]
    timings: Timings
    settings: RunSettings
    qualities: Mapping[str, Quality] = field(default_factory=dict)
    quality_inputs: str = ""
    calibration_inputs: str = ""
    quantize_warnings: Sequence[str] = ()
    auto: bool = False
    evaluation: Evaluation | None = None
    data: report_pb2.DataReport | None = None
    finetune: report_pb2.FinetuneReport | None = None
    finetuned: Set[str] = frozenset()
    max_accuracy_drop: float = 0.0
    extra_warnings: Sequence[str] = ()
    search: SearchOutcome | None = None
    selected: str = ""
    """The variant a latency-target search chose (``search`` set)."""

    @property
    def fidelity(self) -> Mapping[str, Quality]:
        """Variant name -> quality against the original."""
        return self.evaluation.qualities if self.evaluation is not None else self.qualities

    @property
    def fidelity_inputs(self) -> str:
        """What fidelity was measured on, in words."""
        return self.evaluation.quality_inputs if self.evaluation is not None else self.quality_inputs

    @property
    def accuracies(self) -> Mapping[str, Accuracy]:
        """Model name (``BASELINE`` included) -> accuracy; empty when it was not measured."""
        return self.evaluation.accuracies if self.evaluation is not None else {}

    @property
    def accuracy_rule(self) -> AccuracyRule:
        """The spec's accuracy rule."""
        return AccuracyRule(self.max_accuracy_drop)
