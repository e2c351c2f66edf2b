"""Inputs of the fault suite: sample models on disk, and checks of what a job left in storage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prunekit.v1 import job_pb2
from prunekit_server.jobs.durable.keys import TenantKeys
from prunekit_server.jobs.durable.stores import TenantStores
from prunekit_server.storage import open_store
from tests.samples import write_sample_model

from ..service.api.conftest import new_bucket_uri
from ..service.server_process import worker_pids
from .harness import Faulty
from .s3_proxy import S3Proxy


@pytest.fixture(scope="module")
def proxy(s3_endpoint: str) -> Iterator[S3Proxy]:
    """A proxy in front of the session's moto_server, for one module's server (see :mod:`.s3_proxy`)."""
    running = S3Proxy(s3_endpoint)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def storage(s3_endpoint: str) -> str:
    """A fresh bucket on the moto_server for one module, as ``s3://bucket/prefix``."""
    return new_bucket_uri(s3_endpoint)


@pytest.fixture(scope="session")
def fault_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``mlp.onnx`` (340 KB) and ``wide.onnx`` (4.5 MB: the same MLP, eight times wider)."""
    root = tmp_path_factory.mktemp("fault-models")
    write_sample_model(root / "mlp.onnx", "onnx", "mlp")
    write_sample_model(root / "wide.onnx", "onnx", "mlp", width=128)
    return {p.name: p for p in root.iterdir()}


def stores_of(storage: str) -> TenantStores:
    """The stores of ``storage`` opened directly (for S3: at moto itself, not through the proxy)."""
    return TenantStores.open(open_store(storage))


def job_files(stores: TenantStores, job_id: str) -> list[str]:
    """Every key under the job's prefix but its record: manifest, artifacts, checkpoints."""
    prefix = TenantKeys(stores.jobs.tenant).job(job_id).rsplit("/", 1)[0] + "/"
    return [key for key in stores.store.list_keys(prefix) if not key.endswith("/job.json")]


def assert_published_once(stores: TenantStores, job: job_pb2.Job) -> None:
    """A SUCCEEDED job: one manifest naming exactly its artifacts, all from its last worker start, and
    nothing else under its prefix once its server cleaned up (no half-written publish, no checkpoint)."""
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    assert stores.artifacts.manifest(job.id) == list(job.artifacts)
    keys = {stores.artifacts.uris.key_for_uri(a.uri) for a in job.artifacts}
    assert {key.split("/attempts/")[1].split("/")[0] for key in keys} == {str(job.attempt)}
    _wait_equal(lambda: sorted(job_files(stores, job.id)), sorted([*keys, _manifest_key(stores, job.id)]))


def assert_nothing_stored(stores: TenantStores, job_id: str) -> None:
    """A FAILED job left no manifest, no artifact, no checkpoint once its server cleaned up."""
    assert stores.artifacts.manifest(job_id) is None
    _wait_equal(lambda: job_files(stores, job_id), [])


def assert_job_gone_from(server: Faulty, job_id: str, timeout: float = 20) -> None:
    """No worker of the job runs and its scratch directories are gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (worker_pids(job_id) or _scratch_dirs(server, job_id)):
        time.sleep(0.1)
    assert worker_pids(job_id) == [], "the job's worker outlived it"
    assert _scratch_dirs(server, job_id) == [], "the job's scratch directory was left behind"


def _scratch_dirs(server: Faulty, job_id: str) -> list[str]:
    return [p.name for p in server.scratch.rglob(f"prunekit-{job_id}-*")]


def _manifest_key(stores: TenantStores, job_id: str) -> str:
    return TenantKeys(stores.jobs.tenant).manifest(job_id)


def _wait_equal(actual: object, expected: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    value = actual() if callable(actual) else actual
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = actual() if callable(actual) else actual
    assert value == expected
