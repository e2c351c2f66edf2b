"""Runs jobs and analyses in sandboxed worker processes.

Jobs of every tenant share the workers; a job is addressed by its id (random across tenants) and
runs on its tenant's stores (:class:`~..durable.tenants.Tenants`). A bounded queue feeds ``workers``
dispatcher threads; each runs one job at a time in its own worker process (see :mod:`.sandbox`) and
publishes the results (see :mod:`..durable.publish`). Analyses run on as many slots of their own,
synchronously for the caller.

Durability: every queued or running job is leased to this server and renewed
by a :class:`~.lease_keeper.LeaseKeeper`; a :class:`~.sweeper.Sweeper` takes over
jobs whose lease expired. Before each worker start the job's checkpoints are
restored from storage, and the worker's new ones are uploaded as it
announces them (:mod:`..durable.checkpoint_sync`). A worker killed by a signal during
stage "finetune" is started again, up to ``max_attempts`` starts in all
(while shutting down it is released instead); other failures end the job. On
shutdown, jobs that fine-tune are released (their lease ends now) for another
server, or the next start, to resume from their checkpoint; the others fail
with SERVER_SHUTTING_DOWN.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from prunekit.v1 import job_pb2, model_pb2

from ...config import Settings
from ...errors import Code, ServiceError
from ...model_caps import ModelCaps
from ..durable import lease, record
from ..durable.keys import DEFAULT_TENANT
from ..durable.model_store import ModelStore
from ..durable.publish import complete_from_manifest
from ..durable.tenants import Tenants
from ..worker.faults import FAULT_LABEL, is_retryable
from ..worker.memory import worker_memory_limits
from ..worker.threads import usable_cpus
from .analysis import Analyzer
from .attempt import run_attempt
from .lease_keeper import LeaseKeeper
from .sandbox import StopRequest, WorkerLimits, worker_env
from .sweeper import Sweeper
from .warm import WarmWorkers

log = logging.getLogger(__name__)

__all__ = ["FAULT_LABEL", "JobExecutor"]

_LEASE_LOST = "LEASE_LOST"
_RELEASED = "LEASE_RELEASED"
_UNFINISHED = "the server shut down before the job finished; submit it again"


def _shutting_down() -> ServiceError:
    return ServiceError(
        Code.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "the server is shutting down; retry on another"
    )


class JobExecutor:
    """The worker pool of one server process."""

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
        self._sweeper = Sweeper(tenants, self, settings.sweep_interval_s)
        self._threads = [
            threading.Thread(target=self._dispatch, name=f"job-worker-{i}", daemon=True)
            for i in range(max(1, settings.workers))
        ]
        address_space, budget = worker_memory_limits(settings.worker_memory_bytes, settings.workers)
        self.model_caps = ModelCaps(memory_bytes=budget)
        log.info("worker memory %d MiB, RLIMIT_AS %d MiB (0: none)", budget >> 20, address_space >> 20)
        self._limits = WorkerLimits(
            memory_bytes=address_space,
            budget_bytes=budget,
            cpu_seconds=settings.worker_cpu_seconds,
            file_bytes=settings.worker_file_bytes,
            open_files=settings.worker_open_files,
            threads=settings.worker_threads or max(1, usable_cpus() // max(1, settings.workers)),
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
                raise _shutting_down()
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
        """Drop an ended job's checkpoints and its entry in the index of active jobs."""
        artifacts = self._tenants.of_job(job_id).artifacts
        artifacts.delete_prefix(artifacts.checkpoint_prefix(job_id))
        self._jobs.forget_active(job_id)

    def cancel(self, job_id: str, tenant: str = DEFAULT_TENANT) -> job_pb2.Job:
        """Mark the job of ``tenant`` CANCELLED and stop its worker if it runs here; JOB_NOT_FOUND when
        ``tenant`` has no such job."""

        def to_cancelled(job: job_pb2.Job) -> bool:
            record.fail(job, ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled by CancelJob"))
            return True

        job = self._tenants.stores(tenant).jobs.mutate(job_id, to_cancelled)
        with self._lock:
            stop = self._running.get(job_id)
        if stop is not None:
            stop.stop(ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled by CancelJob"))
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
            try:
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
            self._end(job_id, _shutting_down())

    def _run(self, job_id: str) -> None:
        if complete_from_manifest(self._tenants.of_job(job_id), job_id, owner=self.owner):
            self.cleanup(job_id)
            return
        while True:
            job = self._start_attempt(job_id)
            if job is None:
                break
            try:
                error = self._attempt(job)
            except ServiceError as exc:
                error = exc
            except Exception as exc:
                log.exception("job %s failed", job_id)
                error = ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
            with self._lock:
                lost, released = job_id in self._lost, job_id in self._released
            if lost:
                log.warning("job %s: lease lost; left unpublished to its new owner", job_id)
                return
            if released:
                self._keeper.release(job_id)
                return
            if error is None:
                break
            if is_retryable(error) and job.attempt < self._settings.max_attempts:
                then = "resuming from its checkpoint" if self._accepting else "released to resume elsewhere"
                log.warning("job %s: start %d failed (%s); %s", job_id, job.attempt, error, then)
                if self._accepting:
                    continue
                self._keeper.release(job_id)
                return
            self._end(job_id, error)
            break
        if record.is_terminal(self._jobs.get(job_id).state):
            self.cleanup(job_id)

    def _start_attempt(self, job_id: str) -> job_pb2.Job | None:
        """Count one more worker start on the record; None when the job is not ours to run.

        A job that already had ``max_attempts`` starts (its servers kept
        dying) fails with WORKER_CRASHED instead. A job whose lease was lost while it
        waited in the queue is not started.
        """
        max_attempts = self._settings.max_attempts
        with self._lock:
            if job_id in self._lost:
                return None

        def to_running(job: job_pb2.Job) -> bool:
            if record.is_terminal(job.state) or job.lease.owner != self.owner:
                return False
            if job.attempt >= max_attempts:
                message = f"the job's worker or server was lost {job.attempt} times (the limit)"
                record.fail(job, ServiceError(Code.INTERNAL, "WORKER_CRASHED", message))
                return True
            if job.state == record.PENDING:
                record.transition(job, record.RUNNING)
            job.attempt += 1
            lease.stamp(job, self.owner, self._settings.lease_s)
            message = "worker starting" if job.attempt == 1 else f"worker starting (start {job.attempt})"
            job.progress.CopyFrom(job_pb2.JobProgress(stage="starting", fraction=0.0, message=message))
            return True

        job = self._jobs.mutate(job_id, to_running)
        return job if job.state == record.RUNNING and job.lease.owner == self.owner else None

    def _attempt(self, job: job_pb2.Job) -> ServiceError | None:
        """One worker start (see :func:`.attempt.run_attempt`), stoppable while it runs."""
        stop = StopRequest()
        with self._lock:
            self._running[job.id] = stop
        workdir = Path(tempfile.mkdtemp(prefix=f"prunekit-{job.id}-", dir=self._settings.scratch_path()))
        try:
            stores = self._tenants.of_job(job.id)
            return run_attempt(
                stores, self._settings, self._keeper, job, workdir, stop, self._limits, self._warm
            )
        finally:
            with self._lock:
                self._running.pop(job.id, None)
            shutil.rmtree(workdir, ignore_errors=True)

    def _end(self, job_id: str, error: ServiceError) -> None:
        def to_failed(job: job_pb2.Job) -> bool:
            if record.is_terminal(job.state) or job.lease.owner not in ("", self.owner):
                return False
            record.fail(job, error)
            return True

        try:
            self._jobs.mutate(job_id, to_failed)
        except ServiceError:
            log.exception("job %s: could not record its failure (%s)", job_id, error)

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
            raise _shutting_down()
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
