"""A real in-process server takes over jobs whose server is gone (the sweeper), over file and S3."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import json_format

from prunekit.v1 import job_pb2, report_pb2
from prunekit_server.hashing import sha256_file
from prunekit_server.jobs.durable import lease, record
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.jobs.durable.keys import TenantKeys
from prunekit_server.jobs.durable.stores import TenantStores
from prunekit_server.jobs.execution.executor import FAULT_LABEL
from prunekit_server.rpc_status import from_status
from prunekit_server.server import RunningServer, start_server
from prunekit_server.storage import open_store

from ...api.conftest import TEST_SETTINGS, new_bucket_uri
from ...api.jobflow import quick_spec
from ..conftest import new_job_id, stored_model


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return new_bucket_uri(request.getfixturevalue("s3_endpoint"))
    return f"file://{tmp_path / 'store'}"


@contextmanager
def running(storage: str, tmp_path: Path, **settings: object) -> Iterator[RunningServer]:
    options = {"lease_s": 6.0, "sweep_interval_s": 0.2, "server_id": "server-b", **settings}
    server = start_server(
        replace(TEST_SETTINGS, storage=storage, scratch_dir=str(tmp_path), **options)  # type: ignore[arg-type]
    )
    try:
        yield server
    finally:
        server.stop(grace=2.0)


def _dead_server_stores(storage: str) -> TenantStores:
    """The stores of a server that created jobs and died: its leases last 0.2 s."""
    return TenantStores.open(open_store(storage), owner="server-a", lease_s=0.2)


def _wait_terminal(jobs: JobStore, job_id: str, timeout: float = 120) -> job_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if record.is_terminal(job.state):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {jobs.get(job_id)}")


def test_a_job_whose_server_died_before_running_it_is_taken_over(storage: str, tmp_path: Path) -> None:
    dead = _dead_server_stores(storage)
    job_id = new_job_id(dead.jobs, tmp_path)
    with running(storage, tmp_path) as server:
        done = _wait_terminal(server.stores.jobs, job_id)
    assert done.state == record.SUCCEEDED, done.error
    assert done.charged_attempts == 1, (
        "the takeover started it more than once (fenced starts are not charged)"
    )
    assert not done.HasField("lease")
    assert dead.artifacts.manifest(job_id) is not None
    assert dead.jobs.active_job_ids() == []


def test_a_job_left_with_its_manifest_is_completed_from_it(tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'store'}"
    dead = _dead_server_stores(storage)
    job_id = new_job_id(dead.jobs, tmp_path)
    dead.jobs.mutate(job_id, lambda job: record.transition(job, record.RUNNING) or True)
    report = report_pb2.OptimizationReport(finetune=report_pb2.FinetuneReport(attempts=1))
    path = tmp_path / "report.json"
    path.write_text(json_format.MessageToJson(report))

    artifact = dead.artifacts.put(job_id, "report.json", path, sha256_file(path), attempt=1)
    assert dead.artifacts.write_manifest(job_id, [artifact]) is True
    assert dead.artifacts.write_manifest(job_id, []) is False
    with running(storage, tmp_path / "scratch") as server:
        done = _wait_terminal(server.stores.jobs, job_id, timeout=30)
    assert done.state == record.SUCCEEDED
    assert done.report == report
    assert list(done.artifacts) == [artifact]
    assert done.attempt == 0


def test_a_job_lost_too_often_fails_but_takeovers_are_not_charged(tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'store'}"
    dead = _dead_server_stores(storage)
    lost_often, lost_once = new_job_id(dead.jobs, tmp_path), new_job_id(dead.jobs, tmp_path, "r2")

    def started(times: int) -> Callable[[job_pb2.Job], bool]:
        def change(job: job_pb2.Job) -> bool:
            record.transition(job, record.RUNNING)
            job.attempt, job.charged_attempts = times, 1
            lease.expire_now(job)
            return True

        return change

    dead.jobs.mutate(lost_often, started(5))
    dead.jobs.mutate(lost_once, started(1))
    with running(storage, tmp_path / "scratch", max_attempts=1, max_worker_starts=5) as server:
        failed = _wait_terminal(server.stores.jobs, lost_often, timeout=30)
        done = _wait_terminal(server.stores.jobs, lost_once, timeout=60)
    assert failed.state == record.FAILED
    error = from_status(failed.error)
    assert error.reason == "WORKER_CRASHED"
    assert "5 times" in error.message
    assert "max_worker_starts" in error.message
    assert done.state == record.SUCCEEDED, done.error
    assert done.attempt >= 2, "the takeover did not start it"
    assert done.charged_attempts == 1, "a takeover was charged against max_attempts"


def test_a_live_lease_is_left_alone(tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'store'}"
    alive = JobStore(open_store(storage), owner="server-a", lease_s=60.0)
    job_id = new_job_id(alive, tmp_path)
    with running(storage, tmp_path / "scratch") as server:
        time.sleep(1.0)
        job = server.stores.jobs.get(job_id)
    assert job.state == record.PENDING
    assert job.lease.owner == "server-a"
    assert job.attempt == 0


def test_a_job_lost_while_queued_here_is_adopted_again_only_once_its_entry_left(tmp_path: Path) -> None:
    """A queued job taken over by a server that then died: the sweeper must not queue it a
    second time while its stale entry is still queued here (two workers on one job)."""
    storage = f"file://{tmp_path / 'store'}"
    with running(storage, tmp_path, lease_s=3.0, workers=2, max_queued_jobs=2) as server:
        jobs, executor = server.stores.jobs, server.executor
        model = stored_model(jobs, tmp_path)
        blockers = [
            jobs.create(model, quick_spec(), f"blocker-{i}", {FAULT_LABEL: "hang@prune#*"})[0].id
            for i in range(2)
        ]
        queued, _ = jobs.create(model, quick_spec(), "queued", {})
        for job_id in [*blockers, queued.id]:
            executor.reserve()
            executor.submit(job_id)
        for job_id in blockers:
            while jobs.get(job_id).progress.stage != "prune":
                assert not record.is_terminal(jobs.get(job_id).state)
                time.sleep(0.05)

        def taken_by_a_server_that_dies(job: job_pb2.Job) -> bool:
            lease.stamp(job, "server-c", 0.3)
            return True

        jobs.mutate(queued.id, taken_by_a_server_that_dies)
        time.sleep(2.5)
        for job_id in blockers:
            executor.cancel(job_id)
        done = _wait_terminal(jobs, queued.id, timeout=60)
    assert done.state == record.SUCCEEDED, done.error
    assert done.charged_attempts == 1, (
        "the job ran twice at once (fenced restarts on a busy machine are not charged)"
    )


def test_an_index_entry_whose_record_was_never_written_is_removed_after_two_leases(tmp_path: Path) -> None:
    """A server that died between writing a job's active-index entry and its record leaves no leak."""
    storage = f"file://{tmp_path / 'store'}"
    dead = _dead_server_stores(storage)
    orphan = record.new_job_id()
    dead.store.put_bytes(TenantKeys("default").active(orphan), orphan.encode())
    with running(storage, tmp_path / "scratch", lease_s=2.0) as server:
        assert orphan in server.stores.jobs.active_job_ids()
        time.sleep(1.0)
        assert orphan in server.stores.jobs.active_job_ids(), "removed before two leases passed"
        deadline = time.monotonic() + 60
        while orphan in server.stores.jobs.active_job_ids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orphan not in server.stores.jobs.active_job_ids()
