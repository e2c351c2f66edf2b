"""The benchmark protocol: warm-up, interleaving, windows until stable or out of time, memory, runtimes.

Window logic runs on a scripted clock (deterministic); the real-session tests check fields, not speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from prunekit_server.measure import benchmark as bm
from prunekit_server.measure.benchmark import Timed, benchmark, benchmark_onnx, onnx_factory, torch_factory
from tests.samples import sample_module, write_sample_model


class _Clock:
    """``perf_counter_ns`` and ``monotonic`` driven by the runs: each run advances time by its duration."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.ns / 1e9


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(bm, "time", fake)
    return fake


def _scripted(clock: _Clock, durations_ms: Iterator[float], log: list[str], name: str) -> Callable[[], Timed]:
    def run() -> None:
        log.append(name)
        clock.ns += int(next(durations_ms) * 1e6)

    return lambda: Timed(run=run, runtime="fake 1", execution_provider="FakeEP", device="cpu")


def test_windows_stop_once_three_agree(clock: _Clock) -> None:
    log: list[str] = []
    # a: 5 ms then steady 2 ms; b: steady 1 ms. Window 1 of a is an outlier, windows 2-4 agree.
    a = iter([9.0] * 2 + [5.0] * 4 + [2.0] * 1000)
    b = iter([1.0] * 1000)
    result = benchmark(
        {"a": _scripted(clock, a, log, "a"), "b": _scripted(clock, b, log, "b")},
        batch_size=1,
        threads=1,
        warmup=2,
        iterations=4,
        max_seconds=60.0,
    )
    lat_a, lat_b = result.latencies["a"], result.latencies["b"]
    assert log[:4] == ["a", "a", "b", "b"]  # warm-up, model after model
    assert log[4:12] == ["a", "b"] * 4  # then interleaved
    assert lat_a.window_p50_ms == (5.0, 2.0, 2.0, 2.0)
    assert (lat_a.windows, lat_a.stable, lat_a.iterations) == (4, True, 12)  # the last three windows
    assert lat_a.p50_ms == lat_a.p99_ms == 2.0
    assert (lat_b.windows, lat_b.stable, lat_b.p50_ms) == (4, True, 1.0)
    assert lat_a.interleaved
    assert (lat_a.runtime, lat_a.execution_provider, lat_a.warmup) == ("fake 1", "FakeEP", 2)
    assert result.memory_method


def test_windows_stop_when_the_budget_ends(clock: _Clock) -> None:
    log: list[str] = []
    # every window 30 % slower than the last: never stable
    durations = iter([10.0 * 1.3 ** (i // 5) for i in range(10_000)])
    result = benchmark(
        {"drift": _scripted(clock, durations, log, "drift")},
        batch_size=2,
        threads=1,
        warmup=0,
        iterations=5,
        max_seconds=1.0,
    )
    lat = result.latencies["drift"]
    assert not lat.stable
    assert sum(lat.window_p50_ms[:-1]) * 5 < 1000.0 <= sum(lat.window_p50_ms) * 5  # stopped at the budget
    assert lat.windows == len(lat.window_p50_ms) >= 3
    assert lat.iterations == 15
    assert not lat.interleaved
    assert lat.throughput_per_s == pytest.approx(2 / (lat.p50_ms / 1000))


def test_zero_budget_runs_one_window(clock: _Clock) -> None:
    log: list[str] = []
    result = benchmark(
        {"a": _scripted(clock, iter([1.0] * 100), log, "a")},
        batch_size=1,
        threads=1,
        warmup=1,
        iterations=7,
    )
    lat = result.latencies["a"]
    assert (lat.windows, lat.iterations, lat.stable) == (1, 7, False)
    assert len(log) == 8


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="no models"):
        benchmark({}, batch_size=1, threads=1, warmup=0, iterations=1)
    factory = _scripted(_Clock(), iter([1.0]), [], "a")
    with pytest.raises(ValueError, match="iterations"):
        benchmark({"a": factory}, batch_size=1, threads=1, warmup=0, iterations=0)
    with pytest.raises(ValueError, match="max_seconds"):
        benchmark({"a": factory}, batch_size=1, threads=1, warmup=0, iterations=1, max_seconds=-1)


def test_peak_memory_of_each_model() -> None:
    held: list[np.ndarray] = []

    def hungry() -> Timed:
        held.append(np.ones(48 << 20, dtype=np.uint8))  # 48 MiB, touched
        return Timed(run=lambda: None, runtime="x", execution_provider="", device="cpu")

    def frugal() -> Timed:
        return Timed(run=lambda: None, runtime="x", execution_provider="", device="cpu")

    result = benchmark({"hungry": hungry, "frugal": frugal}, batch_size=1, threads=1, warmup=1, iterations=1)
    assert result.latencies["hungry"].peak_memory_bytes >= 40 << 20
    assert result.latencies["frugal"].peak_memory_bytes < 8 << 20


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    write_sample_model(root / "a.onnx", "onnx", "mlp", seed=0)
    write_sample_model(root / "b.onnx", "onnx", "mlp", seed=1)
    return {"a": root / "a.onnx", "b": root / "b.onnx"}


def _feed(batch: int = 2) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).standard_normal((batch, 64)).astype(np.float32)}


