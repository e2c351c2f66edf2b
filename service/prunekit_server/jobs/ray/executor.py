"""The ``ray`` :class:`~..execution.seam.Executor`: a stateless front door handing jobs to Ray.

:meth:`RayExecutor.reserve` refuses a job (UNAVAILABLE RAY_UNAVAILABLE, with a retry delay) while the
cluster does not answer, before anything is written; :meth:`~RayExecutor.submit` hands a written job to
Ray with the resources its spec needs. A job that could not be handed on (the cluster went away, or
this front door died, after its record was written) is handed on by the scan of any front door
(:class:`~..execution.sweeper.Sweeper`) once its record's lease, stamped at create and at each start,
has expired; handing on is idempotent (one named actor per job). Running jobs outlive the front
doors: shutting one down leaves them to Ray. Analyses run in this server's own sandboxed workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from prunekit.v1 import job_pb2, model_pb2

from ...config import Settings
from ...errors import ServiceError
from ...model_caps import ModelCaps
from ..durable.keys import DEFAULT_TENANT
from ..durable.model_store import ModelStore
from ..durable.tenants import Tenants
from ..execution.analysis import Analyzer
from ..execution.retention import Retention
from ..execution.sandbox import WorkerLimits
from ..execution.seam import cleanup, mark_cancelled, shutting_down
from ..execution.sweeper import Sweeper
from ..worker.faults import FAULT_LABEL
from .bridge import RayBridge
from .resources import RANK_STRATEGIES, RAY_OWNER, actor_resources

log = logging.getLogger(__name__)

#: The test fault (:data:`~..worker.faults.FAULT_LABEL`, with ``enable_test_hooks``) of a front door that
#: wrote the job's record and died before handing the job to Ray.
UNSUBMITTED = "unsubmitted@create"


def ray_address(env: dict[str, str] | None = None) -> str:
    """``RAY_ADDRESS`` (``host:port`` of the cluster's head, or ``auto``); ValueError when unset."""
    address = (os.environ if env is None else env).get("RAY_ADDRESS", "")
    if not address:
        raise ValueError("PRUNEKIT_EXECUTOR=ray needs RAY_ADDRESS, the address of the Ray cluster's head")
    return address


class RayExecutor:
    """Hands this server's jobs to the Ray cluster at ``RAY_ADDRESS``; ``on_reachable(bool)`` hears
    whether the cluster answers (the health of job submission)."""

    def __init__(self, tenants: Tenants, settings: Settings, on_reachable: Callable[[bool], None]) -> None:
        if (strategy := settings.ray_rank_strategy) not in RANK_STRATEGIES:
            choices = ", ".join(RANK_STRATEGIES)
            raise ValueError(f"ray_rank_strategy must be one of {choices}, got {strategy!r}")
        tenants.owner = RAY_OWNER
        self._tenants = tenants
        self._settings = settings
        self._accepting = True
        self._bridge = RayBridge(ray_address(), settings, on_reachable, settings.health_probe_s)
        self._sweeper = Sweeper(tenants, self, settings.sweep_interval_s, Retention(tenants, settings).due)
        limits = WorkerLimits.from_settings(settings)
        self.model_caps = ModelCaps(memory_bytes=limits.budget_bytes)
        self._analyzer = Analyzer(settings, limits)

    def start(self) -> None:
        """Start the driver (connecting in the background) and the scan."""
        self._bridge.start()
        self._sweeper.start()

    def reserve(self) -> None:
        """SERVER_SHUTTING_DOWN, or RAY_UNAVAILABLE while the cluster does not answer; else nothing to
        take: Ray queues what it cannot place yet."""
        if not self._accepting:
            raise shutting_down()
        if not self._bridge.reachable:
            raise self._bridge.unavailable()

    def release(self) -> None:
        """Nothing was taken by :meth:`reserve`."""

    def submit(self, job_id: str, tenant: str = DEFAULT_TENANT) -> None:
        """Hand the job to Ray; when that fails it stays PENDING for the scan to hand on."""
        self._tenants.hold(job_id, tenant)
        try:
            job = self._tenants.get(job_id)
            if self._settings.enable_test_hooks and job.labels.get(FAULT_LABEL) == UNSUBMITTED:
                log.warning("job %s: not handed to Ray (test fault %s)", job_id, UNSUBMITTED)
                return
            self._hand_on(job)
        except ServiceError as exc:
            log.warning("job %s: not handed to Ray now (%s); the scan hands it on", job_id, exc.message)
        finally:
            self._tenants.drop(job_id)

    def _hand_on(self, job: job_pb2.Job) -> bool:
        answer = self._bridge.request(
            "submit",
            job_id=job.id,
            tenant=self._tenants.of_job(job.id).jobs.tenant,
            resources=actor_resources(job.spec, self._settings),
        )
        return bool(answer.get("created", True))

    # -- what the sweeper needs -----------------------------------------------------------------

    def holds(self, job_id: str) -> bool:
        """Never: Ray runs the jobs, not this server."""
        return False

    def adopt(self, job_id: str) -> bool:
        """Hand an unended job whose lease expired to Ray again; whether its actor had to be created
        (False when it exists: Ray runs the job, and its lease is not renewed on this path)."""
        if not self._accepting or not self._bridge.reachable:
            return False
        return self._hand_on(self._tenants.get(job_id))

    def cleanup(self, job_id: str) -> None:
        """See :func:`..execution.seam.cleanup`."""
        cleanup(self._tenants.of_job(job_id), job_id)

    # -- calls ----------------------------------------------------------------------------------

    def cancel(self, job_id: str, tenant: str = DEFAULT_TENANT) -> job_pb2.Job:
        """Mark the job CANCELLED, then kill its actor (and so its worker). Unreachable, the actor
        stops by itself: its worker's progress polls see the CANCELLED record."""
        job = mark_cancelled(self._tenants.stores(tenant).jobs, job_id)
        try:
            self._bridge.request("cancel", job_id=job_id)
        except ServiceError as exc:
            log.warning("job %s: its Ray actor was not killed (%s); it stops by itself", job_id, exc.message)
        return job

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
        """Analyse a model in a worker of this server (see :meth:`Analyzer.analyze`)."""
        if not self._accepting:
            raise shutting_down()
        return self._analyzer.analyze(
            models, model, inputs, timeout, sensitivity=sensitivity, sensitivity_ratios=sensitivity_ratios
        )

    def shutdown(self, grace: float) -> None:
        """Stop taking jobs, the scan and the driver; the jobs run on in Ray."""
        self._accepting = False
        self._sweeper.stop()
        self._bridge.close()
