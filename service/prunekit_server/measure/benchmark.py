"""Timing models side by side: warm-up, peak memory, interleaved windows until stable.

Protocol of :func:`benchmark`, for a set of models on the same inputs:

1. Each model in turn is prepared (its session created) and warmed up
   ``warmup`` times inside a :class:`~.memory.PeakMemory` block: its peak
   memory is what creation and warm-up added.
2. Windows: ``iterations`` rounds, each timing every model once in the same
   order (A B A B ...), so drift of the machine hits all models alike. Each
   run is timed with ``time.perf_counter_ns``.
3. Windows repeat until every model is stable (:func:`.latency.is_stable`:
   the p50 of each of the last three windows within 10 % of their mean) or
   ``max_seconds`` have passed since the first window; at least one window
   always runs, and a window is never cut short (so slow models can overrun
   the budget by up to one window). Statistics come from the last three
   windows (all, when fewer).

Runtimes: ONNX Runtime (:func:`onnx_factory`) and torch for TorchScript files
(:func:`torch_factory`). Mixing runtimes in one call is possible; the pipeline
times torch models as a group of their own so torch's thread pool does not
disturb ONNX Runtime's runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .latency import STABILITY_WINDOWS, Device, Latency, is_stable, onnx_session, percentile, runtime_name
from .latency import summarize as _summarize
from .memory import PeakMemory


@dataclass(frozen=True)
class Timed:
    """A prepared model: ``run()`` does one inference; the rest describes where it runs."""

    run: Callable[[], object]
    runtime: str
    execution_provider: str
    device: str


Factory = Callable[[], Timed]
"""Prepares one model (creates its session) and returns it ready to run."""


@dataclass(frozen=True)
class BenchmarkResult:
    """One :class:`Latency` per model (keys as given) and how peak memory was measured."""

    latencies: dict[str, Latency]
    memory_method: str


def onnx_factory(
    model: Path, feed: Mapping[str, np.ndarray], *, threads: int, device: Device = "cpu"
) -> Factory:
    """An ONNX Runtime session on ``device`` running ``feed``."""
    inputs = dict(feed)

    def create() -> Timed:
        session = onnx_session(model, threads=threads, device=device)
        providers = list(session.get_providers()) if hasattr(session, "get_providers") else []
        return Timed(
            run=lambda: session.run(None, inputs),
            runtime=runtime_name(),
            execution_provider=providers[0] if providers else "",
            device=device,
        )

    return create


def torch_factory(
    load: Callable[[], Any], args: Sequence[np.ndarray], *, threads: int, device: Device = "cpu"
) -> Factory:
    """A torch module (from ``load()``, e.g. a TorchScript file) called on ``args`` in inference mode.

    ``torch.set_num_threads(threads)`` is applied first; on ``cuda`` the module
    and inputs move to the GPU and every run ends with a synchronisation.
    """

    def create() -> Timed:
        import torch

        torch.set_num_threads(threads)
        target = torch.device("cuda" if device == "cuda" else "cpu")
        module = load().to(target)
        tensors = [torch.from_numpy(np.asarray(a, order="C")).to(target) for a in args]

        def run() -> None:
            with torch.inference_mode():
                module(*tensors)
            if device == "cuda":
                torch.cuda.synchronize()

        return Timed(run=run, runtime=f"torch {torch.__version__}", execution_provider="", device=device)

    return create


def benchmark(
    factories: Mapping[str, Factory],
    *,
    batch_size: int,
    threads: int,
    warmup: int,
    iterations: int,
    max_seconds: float = 0.0,
    on_window: Callable[[int], None] | None = None,
) -> BenchmarkResult:
    """Time every model under the module's protocol; ``batch_size`` and ``threads`` are reported as given.

    ``on_window(n)`` is called after the n-th window. Raises ``ValueError``
    for no models or impossible counts.
    """
    if not factories:
        raise ValueError("no models to benchmark")
    if batch_size < 1 or iterations < 1 or warmup < 0 or max_seconds < 0:
        raise ValueError(
            "need batch_size >= 1, iterations >= 1, warmup >= 0, max_seconds >= 0; got "
            f"{batch_size}, {iterations}, {warmup}, {max_seconds}"
        )
    prepared: dict[str, Timed] = {}
    memory: dict[str, int] = {}
    method = ""
    for index, (name, factory) in enumerate(factories.items()):
        with PeakMemory(collect=index == 0) as peak:
            timed = factory()
            for _ in range(warmup):
                timed.run()
        prepared[name], memory[name], method = timed, peak.bytes, peak.method
    windows: dict[str, list[list[float]]] = {name: [] for name in prepared}
    start = time.monotonic()
    while True:
        window: dict[str, list[float]] = {name: [] for name in prepared}
        for _ in range(iterations):
            for name, timed in prepared.items():
                begin = time.perf_counter_ns()
                timed.run()
                window[name].append((time.perf_counter_ns() - begin) / 1e6)
        for name, samples in window.items():
            windows[name].append(samples)
        if on_window is not None:
            on_window(len(windows[next(iter(windows))]))
        p50s = {name: _window_p50s(runs) for name, runs in windows.items()}
        if all(is_stable(values) for values in p50s.values()):
            break
        if time.monotonic() - start >= max_seconds:
            break
    interleaved = len(prepared) > 1
    latencies = {}
    for name, runs in windows.items():
        timed = prepared[name]
        latencies[name] = _summarize(
            [ms for run in runs[-STABILITY_WINDOWS:] for ms in run],
            batch_size=batch_size,
            threads=threads,
            warmup=warmup,
            interleaved=interleaved,
            runtime=timed.runtime,
            device=timed.device,
            execution_provider=timed.execution_provider,
            window_p50_ms=p50s[name],
            peak_memory_bytes=memory[name],
        )
    return BenchmarkResult(latencies=latencies, memory_method=method)


def _window_p50s(runs: Sequence[Sequence[float]]) -> list[float]:
    return [percentile(sorted(run), 50) for run in runs]


def benchmark_onnx(
    models: Mapping[str, Path],
    feed: dict[str, np.ndarray],
    *,
    batch_size: int,
    threads: int,
    warmup: int,
    iterations: int,
    max_seconds: float = 0.0,
    device: Device = "cpu",
) -> dict[str, Latency]:
    """:func:`benchmark` of ONNX models on one ``feed`` (which must already have that batch)."""
    factories = {
        name: onnx_factory(path, feed, threads=threads, device=device) for name, path in models.items()
    }
    result = benchmark(
        factories,
        batch_size=batch_size,
        threads=threads,
        warmup=warmup,
        iterations=iterations,
        max_seconds=max_seconds,
    )
    return result.latencies