def test_real_sessions(models: dict[str, Path]) -> None:
    result = benchmark_onnx(
        models, _feed(2), batch_size=2, threads=1, warmup=2, iterations=7, max_seconds=0.5
    )
    assert set(result) == {"a", "b"}
    for lat in result.values():
        assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms
        assert lat.mean_ms > 0
        assert lat.stdev_ms >= 0
        assert (lat.batch_size, lat.threads, lat.warmup) == (2, 1, 2)
        assert lat.iterations == 7 * min(lat.windows, 3)
        assert len(lat.window_p50_ms) == lat.windows >= 1
        assert lat.runtime == f"onnxruntime {ort.__version__}"
        assert (lat.device, lat.execution_provider) == ("cpu", "CPUExecutionProvider")
        assert lat.interleaved


def test_real_sessions_are_interleaved_after_warmup(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real = bm.onnx_session

    class Recording:
        def __init__(self, path: Path, threads: int, device: Any) -> None:
            self.session = real(path, threads=threads, device=device)
            self.tag = path.stem

        def get_providers(self) -> list[str]:
            return list(self.session.get_providers())

        def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
            order.append(self.tag)
            return self.session.run(names, feed)

    monkeypatch.setattr(bm, "onnx_session", lambda path, *, threads, device: Recording(path, threads, device))
    benchmark_onnx(models, _feed(1), batch_size=1, threads=1, warmup=3, iterations=4)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a", "b"] * 4


def test_torch_runtime_times_torchscript(tmp_path: Path) -> None:
    module = sample_module("mlp")
    traced = torch.jit.trace(module, torch.zeros(1, 64))  # type: ignore[no-untyped-call]
    path = tmp_path / "m.pt"
    torch.jit.save(traced, str(path))
    x = np.zeros((3, 64), np.float32)
    factories = {
        "ts": torch_factory(lambda: torch.jit.load(str(path)), [x], threads=1),  # type: ignore[no-untyped-call]
        "onnx": onnx_factory(_write_onnx(tmp_path), {"input": x}, threads=1),
    }
    result = benchmark(factories, batch_size=3, threads=1, warmup=1, iterations=3)
    ts = result.latencies["ts"]
    assert ts.runtime == f"torch {torch.__version__}"
    assert ts.execution_provider == ""
    assert ts.p50_ms > 0
    assert result.latencies["onnx"].runtime.startswith("onnxruntime")


def _write_onnx(root: Path) -> Path:
    path = root / "m.onnx"
    write_sample_model(path, "onnx", "mlp")
    return path
