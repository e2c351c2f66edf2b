"""Runs jobs and analyses in sandboxed worker processes.

Jobs of every tenant share the workers; a job is addressed by its id (random across tenants) and
runs on its tenant's stores (:class:`~..durable.tenants.Tenants`). A bounded queue feeds ``workers``
dispatcher threads; each runs one job at a time in its own worker process (see :mod:`.sandbox`) and
publishes the results (see :mod:`..durable.publish`). Analyses run on as many slots of their own,
synchronously for the caller.

Durability: every queued or running job is leased to this server and renewed by a
:class:`~.lease_keeper.LeaseKeeper`; a :class:`~.sweeper.Sweeper` takes over jobs whose lease
expired. A worker killed by a signal while fine-tuning starts again (from its checkpoint) while
fewer than ``max_attempts`` starts were charged (:mod:`.starts`); a fenced worker starts again
after a backoff, uncharged; storage outages are waited out for ``storage_retry_s``; other failures
end the job. On shutdown, jobs that fine-tune are released for another server to resume; the
others fail with SERVER_SHUTTING_DOWN.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from prunekit.v1 import job_pb2, model_pb2

from ...config import Settings
from ...errors import Code, ServiceError
from ...model_caps import ModelCaps
from ...observability.logs import log_context
from ...observability.metrics import JOBS
from ..durable import lease, record
from ..durable.keys import DEFAULT_TENANT
from ..durable.model_store import ModelStore
from ..durable.publish import complete_from_manifest
from ..durable.storage_errors import is_unavailable, pause, retrying
from ..durable.tenants import Tenants
from ..worker.faults import FAULT_LABEL, is_fenced
from .analysis import Analyzer
from .attempt import attempt_in_scratch
from .lease_keeper import LeaseKeeper
from .observed import count_end, count_failed_start, job_context
from .retention import Retention
from .sandbox import StopRequest, WorkerLimits, worker_env
from .seam import CANCELLED_BY_CALL, cleanup, mark_cancelled, shutting_down
from .starts import begin_start, record_failure, retry_plan
from .sweeper import Sweeper
from .warm import WarmWorkers

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["FAULT_LABEL", "JobExecutor"]

_LEASE_LOST = "LEASE_LOST"
_RELEASED = "LEASE_RELEASED"
_UNFINISHED = "the server shut down before the job finished; submit it again"


class JobExecutor:
    """The ``local`` :class:`~.seam.Executor`: the worker pool of one server process."""

    def __init__(self, tenants: Tenants, settings: Settings) -> None:
        self._tenants = self._jobs = tenants
        self._settings = settings
        if not tenants.owner:
            tenants.owner = lease.new_server_id(settings.server_id)
        self.owner = tenants.owner
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._outstanding = 0
        self._accepting = True
        self._running: dict[str, StopRequest] = {}
        self._inflight: set[str] = set()
        self._lost: set[str] = set()
        self._released: set[str] = set()
        self._keeper = LeaseKeeper(tenants, self.owner, settings.lease_s, self._lease_lost)
        self._sweeper = Sweeper(tenants, self, settings.sweep_interval_s, Retention(tenants, settings).due)
        self._threads = [
            threading.Thread(target=self._dispatch, name=f"job-worker-{i}", daemon=True)
            for i in range(max(1, settings.workers))
        ]
        self._limits = WorkerLimits.from_settings(settings)
        self.model_caps = ModelCaps(memory_bytes=self._limits.budget_bytes)
        log.info(
            "worker memory %d MiB, RLIMIT_AS %d MiB (0: none)",
            self._limits.budget_bytes >> 20,
            self._limits.memory_bytes >> 20,
        )
        self._warm = WarmWorkers(worker_env, settings.scratch_path()) if settings.warm_workers else None
        self._analyzer = Analyzer(settings, self._limits, self._warm)

    @property
    def warm_workers(self) -> WarmWorkers | None:
        """The zygote that forks this server's workers; None with ``warm_workers`` off."""
        return self._warm

    def start(self) -> None:
        """Start the warm worker, the dispatchers, the lease keeper and the sweeper (first scan now)."""
        if self._warm is not None:
            self._warm.start()
        for thread in self._threads:
            thread.start()
        self._keeper.start()
        self._sweeper.start()

    # -- admission ------------------------------------------------------------------------------

    def reserve(self) -> None:
        """Take a place for one more job, or raise QUEUE_FULL / SERVER_SHUTTING_DOWN."""
        if not self._try_reserve():
            if not self._accepting:
                raise shutting_down()
            raise ServiceError(
                Code.RESOURCE_EXHAUSTED,
                "QUEUE_FULL",
                f"{self._outstanding} jobs are queued or running (the limit); retry later",
                retry_after_s=5.0,
            )

    def _try_reserve(self) -> bool:
        with self._lock:
            capacity = self._settings.workers + self._settings.max_queued_jobs
            if not self._accepting or self._outstanding >= capacity:
                return False
            self._outstanding += 1
            return True

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` that no job used."""
        with self._lock:
            self._outstanding -= 1

    def submit(self, job_id: str, tenant: str = DEFAULT_TENANT) -> None:
        """Queue a stored job of ``tenant`` leased to this server, on a place taken by :meth:`reserve`.

        A job created while this server began shutting down is not queued: its lease ends at once, so
        another server (or this one's next start) takes it over without waiting for the lease to expire.
        """
        self._tenants.hold(job_id, tenant)
        with self._lock:  # shutdown puts its stop markers under this lock: a job is queued before them
            accepting = self._accepting
            if accepting:
                self._inflight.add(job_id)
                self._keeper.hold(job_id)
                self._queue.put(job_id)
                JOBS.labels("queued").inc()
            else:
                self._outstanding -= 1
        if not accepting:
            self._keeper.release(job_id)
            self._tenants.drop(job_id)

    def adopt(self, job_id: str) -> bool:
        """Take over a job whose lease expired if a place is free; True when it was queued here.

        Never a job still queued or running here (one whose lease this server lost while it
        waited): its entry leaves the queue first, then a later scan may take it over.
        """
        if self.holds(job_id) or not self._try_reserve():
            return False
        claimed = False

        def claim(job: job_pb2.Job) -> bool:
            nonlocal claimed
            claimed = not record.is_terminal(job.state) and lease.is_expired(job)
            if claimed:
                lease.stamp(job, self.owner, self._settings.lease_s)
            return claimed

        try:
            job = self._jobs.mutate(job_id, claim)
        except ServiceError:
            self.release()
            raise
        if not claimed:
            self.release()
            return False
        log.info("job %s: taken over after %d worker starts", job_id, job.attempt)
        self.submit(job_id, self._tenants.of_job(job_id).jobs.tenant)
        return True

    def holds(self, job_id: str) -> bool:
        """Whether this server holds (renews) the job's lease, or still has it queued or running."""
        with self._lock:
            if job_id in self._inflight:
                return True
        return self._keeper.holds(job_id)

    def cleanup(self, job_id: str) -> None:
        """See :func:`.seam.cleanup`."""
        cleanup(self._tenants.of_job(job_id), job_id)

    def cancel(self, job_id: str, tenant: str = DEFAULT_TENANT) -> job_pb2.Job:
        """Mark the job of ``tenant`` CANCELLED and stop its worker if it runs here; JOB_NOT_FOUND when
        ``tenant`` has no such job."""
        job = mark_cancelled(self._tenants.stores(tenant).jobs, job_id)
        with self._lock:
            stop = self._running.get(job_id)
        if stop is not None:
            stop.stop(ServiceError(Code.CANCELLED, "JOB_CANCELLED", CANCELLED_BY_CALL))
        return job

    def _lease_lost(self, job_id: str) -> None:
        with self._lock:
            self._lost.add(job_id)
            stop = self._running.get(job_id)
        if stop is not None:
            stop.stop(ServiceError(Code.ABORTED, _LEASE_LOST, "another server took the job over"))

    # -- jobs -----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            JOBS.labels("queued").dec()
            try:
                with job_context(self._tenants, job_id):
                    if self._accepting:
                        self._run(job_id)
                    else:
                        self._leave(job_id)
            except Exception:
                log.exception("job %s: executor error", job_id)
            finally:
                self._keeper.drop(job_id)
                self._tenants.drop(job_id)
                with self._lock:
                    self._outstanding -= 1
                    self._inflight.discard(job_id)
                    self._lost.discard(job_id)
                    self._released.discard(job_id)

    def _leave(self, job_id: str) -> None:
        """A queued job at shutdown: released when it fine-tunes, failed otherwise."""
        if self._jobs.get(job_id).spec.HasField("finetune"):
            self._keeper.release(job_id)
        else:
            self._end(job_id, shutting_down())

    def _run(self, job_id: str) -> None:
        """Run a queued job to its end here, or leave it (lost, released, storage gone too long)."""
        try:
            if not self._waiting(
                job_id, lambda: complete_from_manifest(self._tenants.of_job(job_id), job_id, owner=self.owner)
            ):
                self._starts(job_id)
            ended = self._jobs.get(job_id)
            if record.is_terminal(ended.state):
                count_end(ended)
                self.cleanup(job_id)
        except ServiceError as exc:
            if not is_unavailable(exc):
                raise
            log.warning("job %s: object storage unavailable (%s); left to be taken over", job_id, exc.message)

    def _starts(self, job_id: str) -> None:
        """Worker starts until the job ends or is no longer ours: a crash while fine-tuning is
        retried, charged against ``max_attempts``; a fenced worker (an infrastructure event) is
        started again after a backoff, not charged."""
        charge, restarts = False, 0
        while True:
            with self._lock:
                if job_id in self._lost:  # lost while it waited here: not ours to start
                    return
            start = functools.partial(
                begin_start, self._jobs, job_id, self.owner, self._settings, charge=charge
            )
            job = self._waiting(job_id, start)
            if job is None:
                return
            with log_context(attempt=job.attempt):
                log.info("job %s: worker start %d", job_id, job.attempt)
                error = self._attempt(job)
            with self._lock:
                lost, released, accepting = job_id in self._lost, job_id in self._released, self._accepting
            if lost:
                log.warning("job %s: lease lost; left unpublished to its new owner", job_id)
                return
            if released or error is None:
                if released:
                    self._keeper.release(job_id)
                return
            if is_fenced(error) and not self._keeper.renew(job_id):
                log.warning("job %s: lease lost while its worker was fenced; left to its owner", job_id)
                return
            plan = retry_plan(error, job, self._settings.max_attempts)
            count_failed_start(error, plan)
            if plan is None:
                self._end(job_id, error)
                return
            charge, restarts = plan, 0 if plan else restarts + 1
            backoff = 0.0 if charge else min(0.5 * 2 ** (restarts - 1), 30.0)
            then = f"starting again in {backoff:.1f} s" if accepting else "released to resume elsewhere"
            note = "charged" if charge else "not charged"
            log.warning("job %s: start %d failed (%s); %s (%s)", job_id, job.attempt, error, then, note)
            if not accepting or not pause(backoff, lambda: self._gone(job_id)):
                with self._lock:
                    lost = job_id in self._lost
                if not lost:
                    self._keeper.release(job_id)
                return

    def _waiting(self, job_id: str, action: Callable[[], T], budget_s: float | None = None) -> T:
        """``action()``, a storage outage waited out for up to ``budget_s`` (``storage_retry_s``) seconds
        while the job is still ours and the server is not shutting down."""
        budget = self._settings.storage_retry_s if budget_s is None else budget_s
        return retrying(action, budget_s=budget, stopped=lambda: self._gone(job_id))

    def _gone(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._lost or not self._accepting

    def _attempt(self, job: job_pb2.Job) -> ServiceError | None:
        """One worker start (see :func:`.attempt.run_attempt`), stoppable while it runs; the error it
        ended with, or None."""
        stop = StopRequest()
        with self._lock:
            self._running[job.id] = stop
        try:
            stores = self._tenants.of_job(job.id)
            return attempt_in_scratch(
                stores, self._settings, self._keeper, job, stop, self._limits, self._warm
            )
        finally:
            with self._lock:
                self._running.pop(job.id, None)

    def _end(self, job_id: str, error: ServiceError) -> None:
        """Record the job FAILED with ``error`` once storage answers, unless the job is lost first (its
        lease runs out while storage is down: whoever takes it over then runs it again)."""
        budget = self._settings.storage_retry_s + self._settings.lease_s
        try:
            self._waiting(job_id, lambda: record_failure(self._jobs, job_id, self.owner, error), budget)
        except ServiceError as exc:
            log.warning("job %s: could not record its failure (%s): %s", job_id, error, exc)

    # -- analyses -------------------------------------------------------------------------------

    def analyze(
        self,
        models: ModelStore,
        model: model_pb2.ModelRef,
        inputs: Sequence[model_pb2.InputSpec],
        timeout: float,
        *,
        sensitivity: bool = False,
        sensitivity_ratios: Sequence[float] = (),
    ) -> model_pb2.ModelAnalysis:
        """Analyse a model of ``models`` in a worker (see :meth:`Analyzer.analyze`)."""
        if not self._accepting:
            raise shutting_down()
        return self._analyzer.analyze(
            models, model, inputs, timeout, sensitivity=sensitivity, sensitivity_ratios=sensitivity_ratios
        )

    # -- shutdown -------------------------------------------------------------------------------
    def shutdown(self, grace: float) -> None:
        """Stop taking work, let running jobs finish for ``grace`` seconds, then stop them.

        A stopped job that fine-tunes is released (its lease ends now, its
        checkpoints are uploaded) so another server or the next start resumes
        it; any other fails with SERVER_SHUTTING_DOWN.
        """
        with self._lock:
            self._accepting = False
            for _ in self._threads:
                self._queue.put(None)
        self._sweeper.stop()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    break
            time.sleep(0.05)
        with self._lock:
            running = dict(self._running)
        for job_id, stop in running.items():
            try:
                fine_tunes = self._jobs.get(job_id).spec.HasField("finetune")
            except ServiceError:
                fine_tunes = False
            if fine_tunes:
                with self._lock:
                    self._released.add(job_id)
            reason, message = (_RELEASED, "released") if fine_tunes else ("SERVER_SHUTTING_DOWN", _UNFINISHED)
            stop.stop(ServiceError(Code.UNAVAILABLE, reason, message))
        for thread in self._threads:
            thread.join(timeout=30)
        self._keeper.stop()
        if self._warm is not None:
            self._warm.close()
