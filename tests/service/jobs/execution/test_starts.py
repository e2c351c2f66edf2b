"""Worker starts on a job's record: which are charged against max_attempts, the bound on all starts,
and what an error of the local disk means for the job."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from prunekit.v1 import job_pb2
from prunekit_server.config import Settings
from prunekit_server.errors import Code, ServiceError, is_disk_full
from prunekit_server.jobs.durable import record
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.jobs.execution.starts import begin_start, local_error, record_failure, retry_plan
from prunekit_server.jobs.worker.fence import EXIT_FENCED
from prunekit_server.jobs.worker.main import task_error
from prunekit_server.rpc_status import from_status
from prunekit_server.storage import open_store

from ..conftest import new_job_id

SETTINGS = replace(Settings(), max_worker_starts=4, lease_s=30.0)


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    return JobStore(open_store(f"file://{tmp_path / 'store'}"), owner="server-a", lease_s=30.0)


def test_the_first_start_and_crash_retries_are_charged_infrastructure_restarts_are_not(
    jobs: JobStore, tmp_path: Path
) -> None:
    job_id = new_job_id(jobs, tmp_path)
    counts = []
    for charge in (False, False, True, False):
        job = begin_start(jobs, job_id, "server-a", SETTINGS, charge=charge)
        assert job is not None
        assert job.state == record.RUNNING
        counts.append((job.attempt, job.charged_attempts))
    assert counts == [(1, 1), (2, 1), (3, 2), (4, 2)]


def test_a_job_started_max_worker_starts_times_fails_and_another_owner_s_job_is_not_started(
    jobs: JobStore, tmp_path: Path
) -> None:
    job_id = new_job_id(jobs, tmp_path)
    for _ in range(SETTINGS.max_worker_starts):
        assert begin_start(jobs, job_id, "server-a", SETTINGS, charge=False) is not None
    assert begin_start(jobs, job_id, "server-a", SETTINGS, charge=False) is None
    ended = jobs.get(job_id)
    assert ended.state == record.FAILED
    error = from_status(ended.error)
    assert error.reason == "WORKER_CRASHED"
    assert "4 times (max_worker_starts)" in error.message

    theirs = new_job_id(jobs, tmp_path, "r2")
    assert begin_start(jobs, theirs, "server-b", SETTINGS, charge=True) is None
    assert jobs.get(theirs).attempt == 0
    record_failure(jobs, theirs, "server-b", ServiceError(Code.INTERNAL, "INTERNAL_ERROR", "not mine"))
    assert jobs.get(theirs).state == record.PENDING


def _disk_full() -> OSError:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        os.write(fd, b"x")
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
    raise AssertionError("/dev/full accepted a write")


def test_a_full_disk_is_storage_full_in_the_scratch_space_wherever_it_is_raised(tmp_path: Path) -> None:
    full = _disk_full()
    wrapped = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    wrapped.__cause__ = full
    assert is_disk_full(wrapped)
    for error in (local_error(full), task_error(wrapped, tmp_path)):
        assert (error.code, error.reason, error.metadata) == (
            Code.RESOURCE_EXHAUSTED,
            "STORAGE_FULL",
            {"space": "scratch"},
        )
    assert "No space left on device" in local_error(full).message
    bug = local_error(KeyError("x"))
    assert (bug.code, bug.reason) == (Code.INTERNAL, "INTERNAL_ERROR")
    assert task_error(ValueError("a bug"), tmp_path).reason == "INTERNAL_ERROR"
    assert not is_disk_full(OSError(5, "Input/output error"))


def test_a_crash_while_fine_tuning_is_retried_charged_a_fenced_worker_uncharged() -> None:
    def error(**meta: str) -> ServiceError:
        return ServiceError(Code.INTERNAL, "WORKER_CRASHED", "x", metadata={"stage": "finetune", **meta})

    job = job_pb2.Job(charged_attempts=2)
    assert retry_plan(error(signal="SIGKILL"), job, max_attempts=3) is True
    assert retry_plan(error(signal="SIGKILL"), job, max_attempts=2) is None, "no charged start left"
    assert retry_plan(error(exit_code=str(EXIT_FENCED)), job, max_attempts=1) is False
    assert retry_plan(ServiceError(Code.UNAVAILABLE, "STORAGE_UNAVAILABLE", "x"), job, max_attempts=9) is None
