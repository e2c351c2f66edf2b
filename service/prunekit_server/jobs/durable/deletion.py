"""Deleting an ended job (DeleteJob, and retention): its listing entry, request claim, artifacts,
manifest, checkpoints and, last, its record.

The record goes last, so a deletion that stops half-way (a crash, an outage) leaves a job that is still
listed by GetJob and is finished by the next DeleteJob or retention pass. The artifacts' bytes are taken
off the tenant's stored bytes once: by the deleter that wins the ``deleting`` marker (a conditional put),
so two replicas deleting the same job at once do not take them off twice.
"""

from __future__ import annotations

from prunekit.v1 import job_pb2

from ...errors import Code, ServiceError
from ...storage import PreconditionFailed
from . import record
from .keys import TenantKeys
from .storage_errors import storage_errors
from .stores import TenantStores


def job_active(job: job_pb2.Job) -> ServiceError:
    """FAILED_PRECONDITION JOB_ACTIVE: a PENDING or RUNNING job cannot be deleted."""
    state = record.state_name(job.state)
    return ServiceError(
        Code.FAILED_PRECONDITION,
        "JOB_ACTIVE",
        f"job {job.id} is {state}; cancel it before deleting it",
        metadata={"job_id": job.id, "state": state},
    )


def delete_job(stores: TenantStores, job_id: str) -> bool:
    """Delete the ended job ``job_id`` of ``stores``' tenant; False when it has no record (already deleted,
    never made). JOB_ACTIVE for a PENDING or RUNNING job."""
    try:
        job = stores.jobs.get(job_id)
    except ServiceError as exc:
        if exc.reason == "JOB_NOT_FOUND":
            return False
        raise
    if not record.is_terminal(job.state):
        raise job_active(job)
    keys = TenantKeys(stores.jobs.tenant)
    millis = job.create_time.seconds * 1000 + job.create_time.nanos // 1_000_000
    marker = f"{keys.job(job.id).rsplit('/', 1)[0]}/deleting"
    counted = sum(a.size_bytes for a in stores.artifacts.manifest(job.id) or [])
    with storage_errors(writing=True):
        won = _claim(stores, marker)
        for key in (keys.index_entry(job.id, millis), keys.request(job.request_id), keys.active(job.id)):
            stores.store.delete(key)
        prefix = keys.job(job.id).rsplit("/", 1)[0] + "/"
        for key in stores.store.list_keys(prefix):
            if key not in (keys.job(job.id), marker):
                stores.store.delete(key)
    if won and counted:
        stores.usage.add(-counted)
    with storage_errors(writing=True):
        stores.store.delete(keys.job(job.id))
        stores.store.delete(marker)
    return True


def _claim(stores: TenantStores, marker: str) -> bool:
    try:
        stores.store.put_bytes(marker, b"{}", if_absent=True)
    except PreconditionFailed:
        return False
    return True


def expire_jobs(stores: TenantStores, cutoff_ms: int) -> int:
    """Delete the tenant's ended jobs that were created and ended before ``cutoff_ms`` (Unix ms); the
    number deleted. Only listing entries older than the cutoff are read (the index sorts by age)."""
    keys = TenantKeys(stores.jobs.tenant)
    start = keys.index_entry("", cutoff_ms).rstrip("-")
    deleted = 0
    with storage_errors():
        entries = stores.store.list_keys(keys.index_prefix, start_after=start)
    for entry in entries:
        job_id = entry[len(keys.index_prefix) :].split("-", 1)[-1]
        try:
            job = stores.jobs.get(job_id)
        except ServiceError as exc:
            if exc.reason != "JOB_NOT_FOUND":
                raise
            continue
        ended_ms = job.end_time.seconds * 1000 + job.end_time.nanos // 1_000_000
        if record.is_terminal(job.state) and ended_ms < cutoff_ms and delete_job(stores, job_id):
            deleted += 1
    return deleted
