"""What one tenant keeps in storage, counted in one object every replica updates by compare-and-swap,
and the tenant's quotas (concurrent active jobs, stored bytes).

``tenants/<t>/usage.json`` holds ``{"stored_bytes": N}``: uploaded models and dataset shards and the
artifacts of succeeded jobs (checkpoints and records are not counted). Bytes are added *before* an
object is stored (reserved: a store that then fails gives them back) and taken off after it is deleted,
so a crash in between can only overcount, never let a tenant past its quota.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from ...errors import Code, ServiceError
from ...storage import ObjectNotFound, ObjectStore, PreconditionFailed
from .keys import TenantKeys
from .storage_errors import storage_errors

_CAS_ATTEMPTS = 50
log = logging.getLogger(__name__)

ACTIVE_JOBS = "active_jobs"
STORED_BYTES = "stored_bytes"


@dataclass(frozen=True)
class Quotas:
    """A tenant's limits; 0 = none."""

    active_jobs: int = 0
    stored_bytes: int = 0


def quota_exceeded(quota: str, limit: int, usage: int, requested: int | None = None) -> ServiceError:
    """RESOURCE_EXHAUSTED QUOTA_EXCEEDED naming the quota, its limit and the tenant's usage."""
    metadata = {"quota": quota, "limit": str(limit), "usage": str(usage)}
    what = "active jobs" if quota == ACTIVE_JOBS else "stored bytes"
    message = f"your tenant's quota of {limit} {what} is reached ({usage} in use"
    if requested is not None:
        metadata["requested"] = str(requested)
        message += f", {requested} more requested"
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
        f"{message}); delete jobs, or wait for running ones to end",
        metadata=metadata,
    )


class TenantUsage:
    """The stored-bytes counter of one tenant. Thread-safe and safe across replicas (CAS on the etag)."""

    def __init__(self, store: ObjectStore, tenant: str) -> None:
        self.store = store
        self._key = TenantKeys(tenant).usage

    def stored_bytes(self) -> int:
        """The bytes counted now (0 before anything was stored)."""
        with storage_errors():
            try:
                return _decode(self.store.get_bytes(self._key))
            except ObjectNotFound:
                return 0

    def add(self, delta: int, *, limit: int = 0) -> int:
        """Add ``delta`` bytes (negative: take them off, never below 0) and return the new count.

        With ``limit`` > 0 and ``delta`` > 0, QUOTA_EXCEEDED (nothing added) when the count would pass it.
        """
        for _ in range(_CAS_ATTEMPTS):
            with storage_errors():
                info = self.store.head(self._key)
                current = 0 if info is None else _decode(self.store.get_bytes(self._key))
            updated = max(0, current + delta)
            if delta > 0 and limit > 0 and updated > limit:
                raise quota_exceeded(STORED_BYTES, limit, current, delta)
            body = json.dumps({"stored_bytes": updated}).encode()
            try:
                with storage_errors(writing=True):
                    if info is None:
                        self.store.put_bytes(self._key, body, if_absent=True)
                    else:
                        self.store.put_bytes(self._key, body, if_match=info.etag)
            except PreconditionFailed:
                continue
            return updated
        raise ServiceError(
            Code.ABORTED, "INTERNAL_ERROR", "the tenant's usage is being updated too often; retry"
        )

    @contextlib.contextmanager
    def reserved(self, size: int, *, limit: int = 0) -> Iterator[None]:
        """Count ``size`` bytes (QUOTA_EXCEEDED beyond ``limit`` > 0) for the block that stores them;
        given back when the block fails (a failure to give them back leaves them counted, logged)."""
        if size <= 0:
            yield
            return
        self.add(size, limit=limit)
        try:
            yield
        except BaseException:
            try:
                self.add(-size)
            except ServiceError as exc:
                log.warning("could not give back %d reserved bytes: %s", size, exc.message)
            raise

    def check_room(self, requested: int, limit: int) -> None:
        """QUOTA_EXCEEDED when ``requested`` more bytes would pass ``limit`` (> 0) now, or none is left;
        reserves nothing (CreateJob: a job needs room for its artifacts)."""
        if limit <= 0:
            return
        usage = self.stored_bytes()
        if usage + requested > limit or usage >= limit:
            raise quota_exceeded(STORED_BYTES, limit, usage, requested or None)


def _decode(data: bytes) -> int:
    try:
        value = json.loads(data).get("stored_bytes", 0)
    except (ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) and value >= 0 else 0
