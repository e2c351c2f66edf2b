"""Latency statistics, the stability rule and ONNX Runtime sessions of the measuring protocol.

Sessions: ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``,
sequential execution, all graph optimizations, and thread spinning off
(spinning threads of one session steal the cores of the next and wreck the
tail). The execution providers follow the device (:func:`execution_providers`).
How models are warmed up, interleaved and repeated in windows is
:mod:`.benchmark`'s part.

Percentiles use the nearest-rank method: the p-th percentile of ``n`` sorted
samples is the sample at rank ``ceil(p / 100 * n)`` (1-based), so it is
always a measured value. ``stdev_ms`` is the sample standard deviation (0 for
a single run). Throughput is ``batch_size / p50`` in samples per second.

Stability (after Triton's perf_analyzer): a model's timings are stable when
the p50 of each of its last :data:`STABILITY_WINDOWS` windows lies within
:data:`STABILITY_TOLERANCE` of those windows' mean.
"""

from __future__ import annotations

import math
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
STABILITY_WINDOWS = 3
STABILITY_TOLERANCE = 0.10
Device = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class Latency:
    """Timings of one model, in milliseconds, with the conditions they were taken under.

    ``windows`` is the number of measurement windows run; the statistics come
    from the last :data:`STABILITY_WINDOWS` of them (``iterations`` samples).
    """

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
    execution_provider: str = PROVIDER
    windows: int = 1
    stable: bool = False
    window_p50_ms: tuple[float, ...] = ()
    peak_memory_bytes: int = 0


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


def execution_providers(device: Device, available: Sequence[str] | None = None) -> list[str]:
    """The providers a session on ``device`` asks for, most preferred first.

    ``cpu``: the CPU provider. ``cuda``: TensorRT when ``available`` has it,
    then CUDA, then CPU for the nodes neither runs. ``available`` defaults to
    what this ONNX Runtime build offers. Raises ``ValueError`` for ``cuda``
    without the CUDA provider and for an unknown device.
    """
    have = list(ort.get_available_providers() if available is None else available)
    if device == "cpu":
        return [PROVIDER]
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}")
    if CUDA_PROVIDER not in have:
        raise ValueError(
            f"device cuda needs ONNX Runtime's {CUDA_PROVIDER} (install onnxruntime-gpu); "
            f"this build has {', '.join(have) or 'none'}"
        )
    chosen = [TENSORRT_PROVIDER] if TENSORRT_PROVIDER in have else []
    return [*chosen, CUDA_PROVIDER, PROVIDER]


def onnx_session(model: Path, *, threads: int = 1, device: Device = "cpu") -> Any:
    """An ``ort.InferenceSession`` with :func:`session_options` on ``device``'s providers."""
    return ort.InferenceSession(
        str(model), sess_options=session_options(threads), providers=execution_providers(device)
    )


def cpu_session(model: Path, *, threads: int = 1) -> Any:
    """An ``ort.InferenceSession`` on the CPU provider with :func:`session_options`."""
    return onnx_session(model, threads=threads, device="cpu")


def runtime_name() -> str:
    """E.g. ``"onnxruntime 1.32.0"``."""
    return f"onnxruntime {ort.__version__}"


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted samples (``0 < p <= 100``)."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_samples)))
    return float(sorted_samples[min(rank, len(sorted_samples)) - 1])


def is_stable(
    window_p50_ms: Sequence[float],
    *,
    windows: int = STABILITY_WINDOWS,
    tolerance: float = STABILITY_TOLERANCE,
) -> bool:
    """True when the last ``windows`` values each lie within ``tolerance`` (a fraction) of their mean."""
    if windows < 1 or len(window_p50_ms) < windows:
        return False
    last = [float(v) for v in window_p50_ms[-windows:]]
    mean = statistics.fmean(last)
    return mean > 0 and all(abs(v - mean) <= tolerance * mean for v in last)


def stability_rule(iterations: int, max_seconds: float) -> str:
    """The stability rule of the protocol in words."""
    return (
        f"windows of {iterations} timed runs per model, models interleaved; repeated until the p50 of "
        f"each of the last {STABILITY_WINDOWS} windows lies within {STABILITY_TOLERANCE:.0%} of their "
        f"mean for every model, or {max_seconds:g} s of windows have passed (a window is never cut "
        f"short); statistics over the last {STABILITY_WINDOWS} windows"
    )


def summarize(
    samples_ms: Sequence[float],
    *,
    batch_size: int,
    threads: int,
    warmup: int,
    interleaved: bool,
    runtime: str | None = None,
    device: str = "cpu",
    execution_provider: str = PROVIDER,
    window_p50_ms: Sequence[float] = (),
    peak_memory_bytes: int = 0,
) -> Latency:
    """The :class:`Latency` of a list of per-run timings in milliseconds.

    ``window_p50_ms`` (one value per window run) sets ``windows`` and ``stable``.
    """
    ordered = sorted(samples_ms)
    p50 = percentile(ordered, 50)
    windows = tuple(float(v) for v in window_p50_ms)
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
        runtime=runtime_name() if runtime is None else runtime,
        device=device,
        interleaved=interleaved,
        execution_provider=execution_provider,
        windows=max(1, len(windows)),
        stable=is_stable(windows),
        window_p50_ms=windows,
        peak_memory_bytes=peak_memory_bytes,
    )


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
