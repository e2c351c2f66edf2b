"""The optimization spec read into a run's :class:`~..measure.settings.RunSettings` (its one reader here).

Defaults apply where the spec leaves a value unset (0): batch size 1, 1
thread, 10 warm-up and 50 timed runs, 30 s per measurement, 32 evaluation
samples, the quality rule's floors.
"""

from __future__ import annotations

from prunekit.v1 import spec_pb2

from ..measure.latency import Device
from ..measure.quality import DEFAULT_MIN_COSINE_SIMILARITY, DEFAULT_MIN_TOP1_AGREEMENT, QualityRule
from ..measure.settings import RunSettings
from ..spec_check import check_spec

DEFAULT_BATCH = 1
DEFAULT_THREADS = 1
DEFAULT_WARMUP = 10
DEFAULT_ITERATIONS = 50
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_SAMPLES = 32
_DEVICES: dict[int, Device] = {
    spec_pb2.DEVICE_UNSPECIFIED: "cpu",
    spec_pb2.DEVICE_CPU: "cpu",
    spec_pb2.DEVICE_CUDA: "cuda",
}


def settings_from_spec(spec: spec_pb2.OptimizationSpec, model_format: int) -> RunSettings:
    """The settings of ``spec``; ``INVALID_SPEC`` listing every rule it breaks."""
    check_spec(spec, model_format)
    bench, evaluation = spec.benchmark, spec.evaluation
    sizes = tuple(int(b) for b in bench.batch_sizes) or (bench.batch_size or DEFAULT_BATCH,)
    return RunSettings(
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
