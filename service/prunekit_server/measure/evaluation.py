"""The evaluate stage: every variant's fidelity to the original, and accuracy when the data allows.

All models (the original and every variant, quantized ones included) are
ONNX files run in ONNX Runtime CPU sessions, batched with each model's batch
size (see :func:`.accuracy.run_batched`). With eval data, fidelity is
measured on its inputs, one item per sample, and accuracy on its ``label``
(top-1, top-5 above 5 classes) or ``target`` (MSE) for the baseline and every
variant. Without eval data, fidelity is measured on the synthetic feeds
exactly as :func:`.quality.compare_models` does, and there is no
accuracy. The eval data is anything shaped like :class:`EvalData` (the
training room's ``Dataset`` is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from prunekit.v1 import model_pb2

from .accuracy import Accuracy, Outputs, measure_accuracy, run_batched
from .latency import cpu_session
from .names import BASELINE
from .quality import Quality, compare_outputs, run_feeds
from .settings import RunSettings, synthetic_description

NO_EVAL_DATA = "the job had no labelled eval data"
NO_SUPERVISION = "the eval data has no label or target arrays"


class EvalData(Protocol):
    """Eval samples: one array per model input (named, in the model's input order), ``label`` or ``target``.

    All arrays share their first dimension, the sample count (``len``).
    """

    @property
    def input_names(self) -> Sequence[str]: ...

    @property
    def inputs(self) -> Sequence[np.ndarray]: ...

    @property
    def label(self) -> np.ndarray | None: ...

    @property
    def target(self) -> np.ndarray | None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage measured.

    ``qualities``: variant name -> fidelity to the original. ``accuracies``:
    model name (``BASELINE`` included) -> accuracy, empty when it could not
    be measured, and then ``accuracy_note`` says why. ``quality_inputs``
    describes what fidelity was measured on; ``synthetic`` is True when that
    was synthetic inputs.
    """

    qualities: dict[str, Quality]
    quality_inputs: str
    synthetic: bool
    accuracies: dict[str, Accuracy] = field(default_factory=dict)
    accuracy_note: str = NO_EVAL_DATA


def _synthetic(
    original: Path, models: Mapping[str, Path], feeds: Sequence[dict[str, np.ndarray]], settings: RunSettings
) -> Evaluation:
    if not feeds:
        raise ValueError("no eval data and no synthetic feeds to evaluate on")
    reference = run_feeds(original, feeds, threads=settings.threads)
    qualities = {
        name: compare_outputs(reference, run_feeds(path, feeds, threads=settings.threads), samples=len(feeds))
        for name, path in models.items()
    }
    described = [
        model_pb2.InputSpec(
            name=name,
            dtype=model_pb2.DATA_TYPE_FLOAT32 if array.dtype.kind == "f" else model_pb2.DATA_TYPE_INT64,
        )
        for name, array in feeds[0].items()
    ]
    text = synthetic_description(described, len(feeds), settings.seed)
    return Evaluation(qualities=qualities, quality_inputs=text, synthetic=True)


def _accuracy(outputs: Outputs, data: EvalData) -> Accuracy | str:
    """The accuracy of ``outputs`` on ``data``, or why it cannot be measured."""
    if data.label is None and data.target is None:
        return NO_SUPERVISION
    try:
        return measure_accuracy(outputs, label=data.label, target=data.target)
    except ValueError as exc:
        kind = "labels" if data.label is not None else "targets"
        return f"the model's first output does not fit the eval data's {kind} ({exc})"


class Judge:
    """Compares models with the original on labelled (or target) eval data, the original run once.

    Each model (an ONNX file) is run batched (``settings.batch_size`` for dynamic batch dimensions,
    ``settings.threads``) on every sample; :meth:`judge` gives its fidelity (one item per sample) and
    its accuracy, or the reason accuracy cannot be measured.
    """

    def __init__(self, original: Path, eval_data: EvalData, settings: RunSettings) -> None:
        if len(eval_data) == 0:
            raise ValueError("no eval samples to judge on")
        self.data = eval_data
        self.settings = settings
        self._arrays = dict(zip(eval_data.input_names, eval_data.inputs, strict=True))
        self.reference = self._outputs(original)
        self.baseline = _accuracy(self.reference, eval_data)

    def _outputs(self, path: Path) -> Outputs:
        session = cpu_session(path, threads=self.settings.threads)
        return run_batched(session, self._arrays, self.settings.batch_size)

    def judge(self, model: Path) -> tuple[Quality, Accuracy | str]:
        """``model``'s fidelity to the original and its accuracy (or why there is none).

        Raises ``ValueError`` when its outputs differ in number or shape from the original's.
        """
        outputs = self._outputs(model)
        quality = compare_outputs(self.reference.items, outputs.items, samples=len(self.data))
        return quality, _accuracy(outputs, self.data)


def evaluate_models(
    original: Path,
    models: Mapping[str, Path],
    eval_data: EvalData | None,
    synthetic_feeds: Sequence[dict[str, np.ndarray]],
    settings: RunSettings,
) -> Evaluation:
    """Fidelity of each of ``models`` (name -> ONNX file) to ``original``, and accuracy where it applies.

    ``eval_data`` (None or empty: use ``synthetic_feeds``) holds arrays named
    after the model inputs. Dynamic batch dimensions take
    ``settings.batch_size``; sessions use ``settings.threads``. Raises
    ``ValueError`` when outputs differ in number or shape between models.
    """
    if eval_data is None or len(eval_data) == 0:
        return _synthetic(original, models, synthetic_feeds, settings)
    judge = Judge(original, eval_data, settings)
    found = {BASELINE: judge.baseline}
    qualities: dict[str, Quality] = {}
    for name, path in models.items():
        qualities[name], found[name] = judge.judge(path)
    notes = [v for v in found.values() if isinstance(v, str)]
    accuracies = {} if notes else {k: v for k, v in found.items() if isinstance(v, Accuracy)}
    note = notes[0] if notes else ""
    return Evaluation(
        qualities=qualities,
        quality_inputs=f"eval split, {len(eval_data)} samples",
        synthetic=False,
        accuracies=accuracies,
        accuracy_note=note,
    )


__all__ = ["NO_EVAL_DATA", "NO_SUPERVISION", "EvalData", "Evaluation", "Judge", "evaluate_models"]
