"""Latency of ONNX models on ONNX Runtime (CPU), measured under a stated protocol.

Protocol: one session per model with ``intra_op_num_threads=threads``,
``inter_op_num_threads=1``, sequential execution, all graph optimizations,
and thread spinning off (spinning threads of one session steal the cores of
the next and wreck the tail). Every model is warmed up ``warmup`` times, then
the timed runs are interleaved (A B A B ...), so drift of the machine hits
all models alike. Each run is timed with ``time.perf_counter_ns``.

Percentiles use the nearest-rank method: the p-th percentile of ``n`` sorted
samples is the sample at rank ``ceil(p / 100 * n)`` (1-based), so it is
always a measured value. ``stdev_ms`` is the sample standard deviation (0 for
a single run). Throughput is ``batch_size / p50`` in samples per second.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Latency:
    """Timings of one model, in milliseconds, with the conditions they were taken under."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    throughput_per_s: float
    batch_size: int
    threads: int
    warmup: int
    iterations: int
    runtime: str
    device: str
    interleaved: bool = False


def session_options(threads: int) -> Any:
    """``ort.SessionOptions`` of the protocol: ``threads`` intra-op threads, no spinning."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def cpu_session(model: Path, *, threads: int = 1) -> Any:
    """An ``ort.InferenceSession`` on the CPU provider with :func:`session_options`."""
    return ort.InferenceSession(str(model), sess_options=session_options(threads), providers=[PROVIDER])


def runtime_name() -> str:
    """E.g. ``"onnxruntime 1.32.0"``."""
    return f"onnxruntime {ort.__version__}"


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted samples (``0 < p <= 100``)."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_samples)))
    return float(sorted_samples[min(rank, len(sorted_samples)) - 1])


def summarize(
    samples_ms: Sequence[float], *, batch_size: int, threads: int, warmup: int, interleaved: bool
) -> Latency:
    """The :class:`Latency` of a list of per-run timings in milliseconds."""
    ordered = sorted(samples_ms)
    p50 = percentile(ordered, 50)
    return Latency(
        p50_ms=p50,
        p90_ms=percentile(ordered, 90),
        p99_ms=percentile(ordered, 99),
        mean_ms=statistics.fmean(ordered),
        stdev_ms=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        min_ms=ordered[0],
        throughput_per_s=batch_size / (p50 / 1000.0) if p50 > 0 else 0.0,
        batch_size=batch_size,
        threads=threads,
        warmup=warmup,
        iterations=len(ordered),
        runtime=runtime_name(),
        device="cpu",
        interleaved=interleaved,
    )


def benchmark_onnx(
    models: Mapping[str, Path],
    feed: dict[str, np.ndarray],
    *,
    batch_size: int,
    threads: int,
    warmup: int,
    iterations: int,
) -> dict[str, Latency]:
    """Time every model on the same ``feed`` under the module's protocol; keys as in ``models``.

    ``batch_size`` is only reported (the feed must already have that batch).
    Raises ``ValueError`` for no models or impossible counts.
    """
    if not models:
        raise ValueError("no models to benchmark")
    if batch_size < 1 or iterations < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, iterations >= 1, warmup >= 0; got {batch_size}, {iterations}, {warmup}"
        )
    sessions = {name: cpu_session(path, threads=threads) for name, path in models.items()}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feed)
    timings: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(iterations):
        for name, session in sessions.items():
            start = time.perf_counter_ns()
            session.run(None, feed)
            timings[name].append((time.perf_counter_ns() - start) / 1e6)
    interleaved = len(sessions) > 1
    return {
        name: summarize(
            samples, batch_size=batch_size, threads=threads, warmup=warmup, interleaved=interleaved
        )
        for name, samples in timings.items()
    }


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; ``platform.processor()`` or "unknown" elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
