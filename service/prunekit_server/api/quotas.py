"""The caller's tenant quotas (the server's settings, or its credential's own) and their checks."""

from __future__ import annotations

from collections.abc import Callable

from ..auth.identity import Identity
from ..config import Settings
from ..jobs.durable.job_store import JobStore
from ..jobs.durable.seats import Seats
from ..jobs.durable.usage import Quotas


def tenant_quotas(settings: Settings, who: Identity) -> Quotas:
    """``who``'s quotas: its credential's where it sets them, else the server's."""
    active = who.quota_active_jobs
    stored = who.quota_stored_bytes
    return Quotas(
        active_jobs=settings.quota_active_jobs if active is None else active,
        stored_bytes=settings.quota_stored_bytes if stored is None else stored,
    )


def active_jobs_admission(jobs: JobStore, limit: int) -> Callable[[str], None] | None:
    """For :meth:`JobStore.create`: a seat for the new job (see :mod:`..jobs.durable.seats`), or
    QUOTA_EXCEEDED when the tenant's ``limit`` (> 0) jobs hold every seat and are still PENDING or
    RUNNING; None without a limit."""
    if limit <= 0:
        return None
    seats = Seats(jobs.store, jobs.tenant)

    def admit(job_id: str) -> None:
        seats.take(job_id, limit, jobs.liveness, jobs.active_job_ids)

    return admit
