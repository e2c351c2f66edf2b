"""The latency protocol: fields, interleaving, percentiles. No timing assertions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from prunekit_server.measure import latency
from prunekit_server.measure.latency import (
    benchmark_onnx,
    cpu_model,
    percentile,
    session_options,
    summarize,
)
from prunekit_server.samples import write_sample_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lat")
    write_sample_model(root / "a.onnx", "onnx", "mlp", seed=0)
    write_sample_model(root / "b.onnx", "onnx", "mlp", seed=1)
    return {"a": root / "a.onnx", "b": root / "b.onnx"}


def _feed(batch: int = 2) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).standard_normal((batch, 64)).astype(np.float32)}


def test_fields_are_sane(models: dict[str, Path]) -> None:
    result = benchmark_onnx(models, _feed(2), batch_size=2, threads=1, warmup=2, iterations=7)
    assert set(result) == {"a", "b"}
    for lat in result.values():
        assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms
        assert lat.mean_ms > 0
        assert lat.stdev_ms >= 0
        assert lat.throughput_per_s == pytest.approx(2 / (lat.p50_ms / 1000))
        assert (lat.batch_size, lat.threads, lat.warmup, lat.iterations) == (2, 1, 2, 7)
        assert lat.runtime == f"onnxruntime {ort.__version__}"
        assert lat.device == "cpu"
        assert lat.interleaved


def test_single_model_is_not_interleaved(models: dict[str, Path]) -> None:
    (lat,) = benchmark_onnx(
        {"a": models["a"]}, _feed(1), batch_size=1, threads=1, warmup=0, iterations=1
    ).values()
    assert not lat.interleaved
    assert lat.iterations == 1
    assert lat.stdev_ms == 0.0


def test_runs_are_interleaved_after_warmup(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real = latency.cpu_session

    class Recording:
        def __init__(self, path: Path, threads: int) -> None:
            self.session = real(path, threads=threads)
            self.tag = path.stem

        def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
            order.append(self.tag)
            return self.session.run(names, feed)

    monkeypatch.setattr(latency, "cpu_session", lambda path, *, threads: Recording(path, threads))
    benchmark_onnx(models, _feed(1), batch_size=1, threads=1, warmup=3, iterations=4)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a", "b"] * 4


def test_session_options_follow_the_protocol() -> None:
    opts = session_options(2)
    assert opts.intra_op_num_threads == 2
    assert opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match="threads"):
        session_options(0)


def test_nearest_rank_percentiles() -> None:
    samples = [float(v) for v in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 90) == 90.0
    assert percentile(samples, 99) == 99.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    lat = summarize(list(reversed(samples)), batch_size=4, threads=1, warmup=0, interleaved=True)
    assert (lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.min_ms) == (50.0, 90.0, 99.0, 1.0)
    assert lat.mean_ms == pytest.approx(50.5)
    assert lat.throughput_per_s == pytest.approx(4 / 0.05)
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_bad_arguments_are_rejected(models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="no models"):
        benchmark_onnx({}, _feed(), batch_size=1, threads=1, warmup=0, iterations=1)
    with pytest.raises(ValueError, match="iterations"):
        benchmark_onnx(models, _feed(), batch_size=1, threads=1, warmup=0, iterations=0)


def test_cpu_model_names_something() -> None:
    name = cpu_model()
    assert isinstance(name, str)
    assert name.strip()
