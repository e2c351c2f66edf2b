"""run_optimization with quantization: AUTO on pruned and original models, quantize-only, flags."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.measure import benchmark as bm
from prunekit_server.measure.quality import Quality, QualityRule
from prunekit_server.pipeline import OptimizationResult, run_optimization
from prunekit_server.quantization import Candidate, select_fastest
from tests.samples import sample_module, write_sample_model
from tests.service.report_fields import REPORT_EXEMPT, unfilled

ONNX = model_pb2.MODEL_FORMAT_ONNX
SLOWER = report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE
SELECTED = report_pb2.VARIANT_FLAG_SELECTED
NOT_SELECTED = report_pb2.VARIANT_FLAG_NOT_SELECTED
AUTO_NAMES = [
    "pruned",
    "pruned_int8",
    "pruned_int8_dynamic",
    "pruned_fp16",
    "original_int8",
    "original_int8_dynamic",
    "original_fp16",
]


def _bench(**kwargs: Any) -> spec_pb2.BenchmarkSpec:
    return spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.3, **kwargs)


def _run(model: Path, spec: spec_pb2.OptimizationSpec, workdir: Path) -> OptimizationResult:
    stages: list[str] = []
    result = run_optimization(model, ONNX, spec, workdir, lambda stage, _f, _m: stages.append(stage))
    assert stages[-1] == "report"
    if spec.HasField("quantize") and spec.quantize.mode != spec_pb2.QUANTIZE_MODE_NONE:
        assert "quantize" in stages
    return result


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=8, image_size=16)
    return path


@pytest.fixture(scope="module")
def auto_run(cnn: Path, tmp_path_factory: pytest.TempPathFactory) -> OptimizationResult:
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5),
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_AUTO, include_original=True, calibration_samples=8
        ),
        benchmark=_bench(batch_sizes=[1, 2]),
        evaluation=spec_pb2.EvaluationSpec(samples=8, seed=3),
    )
    return _run(cnn, spec, tmp_path_factory.mktemp("auto") / "work")


def test_auto_reports_every_candidate(auto_run: OptimizationResult) -> None:
    report = auto_run.report
    assert [v.name for v in report.variants] == AUTO_NAMES
    modes = {
        "int8": spec_pb2.QUANTIZE_MODE_STATIC_INT8,
        "int8_dynamic": spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8,
        "fp16": spec_pb2.QUANTIZE_MODE_FP16,
    }
    for variant in report.variants:
        source, _, suffix = variant.name.partition("_")
        assert variant.source == source
        if suffix:
            assert variant.quantization.mode == modes[suffix]
            assert variant.format == model_pb2.MODEL_FORMAT_ONNX
        else:
            assert not variant.HasField("quantization")
        assert variant.stats.quality.samples == 8
        assert [lat.batch_size for lat in variant.stats.latencies] == [1, 2]
        assert variant.stats.macs == report.baseline.macs  # unstructured pruning and quantization keep MACs
    static = report.variants[1].quantization
    assert (static.format, static.activation_type, static.weight_type) == ("QDQ", "uint8", "int8")
    assert static.calibration == spec_pb2.CALIBRATION_METHOD_MINMAX
    assert static.calibration_samples == 8
    assert "seed 4" in static.calibration_inputs  # not the evaluation's seed
    codes = {w.code for w in report.warnings}
    assert {"SYNTHETIC_INPUTS", "SYNTHETIC_CALIBRATION", "UNSTRUCTURED_NO_SPEEDUP"} <= codes
    assert "AUTO" in report.protocol.selection_rule
    assert list(report.protocol.batch_sizes) == [1, 2]
    assert unfilled(report, {*REPORT_EXEMPT, "OptimizationReport.variants[0].quantization"}) == []


def test_auto_keeps_the_fastest_candidate_meeting_the_rule(auto_run: OptimizationResult) -> None:
    report = auto_run.report
    rule = QualityRule(
        report.protocol.quality_rule.min_top1_agreement, report.protocol.quality_rule.min_cosine_similarity
    )
    by_name = {v.name: v for v in report.variants}
    codes = [w.code for w in report.warnings]

    def quality(stats: report_pb2.ModelStats) -> Quality:
        q = stats.quality
        return Quality(q.top1_agreement, q.cosine_similarity, q.max_abs_error, q.samples)

    for source, plain in (("pruned", "pruned"), ("original", "baseline")):
        members = [v for v in report.variants if v.source == source]
        plain_stats = by_name[plain].stats if plain in by_name else report.baseline
        plain_quality = quality(plain_stats) if plain in by_name else Quality(1.0, 1.0, 0.0, 8)
        candidates = [Candidate(plain, plain_stats.latency.p50_ms, plain_quality)]
        candidates += [
            Candidate(v.name, v.stats.latency.p50_ms, quality(v.stats)) for v in members if v.name != plain
        ]
        winner = select_fastest(candidates, rule)
        selected = [v.name for v in members if SELECTED in v.flags]
        if winner == "baseline":
            assert selected == []
            assert "AUTO_KEPT_UNQUANTIZED" in codes
        else:
            assert selected == [winner]
        for v in members:
            assert (SELECTED in v.flags) != (NOT_SELECTED in v.flags)
            if SELECTED in v.flags:
                assert rule.met_by(quality(v.stats))
                assert all(v.stats.latency.p50_ms <= c.p50_ms for c in candidates if rule.met_by(c.quality))


def test_slower_variants_are_flagged_and_warned(auto_run: OptimizationResult) -> None:
    report = auto_run.report
    base = report.baseline.latency.p50_ms
    warned = {w.message.split("'")[1] for w in report.warnings if w.code == "SLOWER_THAN_BASELINE"}
    for variant in report.variants:
        slower = variant.stats.latency.p50_ms > base * 1.05
        assert (SLOWER in variant.flags) == slower, variant.name
        assert (variant.name in warned) == slower
        assert variant.latency_speedup == pytest.approx(base / variant.stats.latency.p50_ms)


def test_every_variant_file_is_an_artifact_ort_runs(auto_run: OptimizationResult) -> None:
    names = {f.artifact for v in auto_run.report.variants for f in v.files}
    assert set(auto_run.artifacts) == names | {"report.md", "report.html"}
    for variant in auto_run.report.variants:
        (file,) = variant.files
        path = auto_run.artifacts[file.artifact]
        assert file.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {"input": np.ones((2, 3, 16, 16), np.float32)})
        assert out.shape == (2, 10)


def test_quantize_only_quantizes_the_original(tmp_path: Path) -> None:
    write_sample_model(tmp_path / "mlp.onnx", "onnx", "mlp")
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8,
            calibration=spec_pb2.CALIBRATION_METHOD_ENTROPY,
            calibration_samples=6,
        ),
        benchmark=_bench(),
        evaluation=spec_pb2.EvaluationSpec(samples=4, min_top1_agreement=0.5, min_cosine_similarity=0.5),
    )
    report = _run(tmp_path / "mlp.onnx", spec, tmp_path / "work").report
    (variant,) = report.variants
    assert (variant.name, variant.source) == ("original_int8", "original")
    assert variant.quantization.calibration == spec_pb2.CALIBRATION_METHOD_ENTROPY
    assert report.variants[0].stats.quality.samples == 4
    assert report.protocol.quality_rule.min_top1_agreement == 0.5
    assert report.layers == []
    assert report.protocol.selection_rule == ""
    assert report_pb2.VARIANT_FLAG_MEETS_QUALITY_RULE in variant.flags
    assert not {SELECTED, NOT_SELECTED} & set(variant.flags)
    codes = {w.code for w in report.warnings}
    assert "UNSTRUCTURED_NO_SPEEDUP" not in codes
    assert "SYNTHETIC_CALIBRATION" in codes


def test_a_deliberately_slowed_variant_is_flagged_and_never_selected(
    cnn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bm.onnx_session

    class Slowed:
        """The fp16 model's session, made genuinely slower: every run also sleeps 3 ms."""

        def __init__(self, session: Any) -> None:
            self.session = session

        def get_providers(self) -> list[str]:
            return list(self.session.get_providers())

        def run(self, names: Any, feed: Any) -> Any:
            import time

            time.sleep(0.003)
            return self.session.run(names, feed)

    def session(path: Path, *, threads: int, device: Any) -> Any:
        made = real(path, threads=threads, device=device)
        return Slowed(made) if path.name == "original_fp16.onnx" else made

    monkeypatch.setattr(bm, "onnx_session", session)
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_AUTO, candidates=[spec_pb2.QUANTIZE_MODE_FP16]
        ),
        benchmark=_bench(),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )
    report = _run(cnn, spec, tmp_path / "work").report
    (variant,) = report.variants
    assert variant.name == "original_fp16"
    assert variant.stats.latency.p50_ms >= 3.0
    assert variant.latency_speedup < 1.0
    assert SLOWER in variant.flags
    assert NOT_SELECTED in variant.flags
    codes = [w.code for w in report.warnings]
    assert "SLOWER_THAN_BASELINE" in codes
    assert "AUTO_KEPT_UNQUANTIZED" in codes


def test_fixed_batch_models_measure_only_the_primary_batch(tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(sample_module("mlp"), (torch.zeros(1, 64),), str(path), input_names=["x"], dynamo=False)
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_FP16),
        benchmark=_bench(batch_sizes=[1, 4]),
        evaluation=spec_pb2.EvaluationSpec(samples=2),
    )
    report = _run(path, spec, tmp_path / "work").report
    assert [lat.batch_size for lat in report.baseline.latencies] == [1]
    assert "BATCH_SIZE_NOT_MEASURED" in {w.code for w in report.warnings}
    assert list(report.protocol.batch_sizes) == [1, 4]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this ONNX Runtime has a CUDA provider"
)
def test_cuda_without_a_cuda_runtime_is_an_invalid_spec(cnn: Path, tmp_path: Path) -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_FP16),
        benchmark=_bench(device=spec_pb2.DEVICE_CUDA),
    )
    with pytest.raises(ServiceError) as err:
        run_optimization(cnn, ONNX, spec, tmp_path / "work", lambda *_: None)
    assert err.value.reason == "INVALID_SPEC"
    (violation,) = err.value.violations
    assert violation.field == "spec.benchmark.device"
    assert "CUDAExecutionProvider" in violation.description
