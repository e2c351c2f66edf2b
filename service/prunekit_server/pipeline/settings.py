"""A job's settings: the spec's values with their defaults applied, after the spec rules passed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prunekit.v1 import model_pb2, spec_pb2

from ..measure.latency import Device
from ..measure.quality import (
    DEFAULT_MIN_COSINE_SIMILARITY,
    DEFAULT_MIN_TOP1_AGREEMENT,
    SYNTHETIC_INT_HIGH,
    QualityRule,
)
from ..spec_rules import check_spec

DEFAULT_BATCH = 1
DEFAULT_THREADS = 1
DEFAULT_WARMUP = 10
DEFAULT_ITERATIONS = 50
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_SAMPLES = 32
_FLOATS = frozenset(
    {
        model_pb2.DATA_TYPE_UNSPECIFIED,
        model_pb2.DATA_TYPE_FLOAT32,
        model_pb2.DATA_TYPE_FLOAT16,
        model_pb2.DATA_TYPE_FLOAT64,
    }
)
_DEVICES: dict[int, Device] = {
    spec_pb2.DEVICE_UNSPECIFIED: "cpu",
    spec_pb2.DEVICE_CPU: "cpu",
    spec_pb2.DEVICE_CUDA: "cuda",
}


@dataclass(frozen=True)
class Settings:
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


def settings_from_spec(spec: spec_pb2.OptimizationSpec, model_format: int) -> Settings:
    """The settings of ``spec``; ``INVALID_SPEC`` listing every rule it breaks (see ``spec_rules``)."""
    check_spec(spec, model_format)
    bench, evaluation = spec.benchmark, spec.evaluation
    sizes = tuple(int(b) for b in bench.batch_sizes) or (bench.batch_size or DEFAULT_BATCH,)
    return Settings(
        batch_sizes=sizes,
        threads=bench.threads or DEFAULT_THREADS,
        warmup=bench.warmup or DEFAULT_WARMUP,
        iterations=bench.iterations or DEFAULT_ITERATIONS,
        max_seconds=bench.max_seconds or DEFAULT_MAX_SECONDS,
        device=_DEVICES[bench.device],
        samples=evaluation.samples or DEFAULT_SAMPLES,
        seed=evaluation.seed,
        rule=QualityRule(
            min_top1_agreement=evaluation.min_top1_agreement or DEFAULT_MIN_TOP1_AGREEMENT,
            min_cosine_similarity=evaluation.min_cosine_similarity or DEFAULT_MIN_COSINE_SIMILARITY,
        ),
    )


def synthetic_description(inputs: Sequence[model_pb2.InputSpec], samples: int, seed: int) -> str:
    """What synthetic inputs were drawn, in words (the report's ``quality_inputs``)."""
    text = f"{samples} synthetic samples, normal(0, 1), seed {seed}"
    if any(i.dtype not in _FLOATS for i in inputs):
        text += f"; integer inputs uniform in [0, {SYNTHETIC_INT_HIGH})"
    return text
