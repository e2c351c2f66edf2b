"""An in-process server on port 0 per storage backend, and raw gRPC helpers for its tests."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from prunekit.v1 import model_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.config import Settings
from prunekit_server.errors import ServiceError
from prunekit_server.rpc_status import from_status
from prunekit_server.server import RunningServer, start_server
from tests.samples import write_sample_model

TEST_SETTINGS = Settings(
    host="127.0.0.1",
    port=0,
    workers=2,
    max_queued_jobs=4,
    enable_test_hooks=True,
    shutdown_grace_s=5.0,
    progress_interval_s=0.1,
    watch_poll_s=0.1,
    worker_memory_bytes=0,
    auth="none",
)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sample models on disk: cnn.onnx, cnn.pt (TorchScript) and mlp.onnx."""
    root = tmp_path_factory.mktemp("models")
    write_sample_model(root / "cnn.onnx", "onnx", "cnn", width=16)
    write_sample_model(root / "cnn.pt", "torchscript", "cnn", width=16)
    write_sample_model(root / "mlp.onnx", "onnx", "mlp")
    return {p.name: p for p in root.iterdir()}


def start(settings: Settings) -> RunningServer:
    return start_server(settings)


@contextmanager
def file_server(tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> Iterator[RunningServer]:
    """A running server on a fresh file store and scratch directory: ``TEST_SETTINGS`` with ``overrides``."""
    storage = f"file://{tmp_path_factory.mktemp('storage')}"
    scratch = str(tmp_path_factory.mktemp("scratch"))
    running = start(replace(TEST_SETTINGS, storage=storage, scratch_dir=scratch, **overrides))
    try:
        yield running
    finally:
        running.stop(grace=2.0)


def new_bucket_uri(endpoint: str) -> str:
    """A fresh bucket on the moto server at ``endpoint``, as an s3:// URI with a prefix."""
    import boto3

    bucket = f"prunekit-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/deploy-a"


@pytest.fixture(scope="module", params=["file", "s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A running server on port 0, over the file backend or a real moto S3 server."""
    if request.param == "s3":
        storage = new_bucket_uri(request.getfixturevalue("s3_endpoint"))
    else:
        storage = f"file://{tmp_path_factory.mktemp('storage')}"
    running = start(
        replace(TEST_SETTINGS, storage=storage, scratch_dir=str(tmp_path_factory.mktemp("scratch")))
    )
    yield running
    running.stop(grace=2.0)


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.OptimizerServiceStub:
    return pb_grpc.OptimizerServiceStub(channel)


def status_error(exc: grpc.RpcError) -> ServiceError:
    """The rich status of a failed call, as a ServiceError."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {exc}"
    return from_status(status)


def upload_requests(
    data: bytes,
    fmt: int = model_pb2.MODEL_FORMAT_ONNX,
    *,
    filename: str = "model.onnx",
    sha256: str | None = None,
    size: int | None = None,
    chunk: int = 1 << 20,
) -> Iterator[pb.UploadModelRequest]:
    meta = pb.UploadMetadata(
        filename=filename,
        format=fmt,  # type: ignore[arg-type]
        size_bytes=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
    )
    yield pb.UploadModelRequest(metadata=meta)
    for start_at in range(0, len(data), chunk):
        yield pb.UploadModelRequest(chunk=data[start_at : start_at + chunk])


def upload(stub: pb_grpc.OptimizerServiceStub, path: Path) -> model_pb2.ModelRef:
    fmt = model_pb2.MODEL_FORMAT_TORCHSCRIPT if path.suffix == ".pt" else model_pb2.MODEL_FORMAT_ONNX
    response = stub.UploadModel(upload_requests(path.read_bytes(), fmt, filename=path.name), timeout=60)
    return response.model


def download(stub: pb_grpc.OptimizerServiceStub, job_id: str, name: str) -> bytes:
    """An artifact's bytes (the stream's chunks after its info message)."""
    responses = list(stub.DownloadArtifact(pb.DownloadArtifactRequest(job_id=job_id, name=name), timeout=60))
    return b"".join(r.chunk for r in responses[1:])


def assert_serving(channel: grpc.Channel) -> None:
    """The server still answers its health check with SERVING."""
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="prunekit.v1.OptimizerService"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
