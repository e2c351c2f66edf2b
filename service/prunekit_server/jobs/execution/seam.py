"""The executor seam: what the API and the server need of whatever runs jobs, and the parts both share.

Two executors implement :class:`Executor`: ``local`` (:class:`.executor.JobExecutor`, sandboxed worker
processes of this server, leased, swept and fenced through storage) and ``ray``
(:class:`..ray.executor.RayExecutor`, jobs placed on a Ray cluster, the server a stateless front door).
Both write and read the same job records and artifacts, so the API's reads do not depend on which runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prunekit.v1 import job_pb2, model_pb2

from ...errors import Code, ServiceError
from ...model_caps import ModelCaps
from ..durable import record
from ..durable.keys import DEFAULT_TENANT
from ..durable.model_store import ModelStore
from ..durable.stores import TenantStores
from ..durable.tenants import JobRecords

CANCELLED_BY_CALL = "cancelled by CancelJob"


class Executor(Protocol):
    """Runs the jobs CreateJob stored, and analyses; an executor of one server process."""

    model_caps: ModelCaps

    def start(self) -> None:
        """Start the background parts (the first scan for jobs left behind runs now)."""

    def reserve(self) -> None:
        """Take a place for one more job before its record is written, or raise why there is none."""

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` that no job used."""

    def submit(self, job_id: str, tenant: str = DEFAULT_TENANT) -> None:
        """Run a stored job of ``tenant`` on a place taken by :meth:`reserve`; never loses it: a job that
        cannot be handed on now is found by a later scan."""

    def cancel(self, job_id: str, tenant: str = DEFAULT_TENANT) -> job_pb2.Job:
        """Mark the job CANCELLED and stop whatever runs it; JOB_NOT_FOUND when ``tenant`` has none."""
        ...

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
        """Analyse a model of ``models`` in a sandboxed worker, synchronously."""
        ...

    def shutdown(self, grace: float) -> None:
        """Stop taking work and stop the background parts; what happens to running jobs is the executor's."""


def shutting_down() -> ServiceError:
    """UNAVAILABLE SERVER_SHUTTING_DOWN."""
    return ServiceError(
        Code.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "the server is shutting down; retry elsewhere"
    )


def mark_cancelled(jobs: JobRecords, job_id: str) -> job_pb2.Job:
    """Record the job CANCELLED (a job already ended stays as it is); the record after."""

    def to_cancelled(job: job_pb2.Job) -> bool:
        record.fail(job, ServiceError(Code.CANCELLED, "JOB_CANCELLED", CANCELLED_BY_CALL))
        return True

    return jobs.mutate(job_id, to_cancelled)


def cleanup(stores: TenantStores, job_id: str) -> None:
    """Drop an ended job's checkpoints, the files its manifest does not name, then its entry in the index
    of active jobs."""
    artifacts = stores.artifacts
    artifacts.delete_prefix(artifacts.checkpoint_prefix(job_id))
    artifacts.discard_unlisted(job_id)
    stores.jobs.forget_active(job_id)
