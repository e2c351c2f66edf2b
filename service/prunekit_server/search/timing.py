"""Short timings for the search: one layer alone, and whole candidates interleaved with the baseline.

Both use the benchmark's session settings (:func:`~..measure.latency.session_options`: the job's threads,
no spinning) on the job's device. A layer runs until it has :data:`MIN_RUNS` samples and
:data:`MIN_SECONDS` of them (at most :data:`MAX_RUNS`); its p50 is the table entry. Whole models are timed
in turns (A B A B ...), so drift on a busy machine hits them alike; their p50s are the search's
"measured" latencies (the job's final benchmark later times the chosen model again, by its full protocol).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..measure.latency import Device, execution_providers, session_options
from .layers import LayerShape

__all__ = ["ort_errors", "time_layer", "time_models"]
MIN_RUNS = 9
MAX_RUNS = 200
MIN_SECONDS = 0.12
WARMUP = 3


@functools.cache
def ort_errors() -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises for a model or shape it refuses (looked up on first use: importing
    its native module starts a thread, which a forking zygote must not have)."""
    state = ort.capi.onnxruntime_pybind11_state
    return (state.Fail, state.InvalidArgument, state.InvalidGraph, state.RuntimeException)


def _session(model: bytes | Path, threads: int, device: Device) -> Any:
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        source, sess_options=session_options(threads), providers=execution_providers(device)
    )


def _p50(run: Callable[[], object], min_seconds: float = MIN_SECONDS) -> float:
    for _ in range(WARMUP):
        run()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < MAX_RUNS and (
        len(samples) < MIN_RUNS or time.perf_counter() - started < min_seconds
    ):
        begin = time.perf_counter()
        run()
        samples.append((time.perf_counter() - begin) * 1000.0)
    return float(statistics.median(samples))


def time_layer(shape: LayerShape, *, threads: int, device: Device) -> float:
    """The p50 in ms of ``shape`` alone (its one-node model)."""
    session = _session(shape.model().SerializeToString(), threads, device)
    feed = shape.feed()
    return _p50(lambda: session.run(None, feed))


def time_models(
    models: Mapping[str, Path],
    feed: Mapping[str, np.ndarray],
    *,
    threads: int,
    device: Device,
    rounds: int = 7,
    seconds: float = 0.15,
) -> dict[str, float]:
    """The p50 in ms of each model on ``feed``: ``rounds`` turns of ``seconds`` each, models in turn."""
    sessions = {name: _session(path, threads, device) for name, path in models.items()}
    inputs = dict(feed)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        for _ in range(WARMUP):
            session.run(None, inputs)
    for _ in range(rounds):
        for name, session in sessions.items():
            started = time.perf_counter()
            while True:
                begin = time.perf_counter()
                session.run(None, inputs)
                samples[name].append((time.perf_counter() - begin) * 1000.0)
                if time.perf_counter() - started >= seconds and len(samples[name]) >= 2:
                    break
    return {name: float(statistics.median(values)) for name, values in samples.items()}
