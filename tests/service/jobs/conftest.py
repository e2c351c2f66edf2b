"""A job store per storage backend (file directory, real moto S3) and a stored sample model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prunekit.v1 import model_pb2
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.jobs.durable.model_store import ModelStore
from prunekit_server.storage import ObjectStore, open_store
from tests.samples import write_sample_model

from ..api.conftest import new_bucket_uri
from ..api.jobflow import quick_spec


@pytest.fixture(params=["file", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return open_store(new_bucket_uri(request.getfixturevalue("s3_endpoint")))
    return open_store(f"file://{tmp_path / 'store'}")


def stored_model(jobs: JobStore, tmp_path: Path) -> model_pb2.ModelRef:
    """The sample MLP, uploaded beside ``jobs`` (same object store and tenant)."""
    path = tmp_path / "mlp.onnx"
    write_sample_model(path, "onnx", "mlp")
    ref = model_pb2.ModelRef(
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        format=model_pb2.MODEL_FORMAT_ONNX,
        size_bytes=path.stat().st_size,
    )
    return ModelStore(jobs.store, jobs.tenant).put(path, ref)[0]


def new_job_id(jobs: JobStore, tmp_path: Path, request_id: str = "r1") -> str:
    """A PENDING job created through ``jobs`` (leased to its owner, if it has one)."""
    job, _ = jobs.create(stored_model(jobs, tmp_path), quick_spec(), request_id, {})
    return job.id
