"""Retention: ended jobs older than ``retention_days`` deleted, and uploads no job references any more
removed after ``gc_grace_hours`` (:mod:`..durable.deletion`, :mod:`..durable.collect`).

Run by the sweeper's thread at most every ``retention_interval_s``. Every replica runs it; the passes
are safe together (deletions are idempotent, and the bytes freed are taken off once).
"""

from __future__ import annotations

import logging
import time

from ...config import Settings
from ...errors import ServiceError
from ..durable.collect import collect_unreferenced
from ..durable.deletion import expire_jobs
from ..durable.storage_errors import is_unavailable
from ..durable.tenants import Tenants

log = logging.getLogger(__name__)


class Retention:
    """The retention pass of one server; :meth:`due` runs it when its interval has passed."""

    def __init__(self, tenants: Tenants, settings: Settings) -> None:
        self._tenants = tenants
        self._keep_s = settings.retention_days * 86400.0
        self._grace_s = settings.gc_grace_hours * 3600.0
        self._interval_s = max(1.0, settings.retention_interval_s)
        self._next = 0.0

    @property
    def enabled(self) -> bool:
        return self._keep_s > 0

    def due(self) -> None:
        """Run a pass when retention is on and the interval has passed since the last one."""
        if not self.enabled or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._interval_s
        try:
            jobs, uploads = self.run_once()
        except ServiceError as exc:
            if not is_unavailable(exc):
                log.warning("retention pass failed: %s", exc)
            return
        if jobs or uploads:
            log.info("retention: deleted %d job(s) and %d unreferenced upload(s)", jobs, uploads)

    def run_once(self, now: float | None = None) -> tuple[int, int]:
        """One pass over every tenant: (jobs deleted, uploads removed)."""
        now = time.time() if now is None else now
        cutoff_ms = int((now - self._keep_s) * 1000)
        jobs = uploads = 0
        for tenant in self._tenants.names():
            stores = self._tenants.stores(tenant)
            jobs += expire_jobs(stores, cutoff_ms)
            uploads += len(collect_unreferenced(stores, self._grace_s, now))
        return jobs, uploads
