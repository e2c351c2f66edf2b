"""N_M, LAYER and ATTENTION_HEAD jobs and AnalyzeModel with sensitivity, through a real server.

One server on the file backend for the module (the storage paths are covered by test_jobs.py):
these jobs are about the methods, not the backends.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from prunekit.v1 import job_pb2, model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.server import RunningServer
from tests.zoo import ZOO, export

from .conftest import download, file_server, status_error, upload
from .jobflow import run


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with file_server(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo's BERT-style encoder (two layers of four heads) as legacy ONNX."""
    entry = ZOO["bert"]
    return export(entry.build(), entry, tmp_path_factory.mktemp("bert") / "bert.onnx", "legacy", 17)


IDS = model_pb2.InputSpec(name="ids", shape=[2, 16], dtype=model_pb2.DATA_TYPE_INT64)


def _spec(inputs: list[model_pb2.InputSpec] | None = None, **prune: object) -> spec_pb2.OptimizationSpec:
    return spec_pb2.OptimizationSpec(
        inputs=inputs or [],
        prune=spec_pb2.PruneSpec(**prune),  # type: ignore[arg-type]
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.5),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )


def _succeeded(job: job_pb2.Job) -> job_pb2.Job:
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    return job


def test_analyze_with_sensitivity(stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]) -> None:
    model = upload(stub, models["cnn.onnx"])
    request = pb.AnalyzeModelRequest(model=model, sensitivity=True, sensitivity_ratios=[0.2, 0.6])
    analysis = stub.AnalyzeModel(request, timeout=120).analysis
    names = {layer.name for layer in analysis.layers}
    assert len(analysis.sensitivity) == 6
    assert all(entry.layer in names and list(entry.ratios) == [0.2, 0.6] for entry in analysis.sensitivity)
    assert any(w.startswith("SENSITIVITY_SYNTHETIC:") for w in analysis.warnings)


def test_bad_sensitivity_ratios_are_invalid_requests(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.onnx"])
    for request, fields in (
        (pb.AnalyzeModelRequest(model=model, sensitivity_ratios=[0.5]), {"sensitivity_ratios"}),
        (
            pb.AnalyzeModelRequest(model=model, sensitivity=True, sensitivity_ratios=[0.5, 0.5, 1.5]),
            {"sensitivity_ratios", "sensitivity_ratios[2]"},
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stub.AnalyzeModel(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in status_error(caught.value).violations} == fields


def test_n_m_job_reports_the_pattern_and_the_runtimes(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.onnx"])
    job = _succeeded(run(stub, model, _spec(method=spec_pb2.PRUNE_METHOD_N_M)))
    report = job.report
    warning = next(w for w in report.warnings if w.code == "N_M_RUNTIME_SUPPORT")
    assert "TensorRT" in warning.message
    assert "ONNX Runtime on CPU" in warning.message
    pruned = [layer for layer in report.layers if not layer.skipped]
    assert pruned
    assert all(layer.sparsity == pytest.approx(0.5) for layer in pruned)
    (variant,) = report.variants
    assert variant.stats.parameters == report.baseline.parameters
    assert variant.stats.nonzero_parameters < report.baseline.nonzero_parameters


def test_layer_job_removes_the_residual_block(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.onnx"])
    job = _succeeded(run(stub, model, _spec(method=spec_pb2.PRUNE_METHOD_LAYER, ratio=0.5)))
    report = job.report
    (variant,) = report.variants
    assert variant.macs_reduction > 1.0
    assert variant.stats.parameters < report.baseline.parameters
    assert "LAYERS_REMOVED" in {w.code for w in report.warnings}
    removed = [layer for layer in report.layers if not layer.skipped]
    assert len(removed) == 2
    assert all(not layer.shape_after for layer in removed)
    pruned = onnx.load_from_string(download(stub, job.id, "pruned.onnx"))
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    (logits,) = ort.InferenceSession(pruned.SerializeToString()).run(None, feed)
    assert logits.shape == (1, 10)


def test_attention_head_job_on_onnx(stub: pb_grpc.OptimizerServiceStub, bert: Path) -> None:
    model = upload(stub, bert)
    spec = _spec([IDS], method=spec_pb2.PRUNE_METHOD_ATTENTION_HEAD, ratio=0.5)
    job = _succeeded(run(stub, model, spec))
    report = job.report
    (variant,) = report.variants
    assert variant.macs_reduction > 1.0
    shapes = {(tuple(layer.shape_before), tuple(layer.shape_after)) for layer in report.layers}
    assert shapes == {((32, 32), (16, 32)), ((32, 32), (32, 16))}
    # the pruned model's layers carry the original names, so their MACs are matched: half of each
    assert all(layer.macs_after * 2 == layer.macs_before > 0 for layer in report.layers)
    assert "HEADS_PRUNED" in {w.code for w in report.warnings}


def test_layer_job_on_torchscript(stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]) -> None:
    model = upload(stub, models["cnn.pt"])
    image = model_pb2.InputSpec(name="input", shape=[1, 3, 32, 32])
    job = _succeeded(run(stub, model, _spec([image], method=spec_pb2.PRUNE_METHOD_LAYER, ratio=0.5)))
    assert {"pruned.pt", "pruned.onnx"} <= {a.name for a in job.artifacts}
    assert job.report.variants[0].stats.parameters < job.report.baseline.parameters
    module = torch.jit.load(io.BytesIO(download(stub, job.id, "pruned.pt")))
    with torch.no_grad():
        assert module(torch.randn(1, 3, 32, 32)).shape == (1, 10)
