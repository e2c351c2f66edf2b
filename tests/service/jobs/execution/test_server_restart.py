"""Real server processes: one SIGKILLed mid-finetune and restarted, and one that stops renewing
its lease (SIGSTOP) while a second server on the same storage takes the job over.

Each runs on one backend (file, S3) to keep the suite short; both pass on either.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.jobs.durable.stores import TenantStores
from prunekit_server.jobs.execution.executor import FAULT_LABEL
from prunekit_server.storage import open_store

from ...api.conftest import new_bucket_uri
from ...api.jobflow import create, wait
from ...server_process import ServerProcess, server_process, worker_pids
from .finetune_flow import finetune_spec, single_manifest, upload_inputs, wait_cleaned

ENV = {"PRUNEKIT_LEASE_S": "5", "PRUNEKIT_SWEEP_INTERVAL_S": "0.5", "PRUNEKIT_WORKER_MEMORY_BYTES": "0"}
HANG_AFTER_FIRST_CHECKPOINT = {FAULT_LABEL: "hang@checkpoint"}


@pytest.fixture
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return new_bucket_uri(request.getfixturevalue("s3_endpoint"))
    return f"file://{tmp_path / 'store'}"


@contextmanager
def _stub(server: ServerProcess) -> Iterator[pb_grpc.OptimizerServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.OptimizerServiceStub(channel)


def _start_hanging_job(stub: pb_grpc.OptimizerServiceStub, tmp_path: Path) -> job_pb2.Job:
    """A fine-tuning job whose first worker hangs right after its first checkpoint, once it is in storage."""
    model, train = upload_inputs(stub, tmp_path)
    job = create(stub, model, finetune_spec(train), labels=HANG_AFTER_FIRST_CHECKPOINT)
    for update in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=180):
        if update.job.progress.finetune.checkpoint_step > 0:
            return update.job
        assert update.job.state == job_pb2.JOB_STATE_RUNNING or update.job.state == job_pb2.JOB_STATE_PENDING
    raise AssertionError("the job ended before its first checkpoint")


def _wait_gone(job_id: str, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while worker_pids(job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    return worker_pids(job_id)


def _watch_takeover(job_id: str, stale: int, since: float) -> tuple[float | None, bool]:
    """Until the new owner's worker starts: when the stale worker stopped (seconds after
    ``since``), and whether both ever ran at once."""
    fenced_after = None
    deadline = since + 60
    while time.monotonic() < deadline:
        pids = worker_pids(job_id)
        if stale not in pids and fenced_after is None:
            fenced_after = time.monotonic() - since
        if any(pid != stale for pid in pids):
            return fenced_after, stale in pids
        time.sleep(0.02)
    return fenced_after, False


@pytest.mark.parametrize("storage", ["file"], indirect=True)
def test_a_server_killed_mid_finetune_finishes_the_job_after_restart(storage: str, tmp_path: Path) -> None:
    with server_process(storage, extra_env=ENV, log=tmp_path / "first.log") as first, _stub(first) as stub:
        job = _start_hanging_job(stub, tmp_path)
        assert job.attempt == 1
        assert len(worker_pids(job.id)) == 1
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        assert _wait_gone(job.id) == [], "the worker outlived its server"
    killed_at = time.monotonic()
    with server_process(storage, extra_env=ENV, log=tmp_path / "second.log") as second, _stub(second) as stub:
        done = wait(stub, job.id)[-1]
        seconds = time.monotonic() - killed_at
        stores = TenantStores.open(open_store(storage))
        assert wait_cleaned(stores, job.id) == []
        assert stores.jobs.active_job_ids() == []
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    assert done.attempt == 2
    assert done.report.finetune.attempts == 2
    run = done.report.finetune.runs[-1]
    assert run.resumed_from_step == 20
    assert run.steps == 60
    assert {a.uri.split("/attempts/")[1][0] for a in single_manifest(stores, done)} == {"2"}
    print(
        f"restart: resumed from step {run.resumed_from_step}, attempts {done.attempt},",
        f"{seconds:.1f} s after the kill",
    )


@pytest.mark.parametrize("storage", ["s3"], indirect=True)
def test_a_second_server_takes_over_a_job_whose_owner_stopped_renewing(storage: str, tmp_path: Path) -> None:
    stores = TenantStores.open(open_store(storage))
    with (
        server_process(storage, extra_env=ENV, log=tmp_path / "a.log") as first,
        server_process(storage, extra_env=ENV, log=tmp_path / "b.log") as second,
        _stub(first) as first_stub,
        _stub(second) as stub,
    ):
        job = _start_hanging_job(first_stub, tmp_path)
        first_owner = job.lease.owner
        (stale_worker,) = worker_pids(job.id)
        first.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        fenced_after, overlap = _watch_takeover(job.id, stale_worker, stopped_at)
        assert not overlap, "two workers ran the job at the same time"
        assert fenced_after is not None
        assert fenced_after < float(ENV["PRUNEKIT_LEASE_S"]), "the frozen server's worker outlived the lease"
        done = wait(stub, job.id)[-1]
        takeover_s = time.monotonic() - stopped_at
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
        assert done.attempt == 2
        assert done.lease.owner == ""
        first.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while stale_worker in worker_pids(job.id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stale_worker not in worker_pids(job.id), "the stale owner kept its worker"
        time.sleep(1.5)
        assert first.proc.poll() is None
        assert first.health() == 1
        final = stub.GetJob(pb.GetJobRequest(job_id=job.id), timeout=10).job
        assert final == done
        assert done.report.finetune.runs[-1].resumed_from_step == 20
        artifacts = single_manifest(stores, final)
        assert all("/attempts/2/" in a.uri for a in artifacts)
        assert stores.store.list_keys(f"tenants/default/jobs/{job.id}/attempts/1/") == []
        log_a = (tmp_path / "a.log").read_text()
        assert "lease lost" in log_a
        assert first_owner in log_a
        print(f"takeover: stale worker fenced after {fenced_after:.2f} s; SUCCEEDED after {takeover_s:.1f} s")
    assert os.path.exists(tmp_path / "b.log")
