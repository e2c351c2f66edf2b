"""The caller's tenant quotas (the server's settings, or its credential's own) and their checks."""

from __future__ import annotations

from collections.abc import Callable

from ..auth.identity import Identity
from ..config import Settings
from ..jobs.durable.job_store import JobStore
from ..jobs.durable.usage import ACTIVE_JOBS, Quotas, quota_exceeded


def tenant_quotas(settings: Settings, who: Identity) -> Quotas:
    """``who``'s quotas: its credential's where it sets them, else the server's."""
    active = who.quota_active_jobs
    stored = who.quota_stored_bytes
    return Quotas(
        active_jobs=settings.quota_active_jobs if active is None else active,
        stored_bytes=settings.quota_stored_bytes if stored is None else stored,
    )


def active_jobs_admission(jobs: JobStore, limit: int) -> Callable[[], None] | None:
    """For :meth:`JobStore.create`: QUOTA_EXCEEDED when the tenant has ``limit`` (> 0) jobs PENDING or
    RUNNING already; None without a limit."""
    if limit <= 0:
        return None

    def admit() -> None:
        active = jobs.count_active()
        if active >= limit:
            raise quota_exceeded(ACTIVE_JOBS, limit, active)

    return admit
