"""Latency statistics, the stability rule, session options and execution-provider selection."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from prunekit_server.measure.latency import (
    CUDA_PROVIDER,
    PROVIDER,
    TENSORRT_PROVIDER,
    cpu_model,
    execution_providers,
    is_stable,
    percentile,
    session_options,
    stability_rule,
    summarize,
)


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


@pytest.mark.parametrize(
    ("windows", "stable"),
    [
        ([10.0, 10.0, 10.0], True),
        ([10.0, 10.9, 9.2], True),  # mean 10.033: every value within 10 %
        ([10.0, 11.5, 9.0], False),  # 11.5 is 13.9 % above the mean
        ([10.0, 10.0], False),  # fewer than three windows
        ([30.0, 10.0, 10.2, 9.9], True),  # only the last three count
        ([10.0, 10.0, 14.0], False),
        ([0.0, 0.0, 0.0], False),  # no time measured is never stable
    ],
)
def test_stability_rule(windows: list[float], stable: bool) -> None:
    assert is_stable(windows) is stable


def test_summary_carries_windows_and_memory() -> None:
    lat = summarize(
        [1.0, 2.0, 3.0],
        batch_size=1,
        threads=2,
        warmup=1,
        interleaved=True,
        window_p50_ms=[2.0, 2.1, 1.95],
        peak_memory_bytes=1234,
        execution_provider="X",
        runtime="torch 2.13.0",
    )
    assert (lat.windows, lat.stable, lat.peak_memory_bytes) == (3, True, 1234)
    assert lat.window_p50_ms == (2.0, 2.1, 1.95)
    assert (lat.runtime, lat.execution_provider) == ("torch 2.13.0", "X")
    text = stability_rule(50, 30.0)
    assert "windows of 50 timed runs" in text
    assert "last 3 windows" in text
    assert "10%" in text
    assert "30 s" in text


def test_provider_selection_by_device() -> None:
    assert execution_providers("cpu", [PROVIDER]) == [PROVIDER]
    assert execution_providers("cpu", [TENSORRT_PROVIDER, CUDA_PROVIDER, PROVIDER]) == [PROVIDER]
    assert execution_providers("cuda", [CUDA_PROVIDER, PROVIDER]) == [CUDA_PROVIDER, PROVIDER]
    assert execution_providers("cuda", [TENSORRT_PROVIDER, CUDA_PROVIDER, PROVIDER]) == [
        TENSORRT_PROVIDER,
        CUDA_PROVIDER,
        PROVIDER,
    ]
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        execution_providers("cuda", [PROVIDER])
    with pytest.raises(ValueError, match="unknown device"):
        execution_providers("tpu", [PROVIDER])  # type: ignore[arg-type]


def test_provider_selection_defaults_to_this_build() -> None:
    available = ort.get_available_providers()
    assert execution_providers("cpu") == [PROVIDER]
    if CUDA_PROVIDER in available:
        assert execution_providers("cuda")[-2:] == [CUDA_PROVIDER, PROVIDER]
    else:
        with pytest.raises(ValueError, match=CUDA_PROVIDER):
            execution_providers("cuda")


def test_cpu_model_names_something() -> None:
    name = cpu_model()
    assert isinstance(name, str)
    assert name.strip()
