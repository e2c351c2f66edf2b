"""Building report messages from measured dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.measure.latency import Latency
from prunekit_server.measure.quality import Quality, QualityRule
from prunekit_server.pruning import LayerPruneInfo
from prunekit_server.quantization import QuantizationDetails
from prunekit_server.report import (
    benchmark_protocol,
    build_report,
    latency_stats,
    layer_changes,
    model_file,
    model_stats,
    model_variant,
    synthetic_inputs_warning,
    unstructured_no_speedup,
    upstream_warnings,
    variant_flags,
    variant_warnings,
)
from prunekit_server.report.notes import quantization_info


def _latency(p50: float, *, interleaved: bool = True) -> Latency:
    return Latency(
        p50_ms=p50,
        p90_ms=p50 * 1.2,
        p99_ms=p50 * 1.5,
        mean_ms=p50 * 1.1,
        stdev_ms=0.1,
        min_ms=p50 * 0.9,
        throughput_per_s=2 / (p50 / 1000),
        batch_size=2,
        threads=1,
        warmup=3,
        iterations=20,
        runtime="onnxruntime 1.32.0",
        device="cpu",
        interleaved=interleaved,
    )


def _stats(p50: float, compressed: int, macs: int, quality: Quality | None = None) -> report_pb2.ModelStats:
    return model_stats(
        parameters=1000,
        nonzero_parameters=500 if quality else 1000,
        macs=macs,
        size_bytes=4000,
        compressed_size_bytes=compressed,
        latency=_latency(p50),
        quality=quality,
    )


GOOD = Quality(top1_agreement=1.0, cosine_similarity=0.999, max_abs_error=0.01, samples=8)
BAD = Quality(top1_agreement=0.875, cosine_similarity=0.95, max_abs_error=0.5, samples=8)


def test_latency_stats_copies_every_field() -> None:
    lat = _latency(2.0)
    stats = latency_stats(lat)
    for name in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "stdev_ms", "min_ms", "throughput_per_s"):
        assert getattr(stats, name) == pytest.approx(getattr(lat, name))
    assert (stats.batch_size, stats.threads, stats.warmup, stats.iterations) == (2, 1, 3, 20)
    assert (stats.runtime, stats.device) == ("onnxruntime 1.32.0", "cpu")


def test_baseline_stats_have_no_quality() -> None:
    assert not _stats(2.0, 100, 10).HasField("quality")
    stats = _stats(2.0, 100, 10, GOOD)
    assert stats.quality.samples == 8
    assert stats.quality.top1_agreement == 1.0


def test_variant_ratios_and_primary_file() -> None:
    baseline = _stats(2.0, 1000, 600)
    files = [
        model_file(model_pb2.MODEL_FORMAT_TORCHSCRIPT, "pruned.pt", "ab" * 32, 5000),
        model_file(model_pb2.MODEL_FORMAT_ONNX, "pruned.onnx", "cd" * 32, 4000),
    ]
    variant = model_variant("pruned", _stats(1.0, 400, 300, GOOD), files, baseline)
    assert variant.latency_speedup == pytest.approx(2.0)
    assert variant.compression_ratio == pytest.approx(2.5)
    assert variant.macs_reduction == pytest.approx(2.0)
    assert variant.format == model_pb2.MODEL_FORMAT_TORCHSCRIPT
    assert variant.sha256 == "ab" * 32
    assert variant.uri == ""
    assert [f.artifact for f in variant.files] == ["pruned.pt", "pruned.onnx"]
    with pytest.raises(ValueError, match="no files"):
        model_variant("pruned", _stats(1.0, 400, 300), [], baseline)


def test_layer_changes_sum_macs_of_shared_weights() -> None:
    layers = [
        LayerPruneInfo("conv", "Conv", "w", (4, 2), (4, 2), 8, 8, 8, 4),
        LayerPruneInfo("mm0", "MatMul", "s", (2, 2), (2, 2), 4, 4, 4, 2, shared_with=("mm1",)),
        LayerPruneInfo("fc", "Gemm", "f", (3,), (3,), 3, 3, 3, 3, skipped=True, skip_reason="ignored"),
    ]
    macs = {"conv": 100, "mm0": 10, "mm1": 20, "fc": 7}
    conv, shared, fc = layer_changes(layers, macs, {"conv": 100})
    assert (conv.name, conv.op_type, list(conv.shape_before), conv.sparsity) == ("conv", "Conv", [4, 2], 0.5)
    assert (conv.macs_before, conv.macs_after, conv.nonzero_before, conv.nonzero_after) == (100, 100, 8, 4)
    assert (shared.macs_before, shared.macs_after) == (30, 30)
    assert fc.skipped
    assert fc.sparsity == 0.0


def test_upstream_warnings_keep_their_codes() -> None:
    found = upstream_warnings(
        ["UNMAPPED_WEIGHT: x not written", "plain text"], "TORCHSCRIPT_WEIGHTS_UNMAPPED"
    )
    assert [(w.code, w.message) for w in found] == [
        ("UNMAPPED_WEIGHT", "x not written"),
        ("TORCHSCRIPT_WEIGHTS_UNMAPPED", "plain text"),
    ]


def test_slower_and_quality_warnings() -> None:
    baseline = _stats(2.0, 1000, 600)
    files = [model_file(model_pb2.MODEL_FORMAT_ONNX, "pruned.onnx", "00" * 32, 1)]
    fine = model_variant("pruned", _stats(2.1, 500, 600, GOOD), files, baseline)
    assert variant_warnings(fine, baseline) == []
    bad = model_variant("pruned", _stats(2.2, 500, 600, BAD), files, baseline)
    codes = {w.code: w.message for w in variant_warnings(bad, baseline)}
    assert set(codes) == {"SLOWER_THAN_BASELINE", "QUALITY_DROP"}
    assert "0.8750" in codes["QUALITY_DROP"]
    assert "0.9500" in codes["QUALITY_DROP"]


def test_build_report_assembles_everything() -> None:
    baseline = _stats(2.0, 1000, 600)
    files = [model_file(model_pb2.MODEL_FORMAT_ONNX, "pruned.onnx", "00" * 32, 1)]
    variant = model_variant("pruned", _stats(2.5, 500, 600, BAD), files, baseline)
    inputs = [model_pb2.InputSpec(name="input", shape=[2, 3], dtype=model_pb2.DATA_TYPE_FLOAT32)]
    protocol = benchmark_protocol(
        _latency(2.0), inputs=inputs, cpu_model="Some CPU", quality_inputs="8 synthetic samples"
    )
    assert (protocol.runtime, protocol.runtime_version) == ("onnxruntime", "1.32.0")
    assert protocol.execution_provider == "CPUExecutionProvider"
    assert protocol.interleaved
    assert not protocol.thread_spinning
    assert (protocol.threads, protocol.batch_size, protocol.warmup, protocol.iterations) == (1, 2, 3, 20)
    report = build_report(
        input_format=model_pb2.MODEL_FORMAT_ONNX,
        baseline=baseline,
        variants=[variant],
        layers=layer_changes([LayerPruneInfo("c", "Conv", "w", (2,), (2,), 2, 2, 2, 1)], {"c": 4}, {}),
        protocol=protocol,
        warnings=[unstructured_no_speedup("pruned"), synthetic_inputs_warning("8 synthetic samples")],
    )
    assert [w.code for w in report.warnings] == [
        "UNSTRUCTURED_NO_SPEEDUP",
        "SYNTHETIC_INPUTS",
        "SLOWER_THAN_BASELINE",
        "QUALITY_DROP",
    ]
    assert "compressed_size_bytes" in report.warnings[0].message
    assert report.input_format == model_pb2.MODEL_FORMAT_ONNX
    assert report.variants[0].name == "pruned"
    assert report.layers[0].macs_after == 4
    assert report.protocol.cpu_model == "Some CPU"


def _file() -> report_pb2.ModelFile:
    return model_file(model_pb2.MODEL_FORMAT_ONNX, "v.onnx", "ab" * 32, 100)


def _unstable(p50: float) -> Latency:
    return dataclasses.replace(_latency(p50), windows=9, stable=False, window_p50_ms=(p50, p50 * 2, p50))


def test_a_deliberately_slower_variant_is_flagged() -> None:
    base = _stats(10.0, 1000, 100)
    rule = QualityRule()
    slow = model_variant("pruned_fp16", _stats(10.6, 800, 100, GOOD), [_file()], base)
    borderline = model_variant("pruned_int8", _stats(10.4, 800, 100, GOOD), [_file()], base)
    assert report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE in variant_flags(slow, base, rule)
    assert report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE not in variant_flags(borderline, base, rule)
    assert slow.latency_speedup == pytest.approx(10.0 / 10.6)
    (warned,) = variant_warnings(slow, base, rule)
    assert warned.code == "SLOWER_THAN_BASELINE"
    assert "not an improvement" in warned.message
    report = build_report(
        input_format=model_pb2.MODEL_FORMAT_ONNX,
        baseline=base,
        variants=[slow, borderline],
        layers=[],
        protocol=report_pb2.BenchmarkProtocol(),
        rule=rule,
    )
    assert [w.code for w in report.warnings] == ["SLOWER_THAN_BASELINE"]


def test_flags_for_quality_selection_and_stability() -> None:
    base = _stats(10.0, 1000, 100)
    rule = QualityRule(min_top1_agreement=0.9, min_cosine_similarity=0.9)
    steady = dataclasses.replace(_latency(5.0), windows=3, stable=True, window_p50_ms=(5.0, 5.1, 4.9))
    good_stats = model_stats(
        parameters=1,
        nonzero_parameters=1,
        macs=1,
        size_bytes=1,
        compressed_size_bytes=1,
        latencies=[steady],
        quality=GOOD,
    )
    good = model_variant("a", good_stats, [_file()], base)
    assert variant_flags(good, base, rule, selected=True) == [
        report_pb2.VARIANT_FLAG_MEETS_QUALITY_RULE,
        report_pb2.VARIANT_FLAG_SELECTED,
    ]
    bad_stats = model_stats(
        parameters=1,
        nonzero_parameters=1,
        macs=1,
        size_bytes=1,
        compressed_size_bytes=1,
        latencies=[_unstable(5.0)],
        quality=BAD,
    )
    bad = model_variant("b", bad_stats, [_file()], base)
    assert variant_flags(bad, base, rule, selected=False) == [
        report_pb2.VARIANT_FLAG_BELOW_QUALITY_RULE,
        report_pb2.VARIANT_FLAG_NOT_SELECTED,
        report_pb2.VARIANT_FLAG_LATENCY_UNSTABLE,
    ]
    assert [w.code for w in variant_warnings(bad, base, rule)] == ["QUALITY_DROP"]
    assert variant_warnings(good, base, QualityRule(min_top1_agreement=1.0, min_cosine_similarity=1.0))


def test_every_latency_measurement_is_kept() -> None:
    stats = model_stats(
        parameters=1,
        nonzero_parameters=1,
        macs=1,
        size_bytes=1,
        compressed_size_bytes=1,
        latencies=[_unstable(2.0), dataclasses.replace(_latency(3.0), batch_size=8, peak_memory_bytes=99)],
    )
    assert stats.latency.p50_ms == 2.0
    assert [lat.batch_size for lat in stats.latencies] == [2, 8]
    assert stats.latencies[0].window_p50_ms == [2.0, 4.0, 2.0]
    assert (stats.latencies[0].windows, stats.latencies[0].stable) == (9, False)
    assert stats.latencies[1].peak_memory_bytes == 99


def test_quantization_info() -> None:
    details = QuantizationDetails(
        mode="static_int8",
        format="QDQ",
        tool="onnxruntime 1.32.0",
        activation_type="uint8",
        weight_type="int8",
        per_channel=True,
        calibration="percentile",
        calibration_samples=64,
        calibration_inputs="64 synthetic samples",
        percentile=99.9,
        excluded_nodes=("fc",),
    )
    info = quantization_info(details)
    assert info.mode == spec_pb2.QUANTIZE_MODE_STATIC_INT8
    assert info.calibration == spec_pb2.CALIBRATION_METHOD_PERCENTILE
    assert (info.calibration_samples, info.percentile, list(info.excluded_nodes)) == (64, 99.9, ["fc"])
    assert quantization_info(QuantizationDetails("fp16", "float16", "t")).mode == spec_pb2.QUANTIZE_MODE_FP16


def test_protocol_states_the_stability_rule_and_quality_rule() -> None:
    protocol = benchmark_protocol(
        _latency(5.0),
        inputs=[],
        cpu_model="cpu",
        quality_inputs="q",
        iterations=50,
        batch_sizes=[2, 8],
        max_seconds=30.0,
        stability_rule="windows...",
        stable=False,
        memory_method="VmHWM",
        quality_rule=QualityRule(0.98, 0.97),
        selection_rule="AUTO...",
    )
    assert (protocol.iterations, list(protocol.batch_sizes), protocol.max_seconds) == (50, [2, 8], 30.0)
    assert (protocol.stability_windows, protocol.stability_tolerance) == (3, 0.1)
    assert not protocol.stable
    assert protocol.quality_rule.min_top1_agreement == 0.98
    assert protocol.execution_provider == "CPUExecutionProvider"


def test_removed_layer_costs_no_macs() -> None:
    from prunekit_server.pruning import LayerPruneInfo
    from prunekit_server.report.stats import layer_changes

    removed = LayerPruneInfo(
        name="/block/conv",
        op_type="Conv",
        weight_name="block.conv.weight",
        shape_before=(8, 8, 3, 3),
        shape_after=(),
        parameters_before=576,
        parameters_after=0,
        nonzero_before=576,
        nonzero_after=0,
    )
    kept = LayerPruneInfo(
        name="/head/fc",
        op_type="Gemm",
        weight_name="fc.weight",
        shape_before=(10, 8),
        shape_after=(10, 8),
        parameters_before=80,
        parameters_after=80,
        nonzero_before=80,
        nonzero_after=80,
        skipped=True,
    )
    before = {"/block/conv": 1000, "/head/fc": 80}
    changes = layer_changes([removed, kept], before, {})
    assert [(c.macs_before, c.macs_after) for c in changes] == [(1000, 0), (80, 80)]
