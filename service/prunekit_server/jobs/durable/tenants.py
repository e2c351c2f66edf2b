"""Every tenant's stores over one object store, and job records addressed by job id alone.

A server opens one :class:`TenantStores` per tenant on first use and keeps it (so watchers of a tenant
hear every write made through it). Job ids are random across tenants (:func:`.record.new_job_id`), so the
background parts of the executor (lease keeper, sweeper) address jobs by id: :class:`Tenants` remembers
the tenant of each job it was told about or found in a tenant's index of active jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from prunekit.v1 import job_pb2

from ...storage import ObjectStore
from .job_store import JobStore
from .keys import DEFAULT_TENANT, TENANTS_PREFIX
from .storage_errors import storage_errors
from .stores import TenantStores


class JobRecords(Protocol):
    """What the lease keeper and the sweeper need of job records (a :class:`JobStore` or :class:`Tenants`)."""

    lease_s: float

    def get(self, job_id: str) -> job_pb2.Job: ...

    def mutate(self, job_id: str, change: Callable[[job_pb2.Job], bool]) -> job_pb2.Job: ...

    def active_job_ids(self) -> list[str]: ...

    def forget_active(self, job_id: str) -> None: ...


class Tenants:
    """The tenants of one object store; jobs created or taken over lease to ``owner`` for ``lease_s``."""

    def __init__(self, store: ObjectStore, *, owner: str, lease_s: float) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._stores: dict[str, TenantStores] = {}
        self._held: dict[str, str] = {}
        self._found: dict[str, str] = {}

    def stores(self, tenant: str) -> TenantStores:
        """The stores of ``tenant`` (a name :func:`..auth.identity.make_identity` accepted)."""
        with self._lock:
            found = self._stores.get(tenant)
            if found is None:
                found = TenantStores.open(self.store, tenant, owner=self.owner, lease_s=self.lease_s)
                self._stores[tenant] = found
            return found

    def names(self) -> list[str]:
        """The tenants with anything stored, and those opened here: one listing per tenant."""
        names = set(self._stores)
        after: str | None = None
        with storage_errors():
            while True:
                keys = self.store.list_keys(TENANTS_PREFIX, start_after=after, limit=1)
                if not keys:
                    break
                name = keys[0][len(TENANTS_PREFIX) :].split("/", 1)[0]
                names.add(name)
                after = f"{TENANTS_PREFIX}{name}0"  # "0" follows "/": past every key of this tenant
        return sorted(names)

    # -- jobs by id -----------------------------------------------------------------------------

    def hold(self, job_id: str, tenant: str) -> None:
        """Remember the tenant of a job this server queues, until :meth:`drop`."""
        with self._lock:
            self._held[job_id] = tenant

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def of_job(self, job_id: str) -> TenantStores:
        """The stores of a job held here or found by the last :meth:`active_job_ids`; a tenant's
        JOB_NOT_FOUND (from the default tenant's store) for any other id."""
        with self._lock:
            tenant = self._held.get(job_id) or self._found.get(job_id)
        return self.stores(tenant or DEFAULT_TENANT)

    def jobs_of(self, job_id: str) -> JobStore:
        return self.of_job(job_id).jobs

    def get(self, job_id: str) -> job_pb2.Job:
        return self.jobs_of(job_id).get(job_id)

    def mutate(self, job_id: str, change: Callable[[job_pb2.Job], bool]) -> job_pb2.Job:
        return self.jobs_of(job_id).mutate(job_id, change)

    def forget_active(self, job_id: str) -> None:
        self.jobs_of(job_id).forget_active(job_id)

    def active_job_ids(self) -> list[str]:
        """The active jobs of every tenant (see :meth:`JobStore.active_job_ids`); their tenants are kept."""
        found = {
            job_id: tenant for tenant in self.names() for job_id in self.stores(tenant).jobs.active_job_ids()
        }
        with self._lock:
            self._found = found
        return list(found)
