"""The sweeper: finds jobs whose server is gone and takes them over.

It scans the indexes of active jobs of every tenant (``tenants/<t>/active/``, written at
create and removed once an ended job's checkpoints are deleted, so a scan
costs one listing and one read per unfinished job) when the server starts and every ``interval`` seconds.
A job whose lease expired is offered to the executor, which claims it with a
compare-and-swap and queues it when it has room (else another server, or a
later scan, gets it). An ended job still in the index (cancelled while its
server was gone, or its server died before cleaning up) has its checkpoints
and then its index entry removed. After each scan it calls its ``housekeeping`` (the retention pass,
which keeps its own pace).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from ...errors import ServiceError
from ..durable import lease, record
from ..durable.storage_errors import is_unavailable
from ..durable.tenants import JobRecords
from .background import BackgroundLoop

log = logging.getLogger(__name__)


class Adopter(Protocol):
    """What the sweeper needs of the executor."""

    def holds(self, job_id: str) -> bool: ...

    def adopt(self, job_id: str) -> bool: ...

    def cleanup(self, job_id: str) -> None: ...


class Sweeper(BackgroundLoop):
    """Scans for expired leases on a thread of its own: at :meth:`start`, then every ``interval`` s."""

    def __init__(
        self,
        jobs: JobRecords,
        adopter: Adopter,
        interval: float,
        housekeeping: Callable[[], None] | None = None,
    ) -> None:
        super().__init__("lease-sweeper")
        self._housekeeping = housekeeping
        self._jobs = jobs
        self._orphans: dict[str, float] = {}
        self._orphan_grace_s = 2 * jobs.lease_s
        self._adopter = adopter
        self._interval = max(0.05, interval)

    def sweep(self) -> list[str]:
        """One scan; returns the ids of the jobs taken over."""
        taken: list[str] = []
        active = self._jobs.active_job_ids()
        listed = set(active)
        self._orphans = {k: v for k, v in self._orphans.items() if k in listed}
        for job_id in active:
            if self._stopping.is_set():
                break
            if self._adopter.holds(job_id):
                continue
            try:
                job = self._jobs.get(job_id)
                if record.is_terminal(job.state):
                    self._adopter.cleanup(job_id)
                elif lease.is_expired(job) and self._adopter.adopt(job_id):
                    taken.append(job_id)
            except ServiceError as exc:
                if exc.reason == "JOB_NOT_FOUND":
                    self._orphan(job_id)
                elif is_unavailable(exc):
                    break  # logged once as an outage; the next scan tries again
                else:
                    log.warning("sweep: job %s: %s", job_id, exc)
        return taken

    def _orphan(self, job_id: str) -> None:
        """An index entry without a record: a create in flight, or one whose server died before the
        record was written. Removed once it has stayed without a record for two leases."""
        now = time.monotonic()
        first = self._orphans.setdefault(job_id, now)
        if now - first > self._orphan_grace_s:
            try:
                self._jobs.forget_active(job_id)
            except ServiceError as exc:
                log.warning("sweep: index entry of job %s: %s", job_id, exc)
                return
            del self._orphans[job_id]
            log.info("sweep: removed the index entry of job %s, which never got a record", job_id)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                taken = self.sweep()
                if taken:
                    log.info("took over %d job(s): %s", len(taken), ", ".join(taken))
                if self._housekeeping is not None:
                    self._housekeeping()
            except ServiceError as exc:
                if not is_unavailable(exc):
                    log.warning("sweep failed: %s", exc)
            except Exception:
                log.exception("sweep failed")
            self._stopping.wait(self._interval)
