"""Renewing the leases of the jobs this server runs, and giving them up (see :mod:`..durable.lease`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prunekit.v1 import job_pb2

from ...errors import ServiceError
from ..durable import record
from ..durable.lease import expire_now, stamp
from ..durable.storage_errors import is_unavailable
from ..durable.tenants import JobRecords
from ..worker.fence import FENCE_SHARE
from .background import BackgroundLoop

log = logging.getLogger(__name__)


class LeaseKeeper(BackgroundLoop):
    """Renews the leases of the jobs this server holds, on a thread of its own.

    ``on_lost(job_id)`` is called (from that thread, or from :meth:`renew`'s
    caller) once for a held job whose record names another owner, or whose
    renewals failed for ``lease_s`` seconds. A job that ended is dropped
    silently (a cancellation is noticed by the executor's poll).
    """

    def __init__(self, jobs: JobRecords, owner: str, lease_s: float, on_lost: Callable[[str], None]) -> None:
        super().__init__("lease-keeper")
        self._jobs = jobs
        self.owner = owner
        self.lease_s = lease_s
        #: The fence of the workers of held jobs (see :mod:`..worker.fence`): a share of the lease.
        self.fence_s = lease_s * FENCE_SHARE
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}

    def hold(self, job_id: str) -> None:
        """Start renewing ``job_id`` (its record already names this owner)."""
        with self._lock:
            self._held[job_id] = time.monotonic()

    def drop(self, job_id: str) -> None:
        """Stop renewing ``job_id``."""
        with self._lock:
            self._held.pop(job_id, None)

    def renewed_at(self, job_id: str) -> float | None:
        """``time.monotonic()`` of the job's last successful renewal (or hold); None when not held."""
        with self._lock:
            return self._held.get(job_id)

    def fresh(self, job_id: str, within: float) -> bool:
        """Whether ``job_id`` is held and was renewed (or taken) less than ``within`` seconds ago."""
        renewed = self.renewed_at(job_id)
        return renewed is not None and time.monotonic() - renewed < within

    def holds(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._held

    def renew(self, job_id: str) -> bool:
        """Extend the lease now; False (after ``on_lost``) when the job is no longer ours.

        Also False, without ``on_lost``, when the job has ended.
        """
        lost = ended = gave_up = False

        def extend(job: job_pb2.Job) -> bool:
            nonlocal lost, ended
            ended = record.is_terminal(job.state)
            lost = not ended and job.lease.owner != self.owner  # publishing clears the lease
            if lost or ended:
                return False
            stamp(job, self.owner, self.lease_s)
            return True

        renewed = time.monotonic()  # before the write: the lease runs from no later than this
        try:
            self._jobs.mutate(job_id, extend)
        except ServiceError as exc:
            with self._lock:
                since = self._held.get(job_id)
            if since is None or time.monotonic() - since < self.lease_s:
                level = logging.DEBUG if is_unavailable(exc) else logging.WARNING
                log.log(level, "job %s: lease renewal failed (%s); retrying", job_id, exc)
                return True
            log.error(
                "job %s: no lease renewal for %.0f s; giving the job up to whichever server takes it over",
                job_id,
                self.lease_s,
            )
            lost = gave_up = True
        if lost or ended:
            with self._lock:
                held = self._held.pop(job_id, None) is not None
            if lost and held:
                if not gave_up:
                    log.warning("job %s: lease lost to another server", job_id)
                self._on_lost(job_id)
            return False
        with self._lock:
            if job_id in self._held:
                self._held[job_id] = renewed
        return True

    def release(self, job_id: str) -> bool:
        """Stop renewing and end the lease now, so another server takes the job over at once.

        True when the record still named this owner and was released.
        """
        self.drop(job_id)
        released = False

        def expire(job: job_pb2.Job) -> bool:
            nonlocal released
            released = job.lease.owner == self.owner and not record.is_terminal(job.state)
            if released:
                expire_now(job)
                job.progress.message = "released by a server shutting down; another server resumes it"
            return released

        try:
            self._jobs.mutate(job_id, expire)
        except ServiceError as exc:
            log.warning("job %s: could not release its lease (it expires on its own): %s", job_id, exc)
        return released

    def _loop(self) -> None:
        interval = max(0.05, self.lease_s / 3)
        while not self._stopping.wait(interval):
            with self._lock:
                held = list(self._held)
            for job_id in held:
                if self._stopping.is_set():
                    return
                try:
                    self.renew(job_id)
                except Exception:
                    log.exception("job %s: lease renewal error", job_id)
