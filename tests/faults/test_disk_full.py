"""Disks that fill up (real tmpfs mounts): the file store, and a server's scratch directory.

A full store refuses an upload with RESOURCE_EXHAUSTED (STORAGE_FULL) and keeps no part of it; a job
whose results do not fit FAILS with STORAGE_FULL and keeps none of them. A job whose worker fills
its scratch directory FAILS with STORAGE_FULL (space "scratch"), not ``OSError: [Errno 28]``, and
its scratch directory is removed. Smaller work goes on succeeding on the same server.

Sizes: ``wide.onnx`` is 4.5 MB, ``mlp.onnx`` 0.34 MB; a job writes a pruned copy of its model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2
from prunekit_server.rpc_status import from_status
from tests.samples import write_sample_model

from ..service.api.conftest import status_error, upload, upload_requests
from ..service.api.jobflow import create
from .conftest import assert_job_gone_from, assert_nothing_stored, assert_published_once, stores_of
from .harness import Faulty, faulty_server, poll_job
from .mounts import require_mounts, tmpfs

MIB = 1 << 20


def _storage_full(job: job_pb2.Job, space: str) -> str:
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert job.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    error = from_status(job.error)
    assert (error.reason, error.metadata) == ("STORAGE_FULL", {"space": space})
    assert "Errno" not in error.message
    return error.message


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Faulty, str]]:
    """A server whose file store is an 8 MiB tmpfs."""
    require_mounts()
    root = tmp_path_factory.mktemp("full-store")
    with tmpfs(root / "store", 8 * MIB) as store, faulty_server(f"file://{store}", root) as server:
        yield server, f"file://{store}"


@pytest.fixture(scope="module")
def full_scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    """A server whose scratch directory is a 7 MiB tmpfs."""
    require_mounts()
    root = tmp_path_factory.mktemp("full-scratch")
    with tmpfs(root / "scratch", 7 * MIB), faulty_server(f"file://{root / 'store'}", root) as server:
        yield server


def test_a_full_store_refuses_what_does_not_fit_and_keeps_serving(
    full_store: tuple[Faulty, str], fault_models: dict[str, Path], tmp_path: Path
) -> None:
    server, storage = full_store
    wide = upload(server.stub, fault_models["wide.onnx"])
    failed = poll_job(server.stub, create(server.stub, wide).id)
    _storage_full(failed, "store")
    assert_nothing_stored(stores_of(storage), failed.id)
    assert_job_gone_from(server, failed.id)

    other = tmp_path / "other.onnx"
    write_sample_model(other, "onnx", "mlp", width=128, seed=1)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.UploadModel(upload_requests(other.read_bytes()), timeout=60)
    error = status_error(caught.value)
    assert (caught.value.code(), error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL")
    spool = Path(storage.removeprefix("file://")) / ".prunekit" / "spool"
    assert list(spool.iterdir()) == [], "the refused upload left its spool file"

    small = upload(server.stub, fault_models["mlp.onnx"])
    assert_published_once(stores_of(storage), poll_job(server.stub, create(server.stub, small).id))


def test_a_worker_filling_its_scratch_fails_its_job_for_space(
    full_scratch: Faulty, fault_models: dict[str, Path]
) -> None:
    server = full_scratch
    wide = upload(server.stub, fault_models["wide.onnx"])
    failed = poll_job(server.stub, create(server.stub, wide).id)
    print(_storage_full(failed, "scratch"))
    assert_nothing_stored(stores_of(f"file://{server.scratch.parent / 'store'}"), failed.id)
    assert_job_gone_from(server, failed.id)
    small = upload(server.stub, fault_models["mlp.onnx"])
    done = poll_job(server.stub, create(server.stub, small).id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
