"""DYNAMIC (EARLY_EXIT) jobs through a real server: a digits CNN with its data, and the refusals.

One server on the file backend for the module: these jobs are about the method, not the backends.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from scripts.digits import INPUT_NAME, digits_split, export_onnx, train_digits_cnn

from prunekit.v1 import job_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.rpc_status import from_status
from prunekit_server.server import RunningServer
from tests.service.report_fields import DYNAMIC_EXEMPT, unfilled

from .conftest import TEST_SETTINGS, start, status_error, upload
from .jobflow import create, wait

P = spec_pb2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    storage = f"file://{tmp_path_factory.mktemp('storage')}"
    running = start(
        replace(TEST_SETTINGS, storage=storage, scratch_dir=str(tmp_path_factory.mktemp("scratch")))
    )
    yield running
    running.stop(grace=2.0)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN, briefly trained, as ONNX with batch 1."""
    model = train_digits_cnn(epochs=3, seed=0)
    return export_onnx(model, tmp_path_factory.mktemp("digits") / "digits.onnx", batch_size=1)


def _dataset(stub: pb_grpc.OptimizerServiceStub, x: np.ndarray, y: np.ndarray, name: str) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **{INPUT_NAME: x, "label": y})
    data = buffer.getvalue()
    meta = pb.DatasetMetadata(filename=name, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    requests = [pb.UploadDatasetRequest(metadata=meta), pb.UploadDatasetRequest(chunk=data)]
    return str(stub.UploadDataset(iter(requests), timeout=60).dataset.uri)


def _spec(dynamic: spec_pb2.DynamicSpec, **kwargs: object) -> spec_pb2.OptimizationSpec:
    return P.OptimizationSpec(
        prune=P.PruneSpec(method=P.PRUNE_METHOD_DYNAMIC, dynamic=dynamic),
        benchmark=P.BenchmarkSpec(warmup=1, iterations=3, max_seconds=2.0),
        evaluation=P.EvaluationSpec(samples=4),
        **kwargs,  # type: ignore[arg-type]
    )


def _download(stub: pb_grpc.OptimizerServiceStub, job_id: str, name: str) -> bytes:
    responses = stub.DownloadArtifact(pb.DownloadArtifactRequest(job_id=job_id, name=name), timeout=60)
    return b"".join(r.chunk for r in responses if r.WhichOneof("payload") == "chunk")


def test_early_exit_job_trains_calibrates_and_measures_per_input(
    stub: pb_grpc.OptimizerServiceStub, digits: Path
) -> None:
    train, held_out = digits_split()
    data = P.DataSpec(
        train=[_dataset(stub, train.inputs[0], train.label, "train.npz")],
        eval=[_dataset(stub, held_out.inputs[0][:150], held_out.label[:150], "eval.npz")],
    )
    spec = _spec(P.DynamicSpec(form=P.DYNAMIC_FORM_EARLY_EXIT, steps=100), data=data)
    job = wait(stub, create(stub, upload(stub, digits), spec).id)[-1]
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    report = job.report
    assert [v.name for v in report.variants] == ["dynamic"]
    d = report.dynamic
    assert unfilled(d, DYNAMIC_EXEMPT) == []
    assert (d.form, d.calibrated, d.metric) == (P.DYNAMIC_FORM_EARLY_EXIT, True, "accuracy")
    assert d.inputs == "eval split, measurement half: 75 samples (odd positions)"
    assert d.calibration_inputs == "eval split, calibration half: 75 samples (even positions)"
    assert d.calibration_samples == 75
    original, dynamic = d.models
    assert (original.name, dynamic.name) == ("original", "dynamic")
    for model in d.models:
        assert (model.samples, len(model.latencies_ms)) == (75, 75)
        assert 0 < model.p50_ms <= model.p90_ms <= model.p99_ms
    assert original.accuracy - dynamic.accuracy <= 0.01 + 1e-9
    assert d.exits[-1].name == "final"
    assert abs(sum(e.share for e in d.exits) - 1.0) < 1e-9
    assert len(d.sweep) >= 10
    assert any(p.mean_ms > 0 for p in d.sweep)
    gated = onnx.load_from_string(_download(stub, job.id, "dynamic.onnx"))
    assert any(n.op_type == "If" for n in gated.graph.node)
    session = ort.InferenceSession(gated.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(digits), providers=["CPUExecutionProvider"])
    for x in held_out.inputs[0][:20]:
        feed = {INPUT_NAME: x[None]}
        got, want = session.run(None, feed)[0], reference.run(None, feed)[0]
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
    page = _download(stub, job.id, "report.html").decode()
    assert "Latency per input" in page
    assert "Accuracy against threshold" in page
    assert "## Dynamic: latency per input" in _download(stub, job.id, "report.md").decode()


def _single_gemm(path: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((4, 8), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)],
        "one_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    ("form", "reason", "words"),
    [
        (P.DYNAMIC_FORM_EARLY_EXIT, "DYNAMIC_NOT_APPLICABLE", "no exit point"),
        (P.DYNAMIC_FORM_HEAD_GATE, "DYNAMIC_FORM_UNAVAILABLE", "HEAD_GATE"),
        (P.DYNAMIC_FORM_TOKEN_SKIP, "DYNAMIC_NOT_APPLICABLE", "attention layers"),
    ],
)
def test_a_model_without_exit_points_or_an_unbuilt_form_fails_precondition(
    stub: pb_grpc.OptimizerServiceStub, tmp_path: Path, form: int, reason: str, words: str
) -> None:
    model = upload(stub, _single_gemm(tmp_path / "gemm.onnx"))
    job = wait(stub, create(stub, model, _spec(P.DynamicSpec(form=form))).id)[-1]  # type: ignore[arg-type]
    assert job.state == job_pb2.JOB_STATE_FAILED
    error = from_status(job.error)
    assert (error.code.name, error.reason) == ("FAILED_PRECONDITION", reason)
    assert words in error.message


def test_bad_knobs_are_refused_before_the_job(stub: pb_grpc.OptimizerServiceStub, tmp_path: Path) -> None:
    model = upload(stub, _single_gemm(tmp_path / "gemm.onnx"))
    spec = _spec(P.DynamicSpec(form=P.DYNAMIC_FORM_EARLY_EXIT, threshold=1.5, keep_ratio=0.5))
    spec.quantize.mode = P.QUANTIZE_MODE_DYNAMIC_INT8
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, spec)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in status_error(caught.value).violations}
    assert {"spec.prune.dynamic.threshold", "spec.prune.dynamic.keep_ratio", "spec.quantize"} <= fields
