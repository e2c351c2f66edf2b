"""The rules of a spec's ``benchmark`` and ``evaluation``: bounded counts and times, fractions in [0, 1]."""

from __future__ import annotations

import math

from prunekit.v1 import spec_pb2

from .violation import FieldViolation

__all__ = [
    "MAX_BATCH",
    "MAX_BATCH_SIZES",
    "MAX_ITERATIONS",
    "MAX_SAMPLES",
    "MAX_SECONDS",
    "MAX_THREADS",
    "MAX_WARMUP",
    "benchmark_violations",
    "evaluation_violations",
]

MAX_BATCH = 4096
MAX_THREADS = 256
MAX_WARMUP = 10_000
MAX_ITERATIONS = 100_000
MAX_SAMPLES = 4096
MAX_BATCH_SIZES = 8
MAX_SECONDS = 3600.0


def benchmark_violations(bench: spec_pb2.BenchmarkSpec, path: str, found: list[FieldViolation]) -> None:
    """Append every rule ``bench`` breaks: counts 0 (default) to a cap, distinct batch sizes, a time cap."""
    limits = {
        "batch_size": MAX_BATCH,
        "threads": MAX_THREADS,
        "warmup": MAX_WARMUP,
        "iterations": MAX_ITERATIONS,
    }
    for name, high in limits.items():
        value = getattr(bench, name)
        if not 0 <= value <= high:
            found.append(FieldViolation(f"{path}.{name}", f"must be between 0 (default) and {high}"))
    sizes = list(bench.batch_sizes)
    if sizes and bench.batch_size:
        found.append(FieldViolation(f"{path}.batch_sizes", "set batch_size or batch_sizes, not both"))
    if len(sizes) > MAX_BATCH_SIZES:
        found.append(FieldViolation(f"{path}.batch_sizes", f"at most {MAX_BATCH_SIZES} batch sizes"))
    for i, size in enumerate(sizes):
        if not 1 <= size <= MAX_BATCH:
            found.append(FieldViolation(f"{path}.batch_sizes[{i}]", f"must be between 1 and {MAX_BATCH}"))
        elif size in sizes[:i]:
            found.append(FieldViolation(f"{path}.batch_sizes[{i}]", f"batch size {size} is listed twice"))
    seconds = bench.max_seconds
    if not math.isfinite(seconds) or not 0.0 <= seconds <= MAX_SECONDS:
        found.append(
            FieldViolation(f"{path}.max_seconds", f"must be between 0 (default) and {MAX_SECONDS:g} seconds")
        )


def evaluation_violations(
    evaluation: spec_pb2.EvaluationSpec, path: str, found: list[FieldViolation]
) -> None:
    """Append every rule ``evaluation`` breaks: a bounded sample count, agreement fractions in [0, 1]."""
    if not 0 <= evaluation.samples <= MAX_SAMPLES:
        found.append(FieldViolation(f"{path}.samples", f"must be between 0 and {MAX_SAMPLES}"))
    for name in ("min_top1_agreement", "min_cosine_similarity"):
        value = getattr(evaluation, name)
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            found.append(FieldViolation(f"{path}.{name}", "must be 0 (default 0.99) or 0 < value <= 1"))
