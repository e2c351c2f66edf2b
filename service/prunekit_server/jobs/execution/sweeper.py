"""The sweeper: finds jobs whose server is gone and takes them over.

It scans the index of active jobs (``tenants/<t>/active/``, written at
create and removed once an ended job's checkpoints are deleted, so a scan
costs one listing and one read per unfinished job) when the server starts and every ``interval`` seconds.
A job whose lease expired is offered to the executor, which claims it with a
compare-and-swap and queues it when it has room (else another server, or a
later scan, gets it). An ended job still in the index (cancelled while its
server was gone, or its server died before cleaning up) has its checkpoints
and then its index entry removed.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ...errors import ServiceError
from ..durable import lease, record
from ..durable.job_store import JobStore
from .background import BackgroundLoop

log = logging.getLogger(__name__)


class Adopter(Protocol):
    """What the sweeper needs of the executor."""

    def holds(self, job_id: str) -> bool: ...

    def adopt(self, job_id: str) -> bool: ...

    def cleanup(self, job_id: str) -> None: ...


class Sweeper(BackgroundLoop):
    """Scans for expired leases on a thread of its own: at :meth:`start`, then every ``interval`` s."""

    def __init__(self, jobs: JobStore, adopter: Adopter, interval: float) -> None:
        super().__init__("lease-sweeper")
        self._jobs = jobs
        self._adopter = adopter
        self._interval = max(0.05, interval)

    def sweep(self) -> list[str]:
        """One scan; returns the ids of the jobs taken over."""
        taken: list[str] = []
        for job_id in self._jobs.active_job_ids():
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
                if exc.reason != "JOB_NOT_FOUND":
                    log.warning("sweep: job %s: %s", job_id, exc)
        return taken

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                taken = self.sweep()
                if taken:
                    log.info("took over %d job(s): %s", len(taken), ", ".join(taken))
            except Exception:
                log.exception("sweep failed")
            self._stopping.wait(self._interval)
