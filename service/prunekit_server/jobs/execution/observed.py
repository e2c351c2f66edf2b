"""What the executor tells metrics and the log about a job: its log context, its end, failed starts."""

from __future__ import annotations

import contextlib
import logging

from prunekit.v1 import job_pb2

from ...errors import ServiceError
from ...observability.logs import log_context
from ...observability.metrics import JOB_RETRIES, JOBS_ENDED, WORKER_FAILURES
from ...rpc_status import from_status
from ..durable import record
from ..durable.tenants import Tenants

log = logging.getLogger(__name__)


def job_context(tenants: Tenants, job_id: str) -> contextlib.AbstractContextManager[None]:
    """Every log line of the job's run names the job, its tenant and the request that made it."""
    try:
        job = tenants.get(job_id)
        tenant = tenants.of_job(job_id).jobs.tenant
    except ServiceError:
        return log_context(job_id=job_id)
    return log_context(job_id=job_id, tenant=tenant, request_id=job.request_id or None)


def count_end(job: job_pb2.Job) -> None:
    """``prunekit_jobs_ended_total`` by the ended job's state and reason."""
    reason = from_status(job.error).reason if job.HasField("error") else ""
    JOBS_ENDED.labels(record.state_name(job.state), reason).inc()
    log.info("job %s: ended %s%s", job.id, record.state_name(job.state), f" {reason}" if reason else "")


def count_failed_start(error: ServiceError, retry: bool | None) -> None:
    """A worker start that ended in ``error``: a worker failure (``WORKER_*`` reasons) and, when it is
    started again (``retry`` not None), a retry, charged or not."""
    if error.reason.startswith("WORKER_"):
        WORKER_FAILURES.labels(error.reason).inc()
    if retry is not None:
        JOB_RETRIES.labels("true" if retry else "false").inc()
