"""The file store turned read-only (a real read-only bind mount: root writes through ``chmod``) and
writable again: writes answer UNAVAILABLE STORAGE_UNAVAILABLE (never INTERNAL) while reads go on; a
fine-tune that meets it waits and SUCCEEDS, uncharged; once writable, new uploads and jobs succeed.
A client dropping an upload half way leaves nothing in the store's spool.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb

from ..service.api.conftest import status_error, upload, upload_requests
from ..service.api.jobflow import create
from ..service.jobs.execution.finetune_flow import finetune_spec, upload_inputs
from .conftest import assert_job_gone_from, assert_published_once, stores_of
from .harness import OUTAGE_S, Faulty, Prober, faulty_server, poll_job, wait_for, wait_stage
from .mounts import ReadOnly, bound, require_mounts


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadOnly]:
    require_mounts()
    with bound(tmp_path_factory.mktemp("ro-store") / "store") as mount:
        yield mount


@pytest.fixture(scope="module")
def server(store: ReadOnly, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    env = {"PRUNEKIT_LEASE_S": str(3 * OUTAGE_S + 30), "PRUNEKIT_MAX_ATTEMPTS": "1"}
    with faulty_server(f"file://{store.path}", tmp_path_factory.mktemp("ro-server"), env) as running:
        yield running
    store.set(read_only=False)


def _refused(call: object) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    error = status_error(caught.value)
    return caught.value.code(), error.reason, error.message


def test_a_read_only_store_refuses_writes_clearly_and_serves_reads(
    server: Faulty, store: ReadOnly, fault_models: dict[str, Path]
) -> None:
    model_bytes = fault_models["mlp.onnx"].read_bytes()
    store.set(read_only=True)  # before the first upload: the spool directory does not exist yet
    try:
        code, reason, message = _refused(
            lambda: server.stub.UploadModel(upload_requests(model_bytes), timeout=30)
        )
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
        assert "object storage failed" in message  # the details stay in the server's log (redacted)
        assert str(store.path) not in message
    finally:
        store.set(read_only=False)
    model = upload(server.stub, fault_models["mlp.onnx"])
    first = poll_job(server.stub, create(server.stub, model).id)
    assert first.state == job_pb2.JOB_STATE_SUCCEEDED, first.error
    store.set(read_only=True)
    try:
        code, reason, _ = _refused(lambda: create(server.stub, model))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
        other = fault_models["wide.onnx"].read_bytes()
        code, reason, _ = _refused(lambda: server.stub.UploadModel(upload_requests(other), timeout=30))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
        got = server.stub.GetJob(pb.GetJobRequest(job_id=first.id), timeout=30).job
        assert got.state == job_pb2.JOB_STATE_SUCCEEDED
        assert len(server.stub.ListJobs(pb.ListJobsRequest(), timeout=30).jobs) >= 1
    finally:
        store.set(read_only=False)
    again = poll_job(server.stub, create(server.stub, upload(server.stub, fault_models["wide.onnx"])).id)
    assert_published_once(stores_of(f"file://{store.path}"), again)


def test_a_fine_tune_meeting_a_read_only_store_waits_and_succeeds(
    server: Faulty, store: ReadOnly, tmp_path: Path
) -> None:
    model, train = upload_inputs(server.stub, tmp_path)
    job = create(server.stub, model, finetune_spec(train, steps=200, every=20))
    wait_stage(server.stub, job.id, lambda j: j.progress.stage == "finetune")
    lines, tracebacks = server.outage_lines(), server.log_text().count("Traceback")
    store.set(read_only=True)
    timer = threading.Timer(OUTAGE_S, store.set, kwargs={"read_only": False})
    timer.start()
    try:
        with Prober(server.process.target, job.id) as probe:
            done = poll_job(server.stub, job.id)
    finally:
        timer.join()
    print(probe.check())
    assert_published_once(stores_of(f"file://{store.path}"), done)
    assert done.charged_attempts == 1
    assert server.outage_lines() - lines == 1
    assert server.log_text().count("Traceback") == tracebacks
    assert_job_gone_from(server, job.id)


def test_a_client_dropping_mid_upload_leaves_nothing_in_the_spool(
    server: Faulty, store: ReadOnly, fault_models: dict[str, Path]
) -> None:
    """The spool of a file store is inside the store (files are moved in, not copied)."""
    spool = store.path / ".prunekit" / "spool"
    data = fault_models["wide.onnx"].read_bytes() + b"\0"  # bytes not stored yet
    half = len(data) // 2
    released = threading.Event()

    def half_then_stall() -> Iterator[pb.UploadModelRequest]:
        sent = 0
        for request in upload_requests(data, chunk=256 << 10):
            if sent >= half:
                released.wait(60)
                return
            sent += len(request.chunk)
            yield request

    call = server.stub.UploadModel.future(half_then_stall(), timeout=60)
    assert wait_for(lambda: [p for p in spool.glob("prunekit-upload-*") if p.stat().st_size >= half])
    assert call.cancel()
    released.set()
    assert wait_for(lambda: not list(spool.glob("prunekit-upload-*"))), "the spool file is left"
    sha256 = hashlib.sha256(data).hexdigest()
    assert stores_of(f"file://{store.path}").store.list_keys(f"tenants/default/models/{sha256}") == []
    assert upload(server.stub, fault_models["mlp.onnx"]).size_bytes > 0, "the server stopped serving"
