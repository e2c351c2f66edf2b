"""The job lifecycle over real gRPC, on the file and the S3 backend."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import json_format

from prunekit.v1 import job_pb2, model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.rpc_status import from_status

from .conftest import assert_serving, status_error, upload, upload_requests
from .jobflow import TERMINAL, create, quick_spec, run, wait


def download(stub: pb_grpc.OptimizerServiceStub, job_id: str, name: str) -> tuple[job_pb2.Artifact, bytes]:
    responses = list(stub.DownloadArtifact(pb.DownloadArtifactRequest(job_id=job_id, name=name), timeout=60))
    assert responses[0].WhichOneof("payload") == "info"
    data = b"".join(r.chunk for r in responses[1:])
    return responses[0].info, data


def test_onnx_job_succeeds_with_measured_report_and_verified_artifacts(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.onnx"])
    job = create(stub, model, quick_spec(0.6))
    updates = wait(stub, job.id)
    final = updates[-1]
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error
    assert updates[0].state in {job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_RUNNING}
    assert [u.state for u in updates].count(job_pb2.JOB_STATE_SUCCEEDED) == 1
    assert final.create_time.seconds
    assert final.start_time.seconds
    assert final.end_time.seconds

    report = final.report
    base = report.baseline
    (variant,) = report.variants
    assert variant.name == "pruned"
    assert variant.format == model_pb2.MODEL_FORMAT_ONNX
    assert base.parameters == variant.stats.parameters > 0
    assert variant.stats.nonzero_parameters < base.nonzero_parameters
    assert variant.stats.compressed_size_bytes < base.compressed_size_bytes
    for stats in (base, variant.stats):
        assert stats.latency.p50_ms > 0
        assert stats.latency.iterations == 3 * min(stats.latency.windows, 3)
        assert stats.latency.p50_ms <= stats.latency.p90_ms <= stats.latency.p99_ms
    assert 0.0 <= variant.stats.quality.top1_agreement <= 1.0
    assert variant.stats.quality.samples > 0
    assert "UNSTRUCTURED_NO_SPEEDUP" in {w.code for w in report.warnings}
    assert report.protocol.interleaved
    assert report.protocol.cpu_model

    names = {a.name for a in final.artifacts}
    assert names == {"pruned.onnx", "report.json", "report.md", "report.html"}
    assert variant.uri
    assert variant.uri == next(f.uri for f in variant.files if f.artifact == "pruned.onnx")
    for artifact in final.artifacts:
        info, data = download(stub, final.id, artifact.name)
        assert hashlib.sha256(data).hexdigest() == info.sha256 == artifact.sha256
        assert len(data) == artifact.size_bytes
    _, pruned = download(stub, final.id, "pruned.onnx")
    weights = [onnx.numpy_helper.to_array(t) for t in onnx.load_from_string(pruned).graph.initializer]
    zeros = sum(int((w == 0).sum()) for w in weights if w.ndim >= 2)
    prunable = sum(w.size for w in weights if w.ndim >= 2)
    assert zeros / prunable == pytest.approx(0.6, abs=0.02)
    session = ort.InferenceSession(pruned, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert out.shape == (1, 10)
    _, stored_report = download(stub, final.id, "report.json")
    assert json_format.Parse(stored_report, type(report)()).variants[0].uri == variant.uri
    assert stub.GetJob(pb.GetJobRequest(job_id=job.id), timeout=10).job == final
    assert_serving(channel)


def test_quantize_only_job_stores_the_quantized_model_and_the_pages(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.onnx"])
    spec = quick_spec()
    spec.ClearField("prune")
    spec.quantize.mode = spec_pb2.QUANTIZE_MODE_STATIC_INT8
    spec.quantize.calibration_samples = 4
    final = run(stub, model, spec)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error
    (variant,) = final.report.variants
    assert (variant.name, variant.source) == ("original_int8", "original")
    assert variant.quantization.mode == spec_pb2.QUANTIZE_MODE_STATIC_INT8
    assert variant.uri.endswith("original_int8.onnx")
    assert {a.name for a in final.artifacts} == {
        "original_int8.onnx",
        "report.json",
        "report.md",
        "report.html",
    }
    _, quantized = download(stub, final.id, "original_int8.onnx")
    session = ort.InferenceSession(quantized, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert out.shape == (1, 10)
    _, page = download(stub, final.id, "report.html")
    assert page.startswith(b"<!DOCTYPE html>")
    assert b'data-plot="variants"' in page
    _, markdown = download(stub, final.id, "report.md")
    assert b"`original_int8`" in markdown
    assert "SYNTHETIC_CALIBRATION" in {w.code for w in final.report.warnings}


def test_torchscript_job_returns_torchscript_and_onnx(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.pt"])
    assert model.format == model_pb2.MODEL_FORMAT_TORCHSCRIPT
    spec = quick_spec(0.5)
    spec.inputs.add(name="input", shape=[1, 3, 32, 32], dtype=model_pb2.DATA_TYPE_FLOAT32)
    final = run(stub, model, spec)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error
    (variant,) = final.report.variants
    assert variant.format == model_pb2.MODEL_FORMAT_TORCHSCRIPT
    assert {f.format for f in variant.files} == {
        model_pb2.MODEL_FORMAT_ONNX,
        model_pb2.MODEL_FORMAT_TORCHSCRIPT,
    }
    assert {"pruned.pt", "pruned.onnx"} <= {a.name for a in final.artifacts}


def test_torchscript_without_inputs_is_rejected(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["cnn.pt"])
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, quick_spec())
    error = status_error(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_SPEC"
    assert [v.field for v in error.violations] == ["spec.inputs"]


def test_create_is_idempotent_on_request_id(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    first = create(stub, model, request_id="pipeline-run-42")
    again = create(stub, model, request_id="pipeline-run-42")
    assert again.id == first.id
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, quick_spec(0.3), request_id="pipeline-run-42")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert status_error(caught.value).reason == "REQUEST_ID_REUSED"
    assert wait(stub, first.id)[-1].state in TERMINAL


def test_list_jobs_newest_first_in_pages(stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]) -> None:
    model = upload(stub, models["mlp.onnx"])
    made = [create(stub, model).id for _ in range(3)]
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token), timeout=10)
        assert len(page.jobs) <= 2
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen.index(made[2]) < seen.index(made[1]) < seen.index(made[0])
    assert len(seen) == len(set(seen))
    created = [j.create_time.ToNanoseconds() for j in stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs]
    assert created == sorted(created, reverse=True)
    for job_id in made:
        wait(stub, job_id)


@pytest.mark.parametrize("ratio", [1.5, -0.1, math.nan, 0.0])
def test_bad_ratio_is_invalid_spec(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path], ratio: float
) -> None:
    model = upload(stub, models["mlp.onnx"])
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, quick_spec(ratio))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = status_error(caught.value)
    assert error.reason == "INVALID_SPEC"
    assert [v.field for v in error.violations] == ["spec.prune.ratio"]


def test_every_spec_violation_is_listed(stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]) -> None:
    model = upload(stub, models["mlp.onnx"])
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(ratio=2.0, ignore=[""]),
        benchmark=spec_pb2.BenchmarkSpec(threads=-1, batch_sizes=[0]),
        quantize=spec_pb2.QuantizeSpec(calibration_samples=5000, percentile=50.0),
    )
    spec.inputs.add(name="x", shape=[1, 0])
    spec.finetune.SetInParent()
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, spec)
    fields = {v.field for v in status_error(caught.value).violations}
    assert fields == {
        "spec.prune.method",
        "spec.prune.ratio",
        "spec.prune.ignore[0]",
        "spec.benchmark.threads",
        "spec.benchmark.batch_sizes[0]",
        "spec.quantize.mode",
        "spec.quantize.calibration_samples",
        "spec.quantize.percentile",
        "spec.inputs[0].shape",
        "spec.finetune",
    }


def test_unknown_spec_field_is_rejected(stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]) -> None:
    model = upload(stub, models["mlp.onnx"])
    spec = spec_pb2.OptimizationSpec.FromString(quick_spec().SerializeToString() + b"\xf8\x07\x01")
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, spec)
    error = status_error(caught.value)
    assert error.reason == "INVALID_SPEC"
    assert "unknown field number 127" in error.violations[0].description


def test_unknown_and_malformed_job_ids(stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel) -> None:
    for job_id in ("job-00000000000000000000", "../../etc/passwd"):
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert status_error(caught.value).reason == "JOB_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetJob(pb.GetJobRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.WatchJob(pb.WatchJobRequest(job_id="job-00000000000000000000"), timeout=10))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert_serving(channel)


def test_cancel_finished_job_and_missing_artifact(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    final = run(stub, model)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelJob(pb.CancelJobRequest(job_id=final.id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert status_error(caught.value).reason == "JOB_ALREADY_FINISHED"
    with pytest.raises(grpc.RpcError) as caught:
        download(stub, final.id, "nope.onnx")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert status_error(caught.value).reason == "ARTIFACT_NOT_FOUND"
    assert stub.GetJob(pb.GetJobRequest(job_id=final.id), timeout=10).job.state == job_pb2.JOB_STATE_SUCCEEDED


def test_unknown_model_is_not_found(stub: pb_grpc.OptimizerServiceStub) -> None:
    ghost = model_pb2.ModelRef(sha256="0" * 64, format=model_pb2.MODEL_FORMAT_ONNX)
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, ghost)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert status_error(caught.value).reason == "MODEL_NOT_FOUND"


def test_truncated_onnx_job_fails_with_invalid_model(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    data = models["mlp.onnx"].read_bytes()
    model = stub.UploadModel(upload_requests(data[: len(data) // 2]), timeout=30).model
    final = run(stub, model)
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert final.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert from_status(final.error).reason == "INVALID_MODEL"
    assert not final.artifacts
    assert_serving(channel)
