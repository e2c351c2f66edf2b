"""A run's settings (:class:`RunSettings`): the spec's values with their defaults applied.

The pipeline reads them from the spec (``pipeline/from_spec.py``) after the spec rules passed; the
measuring stages (:mod:`.timings`, :mod:`.evaluation`) and the report read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prunekit.v1 import model_pb2

from .latency import Device
from .quality import SYNTHETIC_INT_HIGH, QualityRule

_FLOATS = frozenset(
    {
        model_pb2.DATA_TYPE_UNSPECIFIED,
        model_pb2.DATA_TYPE_FLOAT32,
        model_pb2.DATA_TYPE_FLOAT16,
        model_pb2.DATA_TYPE_FLOAT64,
    }
)


@dataclass(frozen=True)
class RunSettings:
    """What a job measures and how; ``batch_sizes[0]`` is the primary batch size."""

    batch_sizes: tuple[int, ...]
    threads: int
    warmup: int
    iterations: int
    max_seconds: float
    device: Device
    samples: int
    seed: int
    rule: QualityRule

    @property
    def batch_size(self) -> int:
        """The primary batch size: model intake, quality and AUTO's choice use it."""
        return self.batch_sizes[0]

    @property
    def calibration_seed(self) -> int:
        """Seed of the synthetic calibration inputs (not the evaluation's: quality is judged on others)."""
        return self.seed + 1


def synthetic_description(inputs: Sequence[model_pb2.InputSpec], samples: int, seed: int) -> str:
    """What synthetic inputs were drawn, in words (the report's ``quality_inputs``)."""
    text = f"{samples} synthetic samples, normal(0, 1), seed {seed}"
    if any(i.dtype not in _FLOATS for i in inputs):
        text += f"; integer inputs uniform in [0, {SYNTHETIC_INT_HIGH})"
    return text
