"""A job's worker starts on its record: counting them (charged or not) and recording how the job ended.

``Job.attempt`` counts every worker start; ``Job.charged_attempts`` only those charged against
``max_attempts``: the first, and each retry after a crash (see :func:`..worker.faults.is_retryable`).
A restart after an infrastructure event (a fenced worker, a takeover) is not charged;
``max_worker_starts`` bounds starts in all.
"""

from __future__ import annotations

import logging
import time

from prunekit.v1 import job_pb2

from ...config import Settings
from ...errors import Code, ServiceError, is_disk_full, scratch_full
from ..durable import lease, record
from ..durable.tenants import JobRecords
from ..worker.faults import is_fenced, is_retryable

log = logging.getLogger(__name__)


def begin_start(
    jobs: JobRecords, job_id: str, owner: str, settings: Settings, *, charge: bool
) -> job_pb2.Job | None:
    """Count one more worker start of a job leased to ``owner``; the job, or None when it is not ours
    to run (ended, or leased to another server).

    ``charge`` charges the start against ``max_attempts`` (a retry after a crash); a job's first
    start is always charged. A job already started ``max_worker_starts`` times fails with
    WORKER_CRASHED instead (and None is returned).
    """

    def to_running(job: job_pb2.Job) -> bool:
        if record.is_terminal(job.state) or job.lease.owner != owner:
            return False
        if job.attempt >= settings.max_worker_starts:
            message = (
                f"the job's worker was started {job.attempt} times (max_worker_starts): "
                "its workers or servers kept being lost"
            )
            record.fail(job, ServiceError(Code.INTERNAL, "WORKER_CRASHED", message))
            return True
        if job.state == record.PENDING:
            record.transition(job, record.RUNNING)
        job.attempt += 1
        if charge or job.charged_attempts == 0:
            job.charged_attempts += 1
        lease.stamp(job, owner, settings.lease_s)
        message = "worker starting" if job.attempt == 1 else f"worker starting (start {job.attempt})"
        job.progress.CopyFrom(job_pb2.JobProgress(stage="starting", fraction=0.0, message=message))
        return True

    job = jobs.mutate(job_id, to_running)
    return job if job.state == record.RUNNING and job.lease.owner == owner else None


def record_failure(jobs: JobRecords, job_id: str, owner: str, error: ServiceError) -> None:
    """End a job leased to ``owner`` (or to nobody) FAILED with ``error``; raises when storage fails."""

    def to_failed(job: job_pb2.Job) -> bool:
        if record.is_terminal(job.state) or job.lease.owner not in ("", owner):
            return False
        record.fail(job, error)
        return True

    jobs.mutate(job_id, to_failed)


def retry_plan(error: ServiceError, job: job_pb2.Job, max_attempts: int) -> bool | None:
    """How a job goes on after a start that failed with ``error``: None, it ends with the error;
    True, it starts again charged (a crash while fine-tuning, fewer than ``max_attempts`` charged);
    False, it starts again uncharged (a worker stopped by its fence)."""
    if is_fenced(error):
        return False
    if is_retryable(error) and job.charged_attempts < max_attempts:
        return True
    return None


def start_timeout(job: job_pb2.Job, settings: Settings) -> tuple[float, bool]:
    """The wall-clock limit of this start of ``job`` and whether the spec's ``timeout_seconds`` sets it
    (what is left of it since the job's first start) rather than the server's ``job_timeout_s``."""
    own = job.spec.timeout_seconds
    if not own:
        return settings.job_timeout_s, False
    elapsed = (
        max(0.0, time.time() - job.start_time.ToNanoseconds() / 1e9) if job.HasField("start_time") else 0.0
    )
    left = own - elapsed
    return (left, True) if left < settings.job_timeout_s else (settings.job_timeout_s, False)


def job_timeout(job: job_pb2.Job, stage: str) -> ServiceError:
    """DEADLINE_EXCEEDED JOB_TIMEOUT: the job ran past its spec's ``timeout_seconds``."""
    seconds = f"{job.spec.timeout_seconds:g}"
    return ServiceError(
        Code.DEADLINE_EXCEEDED,
        "JOB_TIMEOUT",
        f"the job ran past its timeout_seconds ({seconds} s) during stage {stage!r}",
        metadata={"timeout_seconds": seconds, "stage": stage},
    )


def local_error(exc: Exception) -> ServiceError:
    """What an unexpected error of a job's start on this server means for the job.

    A full scratch filesystem is RESOURCE_EXHAUSTED (STORAGE_FULL); anything else is a bug
    (INTERNAL, logged with its traceback).
    """
    if is_disk_full(exc):
        return scratch_full(exc)
    log.error("unexpected error in a job's start", exc_info=exc)
    return ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
