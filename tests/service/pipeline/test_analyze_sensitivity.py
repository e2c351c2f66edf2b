"""Sensitivity in the pipeline: AnalyzeModel's curves, and the curves a job's pruning put in its report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.pipeline import run_analysis, run_optimization
from tests.samples import write_sample_model

ONNX = model_pb2.MODEL_FORMAT_ONNX


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=16, image_size=16)
    return path


def test_sensitivity_curves_name_the_analysed_layers(cnn: Path, tmp_path: Path) -> None:
    plain = run_analysis(cnn, ONNX, [], tmp_path / "plain")
    assert not plain.sensitivity
    assert not any(w.startswith("SENSITIVITY") for w in plain.warnings)
    analysis = run_analysis(cnn, ONNX, [], tmp_path / "s", sensitivity=True, sensitivity_ratios=[0.25, 0.5])
    layers = {layer.name: layer for layer in analysis.layers}
    assert len(analysis.sensitivity) == 6
    for entry in analysis.sensitivity:
        assert entry.layer in layers  # the same names as the layer table
        assert layers[entry.layer].op_type == "Conv"
        assert entry.channels == layers[entry.layer].weight_shape[0]
        assert list(entry.ratios) == [0.25, 0.5]
        assert len(entry.cosine_similarity) == len(entry.top1_agreement) == 2
        assert all(-1.0 <= c <= 1.0 + 1e-9 for c in entry.cosine_similarity)
    losses = [np.mean([1 - c for c in e.cosine_similarity]) for e in analysis.sensitivity]
    assert losses == sorted(losses, reverse=True)
    synthetic = next(w for w in analysis.warnings if w.startswith("SENSITIVITY_SYNTHETIC:"))
    assert "16 synthetic samples" in synthetic
    skipped = next(w for w in analysis.warnings if w.startswith("SENSITIVITY_SKIPPED:"))
    assert "/fc/Gemm: output layer" in skipped


def test_a_model_the_converter_cannot_take_still_gets_its_analysis(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Unique", ["h"], ["y"], name="uniq"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "unique.onnx"
    onnx.save(model, str(path))
    analysis = run_analysis(path, ONNX, [], tmp_path / "w", sensitivity=True)
    assert [layer.name for layer in analysis.layers] == ["mm"]
    assert not analysis.sensitivity
    unavailable = next(w for w in analysis.warnings if w.startswith("SENSITIVITY_UNAVAILABLE:"))
    assert "Unique" in unavailable


def test_a_job_with_auto_ratios_reports_the_curves_it_measured(cnn: Path, tmp_path: Path) -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=0.3, auto_ratios=True),
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.3),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )
    report = run_optimization(cnn, ONNX, spec, tmp_path / "job", lambda *_: None).report
    metrics = {(c.layer, c.metric) for c in report.sensitivity}
    layers = {c.layer for c in report.sensitivity}
    assert len(layers) >= 4
    assert metrics == {(name, m) for name in layers for m in ("cosine_similarity", "top1_agreement")}
    assert all(list(c.ratios) == [0.1, 0.2, 0.3, 0.5, 0.7] for c in report.sensitivity)
    assert all(len(c.values) == 5 for c in report.sensitivity)
    assert layers <= {layer.name for layer in report.layers}
