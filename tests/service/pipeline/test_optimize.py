"""run_optimization end to end on real ONNX and TorchScript sample models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pipeline import OptimizationResult, run_optimization
from prunekit_server.pruning import weighted_layers
from tests.samples import write_sample_model
from tests.service.report_fields import REPORT_EXEMPT, unfilled

RATIO = 0.6
EXEMPT = {
    *REPORT_EXEMPT,
    "BenchmarkProtocol.selection_rule",  # AUTO quantization only
    "ModelVariant.quantization",  # quantized variants only
}


def _spec(ratio: float = RATIO, **prune: object) -> spec_pb2.OptimizationSpec:
    return spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=ratio, **prune),  # type: ignore[arg-type]
        benchmark=spec_pb2.BenchmarkSpec(batch_size=2, warmup=1, iterations=3, max_seconds=1.0),
        evaluation=spec_pb2.EvaluationSpec(samples=4, seed=5),
    )


class _Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        self.calls.append((stage, fraction, message))


def _run(
    model: Path, fmt: int, spec: spec_pb2.OptimizationSpec, workdir: Path
) -> tuple[OptimizationResult, _Progress]:
    progress = _Progress()
    return run_optimization(model, fmt, spec, workdir, progress), progress


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[OptimizationResult, _Progress]:
    root = tmp_path_factory.mktemp("onnx")
    write_sample_model(root / "model.onnx", "onnx", "cnn", width=16, image_size=16)
    return _run(root / "model.onnx", model_pb2.MODEL_FORMAT_ONNX, _spec(), root / "work")


@pytest.fixture(scope="module")
def ts_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[OptimizationResult, _Progress]:
    root = tmp_path_factory.mktemp("ts")
    write_sample_model(root / "model.pt", "torchscript", "cnn", width=16, image_size=16)
    spec = _spec()
    spec.inputs.add(name="x", shape=[2, 3, 16, 16], dtype=model_pb2.DATA_TYPE_FLOAT32)
    return _run(root / "model.pt", model_pb2.MODEL_FORMAT_TORCHSCRIPT, spec, root / "work")


def _sparsity(model: onnx.ModelProto) -> tuple[int, int]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [inits[n] for n in {layer.weight_name for layer in weighted_layers(model)}]
    return sum(int(np.count_nonzero(w == 0)) for w in weights), sum(w.size for w in weights)


@pytest.mark.parametrize("which", ["onnx_run", "ts_run"])
def test_report_is_complete(which: str, request: pytest.FixtureRequest) -> None:
    result, progress = request.getfixturevalue(which)
    report = result.report
    assert unfilled(report, EXEMPT) == []
    codes = [w.code for w in report.warnings]
    assert "UNSTRUCTURED_NO_SPEEDUP" in codes
    assert "SYNTHETIC_INPUTS" in codes
    (variant,) = report.variants
    assert variant.name == "pruned"
    assert variant.stats.compressed_size_bytes < report.baseline.compressed_size_bytes
    assert variant.compression_ratio > 1.0
    assert variant.stats.macs == report.baseline.macs
    assert variant.macs_reduction == 1.0
    assert variant.stats.parameters == report.baseline.parameters
    assert variant.stats.nonzero_parameters < report.baseline.nonzero_parameters
    assert variant.stats.quality.samples == 4
    protocol = report.protocol
    assert protocol.interleaved
    assert not protocol.thread_spinning
    assert (protocol.batch_size, protocol.warmup, protocol.iterations, protocol.threads) == (2, 1, 3, 1)
    assert list(protocol.batch_sizes) == [2]
    assert protocol.max_seconds == 1.0
    assert "windows of 3 timed runs" in protocol.stability_rule
    assert "VmHWM" in protocol.memory_method or "ru_maxrss" in protocol.memory_method
    assert protocol.quality_rule.min_top1_agreement == protocol.quality_rule.min_cosine_similarity == 0.99
    for stats in (report.baseline, variant.stats):
        lat = stats.latency
        assert lat.iterations == 3 * min(lat.windows, 3)
        assert len(lat.window_p50_ms) == lat.windows
        assert lat.peak_memory_bytes > 0
        assert stats.latencies[0] == lat
    assert "4 synthetic samples" in protocol.quality_inputs
    assert "seed 5" in protocol.quality_inputs
    assert [i.shape[0] for i in protocol.inputs] == [2]
    stages = [stage for stage, _, _ in progress.calls]
    assert stages[0] == "ingest"
    assert stages[-1] == "report"
    for stage in ("analyze", "prune", "evaluate", "benchmark"):
        assert stage in stages
    fractions = [fraction for _, fraction, _ in progress.calls]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


@pytest.mark.parametrize("which", ["onnx_run", "ts_run"])
def test_files_match_the_report(which: str, request: pytest.FixtureRequest) -> None:
    result, _ = request.getfixturevalue(which)
    variant = result.report.variants[0]
    assert set(result.artifacts) == {f.artifact for f in variant.files} | {"report.md", "report.html"}
    markdown = result.artifacts["report.md"].read_text()
    assert "| p50 ms |" in markdown
    assert "`pruned`" in markdown
    assert result.artifacts["report.html"].read_text().startswith("<!DOCTYPE html>")
    for f in variant.files:
        path = result.artifacts[f.artifact]
        assert path.is_file()
        assert f.size_bytes == path.stat().st_size
        assert f.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert f.uri == ""
    assert variant.sha256 == variant.files[0].sha256
    assert variant.format == result.report.input_format == variant.files[0].format


@pytest.mark.parametrize("which", ["onnx_run", "ts_run"])
def test_pruned_onnx_runs_with_the_requested_sparsity(which: str, request: pytest.FixtureRequest) -> None:
    result, _ = request.getfixturevalue(which)
    path = result.artifacts["pruned.onnx"]
    zeros, total = _sparsity(onnx.load(str(path)))
    assert zeros == round(RATIO * total)
    report = result.report
    assert sum(c.nonzero_before - c.nonzero_after for c in report.layers) == zeros
    assert sum(c.parameters_before for c in report.layers) == total
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (out,) = session.run(None, {name: np.ones((2, 3, 16, 16), np.float32)})
    assert out.shape == (2, 10)
    assert np.isfinite(out).all()


def test_torchscript_files_are_timed_with_torch(ts_run: tuple[OptimizationResult, _Progress]) -> None:
    report = ts_run[0].report
    for stats in (report.baseline, report.variants[0].stats):
        runtimes = [lat.runtime.split()[0] for lat in stats.latencies]
        assert runtimes == ["onnxruntime", "torch"]
        torch_lat = stats.latencies[1]
        assert torch_lat.p50_ms > 0
        assert torch_lat.batch_size == 2
        assert torch_lat.execution_provider == ""


def test_torchscript_artifact_matches_pruned_onnx(ts_run: tuple[OptimizationResult, _Progress]) -> None:
    result, _ = ts_run
    assert result.report.input_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT
    assert [f.artifact for f in result.report.variants[0].files] == ["pruned.pt", "pruned.onnx"]
    module = torch.jit.load(str(result.artifacts["pruned.pt"]))  # type: ignore[no-untyped-call]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(result.artifacts["pruned.onnx"]), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    conv_weights = [p for n, p in module.named_parameters() if p.dim() == 4]
    zeros = sum(int((p == 0).sum()) for p in conv_weights)
    assert zeros > 0.5 * sum(p.numel() for p in conv_weights)


def test_ignore_and_per_layer_reach_the_report(tmp_path: Path) -> None:
    write_sample_model(tmp_path / "m.onnx", "onnx", "mlp")
    spec = _spec(0.5, scope=spec_pb2.PRUNE_SCOPE_PER_LAYER, ignore=["/net/net.4/*"])
    result, _ = _run(tmp_path / "m.onnx", model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "work")
    by_name = {c.name: c for c in result.report.layers}
    assert by_name["/net/net.4/Gemm"].skipped
    assert by_name["/net/net.4/Gemm"].sparsity == 0.0
    assert by_name["/net/net.0/Gemm"].sparsity == 0.5
    assert by_name["/net/net.0/Gemm"].macs_before > 0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: setattr(s.benchmark, "iterations", -1), "spec.benchmark.iterations"),
        (lambda s: setattr(s.evaluation, "samples", -3), "spec.evaluation.samples"),
        (lambda s: setattr(s.prune, "method", spec_pb2.PRUNE_METHOD_UNSPECIFIED), "spec.prune.method"),
        (lambda s: setattr(s.prune, "ratio", 1.5), "spec.prune.ratio"),
        (lambda s: s.finetune.SetInParent(), "spec.finetune"),
    ],
)
def test_impossible_specs_are_rejected(mutate: object, field: str, tmp_path: Path) -> None:
    write_sample_model(tmp_path / "m.onnx", "onnx", "mlp")
    spec = _spec()
    mutate(spec)  # type: ignore[operator]
    with pytest.raises(ServiceError) as err:
        _run(tmp_path / "m.onnx", model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "work")
    assert err.value.reason == "INVALID_SPEC"
    assert field in [v.field for v in err.value.violations]
