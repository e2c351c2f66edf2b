"""One worker start of a job: checkpoints in, a fenced worker, checkpoints out, results published.

:func:`run_attempt` is the part of a job's run that touches one working
directory: it restores the job's checkpoints from storage, runs the worker
(heartbeats after each lease renewal, see :mod:`..worker.fence`), uploads the
checkpoints the worker announces while this server's lease is fresh
(:mod:`..durable.checkpoint_sync`), and publishes the results when the worker succeeded
and the lease still renews (:mod:`..durable.publish`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prunekit.v1 import job_pb2

from ...config import Settings
from ...errors import ServiceError
from ..durable import checkpoint_sync
from ..durable.latency_tables import save_tables
from ..durable.publish import publish
from ..durable.storage_errors import retrying, storage_errors
from ..durable.stores import TenantStores
from ..worker.fence import FENCE_SHARE, Heartbeat
from .lease_keeper import LeaseKeeper
from .progress_sink import ProgressSink
from .sandbox import StopRequest, WorkerLimits, run_worker
from .staging import optimize_task
from .warm import WarmWorkers

log = logging.getLogger(__name__)


def run_attempt(
    stores: TenantStores,
    settings: Settings,
    keeper: LeaseKeeper,
    job: job_pb2.Job,
    workdir: Path,
    stop: StopRequest,
    limits: WorkerLimits,
    warm: WarmWorkers | None = None,
) -> ServiceError | None:
    """Run ``job``'s worker once in the empty ``workdir``; the error it ended with, or None.

    None also when the worker succeeded but the lease was lost before
    publishing (the new owner publishes). ``stop`` stops the worker early; ``warm`` forks it
    from the server's zygote.
    """
    fence_s = settings.lease_s * FENCE_SHARE
    prefix = stores.artifacts.checkpoint_prefix(job.id)
    local = workdir / "checkpoints"
    local.mkdir()

    def stage() -> tuple[dict[str, Any], dict[str, int]]:
        task = optimize_task(stores, settings, job, workdir, local.name, limits.to_dict())
        with storage_errors():
            return task, checkpoint_sync.restore(stores.store, prefix, local)

    task, restored = retrying(stage, budget_s=settings.storage_retry_s, stopped=stop.is_set)
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
    )
    uploaders.append(
        checkpoint_sync.CheckpointUploader(
            stores.store,
            prefix,
            local,
            on_uploaded=sink.checkpoint_uploaded,
            may_write=lambda: keeper.fresh(job.id, fence_s),
        )
    )
    try:
        outcome = run_worker(
            workdir,
            task,
            timeout=settings.job_timeout_s,
            stop=stop,
            on_progress=sink,
            poll=sink.check_cancelled,
            heartbeat=Heartbeat(lambda: keeper.renewed_at(job.id)),
            fence_s=fence_s,
            warm=warm,
        )
    finally:
        uploaders[0].finish()
    if job.spec.HasField("target"):
        save_tables(stores.store, workdir)
    if outcome.error is not None:
        return outcome.error
    if keeper.renew(job.id):
        publish(stores, job.id, workdir, owner=keeper.owner, attempt=job.attempt)
    return None
