"""A job's run inside its Ray actor: the same staging, sandboxed worker, checkpoints and publish as a
``local`` server's, with Ray, not a lease, keeping one runner per job.

:func:`run_job` counts a start on the record, runs one worker start
(:func:`~..execution.attempt.attempt_in_scratch`) and, as the ``local`` executor does, starts again from
the checkpoints after a worker crash while fine-tuning (charged against ``max_attempts``). A start of an
actor that Ray restarted (its process or node was lost) is charged too; once ``max_attempts`` were
charged the job fails WORKER_CRASHED. Storage credentials stay in this process: the worker gets the
allow-listed environment of :func:`~..execution.sandbox.worker_env`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from prunekit.v1 import job_pb2

from ...config import Settings
from ...errors import Code, ServiceError
from ...storage import open_store
from ..durable import record
from ..durable.publish import complete_from_manifest
from ..durable.storage_errors import retrying
from ..durable.stores import TenantStores
from ..durable.tenants import Tenants
from ..execution.attempt import attempt_in_scratch
from ..execution.observed import count_end, count_failed_start, job_context
from ..execution.sandbox import StopRequest, WorkerLimits
from ..execution.seam import cleanup
from ..execution.starts import begin_start, local_error, record_failure, retry_plan
from .ranks import RayRanks
from .resources import RAY_OWNER, actor_resources, on_node

log = logging.getLogger(__name__)
T = TypeVar("T")


class RayHold:
    """The :class:`~..execution.attempt.JobHold` of a job run by its actor: the record names
    :data:`RAY_OWNER`, nothing is renewed and the worker is not fenced (Ray kills it with its actor)."""

    owner = RAY_OWNER
    fence_s = 0.0

    def renewed_at(self, job_id: str) -> float | None:
        return None

    def fresh(self, job_id: str, within: float) -> bool:
        return True

    def renew(self, job_id: str) -> bool:
        return True


def run_job(settings: Settings, job_id: str, tenant: str, stop: StopRequest, *, restarted: bool) -> None:
    """Run the job of ``tenant`` to its end (or until ``stop``), then clean up after it.

    ``settings`` are the front door's, with this node's own (:func:`on_node`). ``restarted``: Ray
    restarted this job's actor. Storage outages are waited out for ``storage_retry_s``; one that lasts
    longer raises (the front doors' scan hands the job on again).
    """
    settings = on_node(settings)
    tenants = Tenants(open_store(settings.storage), owner=RAY_OWNER, lease_s=settings.lease_s)
    tenants.hold(job_id, tenant)
    stores = tenants.stores(tenant)
    with job_context(tenants, job_id):

        def waited(action: Callable[[], T]) -> T:
            return retrying(action, budget_s=settings.storage_retry_s, stopped=stop.is_set)

        if not waited(lambda: complete_from_manifest(stores, job_id, owner=RAY_OWNER)):
            _starts(settings, stores, job_id, stop, waited, restarted=restarted)
        ended = waited(lambda: stores.jobs.get(job_id))
        if record.is_terminal(ended.state):
            count_end(ended)
            waited(lambda: cleanup(stores, job_id))


def _starts(
    settings: Settings,
    stores: TenantStores,
    job_id: str,
    stop: StopRequest,
    waited: Callable[[Callable[[], Any]], Any],
    *,
    restarted: bool,
) -> None:
    """Worker starts until the job ends, as :meth:`~..execution.executor.JobExecutor._starts` does
    without leases: nothing here can be lost to another runner."""
    job = waited(lambda: stores.jobs.get(job_id))
    charge = restarted or job.attempt > 0
    if charge and not record.is_terminal(job.state) and job.charged_attempts >= settings.max_attempts:
        message = f"the job's Ray actor was lost after {job.charged_attempts} charged starts (max_attempts)"
        lost = ServiceError(Code.INTERNAL, "WORKER_CRASHED", message)
        waited(lambda: record_failure(stores.jobs, job_id, RAY_OWNER, lost))
        return
    limits, hold = WorkerLimits.from_settings(settings), RayHold()
    while not stop.is_set():
        start = functools.partial(begin_start, stores.jobs, job_id, RAY_OWNER, settings, charge=charge)
        started = waited(start)
        if started is None:
            return
        log.info("job %s: worker start %d on Ray", job_id, started.attempt)
        error = _attempt(settings, stores, started, stop, limits, hold)
        if error is None:
            return
        plan = retry_plan(error, started, settings.max_attempts)
        count_failed_start(error, plan)
        if plan is None:
            waited(functools.partial(record_failure, stores.jobs, job_id, RAY_OWNER, error))
            return
        charge = plan
        log.warning("job %s: start %d failed (%s); starting again", job_id, started.attempt, error)


def _attempt(
    settings: Settings,
    stores: TenantStores,
    job: job_pb2.Job,
    stop: StopRequest,
    limits: WorkerLimits,
    hold: RayHold,
) -> ServiceError | None:
    """One worker start of ``job``; with ``finetune.workers`` > 1 its other ranks are Ray actors
    (:class:`.ranks.RayRanks`), placed for this start and stopped after it."""
    world = job.spec.finetune.workers
    if world <= 1:
        return attempt_in_scratch(stores, settings, hold, job, stop, limits)
    try:
        resources = actor_resources(job.spec, settings)
        ranks = RayRanks.start(settings, world, resources, stores.store.uri, stop)
    except ServiceError as exc:
        return exc
    except Exception as exc:  # the store could not listen, Ray failed: this start's failure
        return local_error(exc)
    if ranks is None:
        return stop.error
    try:
        with ranks.watched(stop) as attempt:
            rendezvous = ranks.rendezvous
            error = attempt_in_scratch(stores, settings, hold, job, attempt, limits, rendezvous=rendezvous)
        return ranks.explain(error)
    finally:
        ranks.close()
