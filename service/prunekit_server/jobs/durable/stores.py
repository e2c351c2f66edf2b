"""One tenant's stores over one object store, made together: models, jobs, artifacts."""

from __future__ import annotations

from dataclasses import dataclass

from ...storage import ObjectStore
from .artifact_store import ArtifactStore
from .job_store import JobStore
from .keys import DEFAULT_TENANT
from .model_store import ModelStore
from .usage import TenantUsage


@dataclass(frozen=True)
class TenantStores:
    """The models, jobs and artifacts of one tenant, in one :class:`ObjectStore`."""

    models: ModelStore
    jobs: JobStore
    artifacts: ArtifactStore

    @classmethod
    def open(
        cls, store: ObjectStore, tenant: str = DEFAULT_TENANT, *, owner: str = "", lease_s: float = 30.0
    ) -> TenantStores:
        """The stores of ``tenant``; new jobs are leased to ``owner`` (if any) for ``lease_s`` seconds."""
        return cls(
            ModelStore(store, tenant),
            JobStore(store, tenant, owner=owner, lease_s=lease_s),
            ArtifactStore(store, tenant),
        )

    @property
    def usage(self) -> TenantUsage:
        """The tenant's stored-bytes counter."""
        return self.models.usage

    @property
    def store(self) -> ObjectStore:
        """The object store all three keep their objects in."""
        return self.jobs.store
