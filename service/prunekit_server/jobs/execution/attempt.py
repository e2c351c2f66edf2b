"""One worker start of a job: checkpoints in, a fenced worker, checkpoints out, results published.

:func:`run_attempt` is the part of a job's run that touches one working
directory: it restores the job's checkpoints from storage, runs the worker
(heartbeats after each lease renewal, see :mod:`..worker.fence`), uploads the
checkpoints the worker announces while this server's lease is fresh
(:mod:`..durable.checkpoint_sync`), and publishes the results when the worker succeeded
and the lease still renews (:mod:`..durable.publish`). Staging and publishing wait out
storage outages for ``storage_retry_s``; a publish that fails leaves none of its files.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from prunekit.v1 import job_pb2

from ...config import Settings
from ...errors import ServiceError
from ...observability.metrics import JOBS
from ..durable import checkpoint_sync
from ..durable.latency_tables import save_tables
from ..durable.publish import publish
from ..durable.storage_errors import is_unavailable, retrying, storage_errors
from ..durable.stores import TenantStores
from ..worker.fence import Heartbeat
from .progress_sink import ProgressSink
from .sandbox import StopRequest, WorkerLimits, run_worker
from .staging import optimize_task
from .starts import job_timeout, local_error, start_timeout
from .warm import WarmWorkers

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobHold(Protocol):
    """How the runner of a job holds it: a :class:`~.lease_keeper.LeaseKeeper` (``local``: a lease in
    storage, the worker fenced by it) or :class:`~..ray.task.RayHold` (``ray``: Ray keeps one runner)."""

    #: The owner the job's record names while it runs here.
    owner: str
    #: Seconds without a renewal after which the worker stops itself; 0 = not fenced.
    fence_s: float

    def renewed_at(self, job_id: str) -> float | None:
        """``time.monotonic()`` of the newest renewal (the worker's heartbeats); None when not held."""
        ...

    def fresh(self, job_id: str, within: float) -> bool:
        """Whether the job is held and was renewed less than ``within`` seconds ago (writes may go on)."""
        ...

    def renew(self, job_id: str) -> bool:
        """Hold the job a while longer now; False when it is no longer this runner's."""
        ...


def run_attempt(
    stores: TenantStores,
    settings: Settings,
    keeper: JobHold,
    job: job_pb2.Job,
    workdir: Path,
    stop: StopRequest,
    limits: WorkerLimits,
    warm: WarmWorkers | None = None,
    rendezvous: Mapping[str, Any] | None = None,
) -> ServiceError | None:
    """Run ``job``'s worker once in the empty ``workdir``; the error it ended with, or None.

    None also when the worker succeeded but the lease was lost before
    publishing (the new owner publishes). ``stop`` stops the worker early; ``warm`` forks it
    from the server's zygote; ``rendezvous`` names the fine-tuning ranks Ray placed (see
    :func:`.staging.optimize_task`).
    """
    fence_s = keeper.fence_s
    timeout, own_timeout = start_timeout(job, settings)
    if timeout <= 0:
        return job_timeout(job, job.progress.stage or "starting")
    prefix = stores.artifacts.checkpoint_prefix(job.id)
    local = workdir / "checkpoints"
    local.mkdir()

    def stage() -> tuple[dict[str, Any], dict[str, int]]:
        task = optimize_task(stores, settings, job, workdir, local.name, limits.to_dict(), rendezvous)
        with storage_errors():
            return task, checkpoint_sync.restore(stores.store, prefix, local)

    task, restored = _waited(stage, "staging the job's inputs", settings, stop)
    if restored:
        log.info("job %s: start %d resumes from checkpoints %s", job.id, job.attempt, restored)
    uploaders: list[checkpoint_sync.CheckpointUploader] = []
    sink = ProgressSink(
        stores.jobs,
        job.id,
        stop,
        settings.progress_interval_s,
        keeper.owner,
        on_checkpoint=lambda phase, name: uploaders[0].report(phase, name),
        restored=restored,
    )
    uploaders.append(
        checkpoint_sync.CheckpointUploader(
            stores.store,
            prefix,
            local,
            on_uploaded=sink.checkpoint_uploaded,
            may_write=lambda: fence_s <= 0 or keeper.fresh(job.id, fence_s),
        )
    )
    try:
        outcome = run_worker(
            workdir,
            task,
            timeout=timeout,
            stop=stop,
            on_progress=sink,
            poll=sink.check_cancelled,
            heartbeat=Heartbeat(lambda: keeper.renewed_at(job.id)) if fence_s > 0 else None,
            fence_s=fence_s,
            warm=warm,
        )
    finally:
        sink.finish()
        uploaders[0].finish()
    if job.spec.HasField("target"):
        save_tables(stores.store, workdir)
    if outcome.error is not None:
        if (
            own_timeout
            and outcome.error.reason == "WORKER_TIMEOUT"
            and not outcome.error.metadata.get("signal")
        ):
            return job_timeout(job, outcome.error.metadata.get("stage", ""))
        return outcome.error
    _publish(stores, settings, keeper, job, workdir, stop)
    return None


def _publish(
    stores: TenantStores,
    settings: Settings,
    keeper: JobHold,
    job: job_pb2.Job,
    workdir: Path,
    stop: StopRequest,
) -> None:
    """Publish the worker's results while the lease renews, waiting out outages; a publish that fails
    leaves none of its files (those the manifest names, if it was written, stay)."""

    def publish_here() -> None:
        if keeper.renew(job.id):
            publish(stores, job.id, workdir, owner=keeper.owner, attempt=job.attempt)

    try:
        _waited(publish_here, "publishing the job's results", settings, stop)
    except BaseException:
        try:
            stores.artifacts.discard_unlisted(job.id, job.attempt)
        except ServiceError as exc:  # the job's cleanup, once it ended, tries again
            log.warning("job %s: the files of a failed publish are left for now: %s", job.id, exc)
        raise


def _waited(action: Callable[[], T], what: str, settings: Settings, stop: StopRequest) -> T:
    """``action()`` with storage outages waited out for ``storage_retry_s`` (see :func:`retrying`).

    A stop while waiting raises the stop's error (a shutdown stays a shutdown, a cancel a cancel),
    not the outage's; an outage longer than the budget raises STORAGE_UNAVAILABLE saying so.
    """
    try:
        return retrying(action, budget_s=settings.storage_retry_s, stopped=stop.is_set)
    except ServiceError as exc:
        if stop.error is not None:
            raise stop.error from exc
        if not is_unavailable(exc):
            raise
        message = (
            f"object storage unavailable for over {settings.storage_retry_s:g} s while {what}: {exc.message}"
        )
        raise ServiceError(exc.code, exc.reason, message, metadata=exc.metadata) from exc


def attempt_in_scratch(
    stores: TenantStores,
    settings: Settings,
    keeper: JobHold,
    job: job_pb2.Job,
    stop: StopRequest,
    limits: WorkerLimits,
    warm: WarmWorkers | None = None,
    rendezvous: Mapping[str, Any] | None = None,
) -> ServiceError | None:
    """:func:`run_attempt` in a fresh scratch directory (removed afterwards); every failure, a full
    scratch disk included (:func:`.starts.local_error`), comes back as the error, never raised."""
    JOBS.labels("running").inc()
    try:
        workdir = Path(tempfile.mkdtemp(prefix=f"prunekit-{job.id}-", dir=settings.scratch_path()))
        try:
            return run_attempt(stores, settings, keeper, job, workdir, stop, limits, warm, rendezvous)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    except ServiceError as exc:
        return exc
    except Exception as exc:
        return local_error(exc)
    finally:
        JOBS.labels("running").dec()
