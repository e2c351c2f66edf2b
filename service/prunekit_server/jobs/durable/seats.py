"""A tenant's active-jobs quota held exactly across replicas: one seat per admitted job.

``tenants/<t>/seats.json`` holds ``{"jobs": {<job id>: <ms taken>}}`` and is only ever replaced by
compare-and-swap on its etag, so two replicas admitting at the same moment cannot both take the last
seat. A seat is taken before its job's record is written and is never given back explicitly: when the
seats are full, those whose job has ended, or whose record never appeared within ``grace_s`` (a create
that failed half-way), are freed in the same swap. Active jobs without a seat (created while the quota
was off, or while the object was unreadable) are given one by the next swap, so they always count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from ...errors import Code, ServiceError
from ...storage import ObjectStore, PreconditionFailed
from .keys import TenantKeys
from .storage_errors import storage_errors
from .usage import ACTIVE_JOBS, quota_exceeded

__all__ = ["GRACE_S", "Liveness", "Seats"]

GRACE_S = 120.0
"""How long a seat whose job record is missing is kept (its create may still be writing it)."""
_CAS_ATTEMPTS = 50

Liveness = Callable[[str], "bool | None"]
"""Job id -> True while PENDING or RUNNING, False once ended, None when there is no record."""


class Seats:
    """The seats of one tenant. Thread-safe and safe across replicas (CAS on the etag)."""

    def __init__(self, store: ObjectStore, tenant: str, *, grace_s: float = GRACE_S) -> None:
        self.store = store
        self._key = TenantKeys(tenant).seats
        self._grace_ms = int(grace_s * 1000)

    def held(self) -> dict[str, int]:
        """Job id -> when its seat was taken (ms since the epoch), as stored now."""
        with storage_errors():
            info = self.store.head(self._key)
            return {} if info is None else _decode(self.store.get_bytes(self._key))

    def take(self, job_id: str, limit: int, live: Liveness, active: Callable[[], Iterable[str]]) -> None:
        """Give ``job_id`` a seat, or QUOTA_EXCEEDED when ``limit`` jobs hold one and are still active.

        ``live`` tells whether a seat's job still runs (checked only when the seats are full); ``active``
        lists the tenant's active jobs, to seed the seats on first use. Taking a seat twice is a no-op.
        """
        for _ in range(_CAS_ATTEMPTS):
            with storage_errors():
                info = self.store.head(self._key)
                seats = {} if info is None else _decode(self.store.get_bytes(self._key))
            if job_id in seats:
                return
            seats |= self._untracked(seats, job_id, live, active)
            if len(seats) >= limit:
                seats = self._still_held(seats, live)
            if len(seats) >= limit:
                raise quota_exceeded(ACTIVE_JOBS, limit, len(seats))
            seats[job_id] = _now_ms()
            body = json.dumps({"jobs": seats}, sort_keys=True).encode()
            try:
                with storage_errors(writing=True):
                    if info is None:
                        self.store.put_bytes(self._key, body, if_absent=True)
                    else:
                        self.store.put_bytes(self._key, body, if_match=info.etag)
            except PreconditionFailed:
                continue
            return
        busy = "the tenant's jobs are being created too often; retry"
        raise ServiceError(Code.ABORTED, "INTERNAL_ERROR", busy)

    @staticmethod
    def _untracked(
        seats: dict[str, int], job_id: str, live: Liveness, active: Callable[[], Iterable[str]]
    ) -> dict[str, int]:
        """Active jobs holding no seat (created while the quota was off, or before the seats were
        readable): they count, and get one in this swap."""
        now = _now_ms()
        return {j: now for j in active() if j not in seats and j != job_id and live(j)}

    def _still_held(self, seats: dict[str, int], live: Liveness) -> dict[str, int]:
        """The seats whose job runs, or whose record may still be being written."""
        now = _now_ms()
        kept: dict[str, int] = {}
        for job_id, taken in seats.items():
            state = live(job_id)
            if state or (state is None and now - taken < self._grace_ms):
                kept[job_id] = taken
        return kept


def _now_ms() -> int:
    return int(time.time() * 1000)


def _decode(data: bytes) -> dict[str, int]:
    try:
        jobs = json.loads(data).get("jobs", {})
    except (ValueError, AttributeError):
        return {}
    if not isinstance(jobs, dict):
        return {}
    return {str(k): v for k, v in jobs.items() if isinstance(v, int)}
