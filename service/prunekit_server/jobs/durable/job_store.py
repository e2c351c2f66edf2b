"""Job records in object storage, with the listing index, the index of active jobs and idempotent
creates (keys: :mod:`.keys`).

Everything a client can ask about a job lives here, so any server on the same storage answers for
any job.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
from collections.abc import Callable, Mapping

from google.protobuf import json_format

from prunekit.v1 import job_pb2, model_pb2, spec_pb2

from ...errors import Code, ServiceError
from ...storage import ObjectNotFound, ObjectStore, PreconditionFailed
from . import lease, record
from .keys import TenantKeys
from .storage_errors import storage_errors
from .uris import TenantUris

_CAS_ATTEMPTS = 20


def _job_not_found(job_id: str) -> ServiceError:
    return ServiceError(Code.NOT_FOUND, "JOB_NOT_FOUND", f"no job {job_id!r}", metadata={"job_id": job_id})


class JobStore:
    """One tenant's job records in an :class:`ObjectStore`.

    Thread-safe. Updates of a job record are compare-and-swap on the object's
    etag, so concurrent writers (a running job's progress and a CancelJob,
    possibly on another server) never lose each other's changes. With an
    ``owner``, new jobs are created holding its lease for ``lease_s`` seconds.
    """

    def __init__(
        self, store: ObjectStore, tenant: str = "default", *, owner: str = "", lease_s: float = 30.0
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.owner = owner
        self.lease_s = lease_s
        self._keys = TenantKeys(tenant)
        self._uris = TenantUris(store, tenant)
        self._changed = threading.Condition()

    # -- create ---------------------------------------------------------------------------------

    def create(
        self,
        model: model_pb2.ModelRef,
        spec: spec_pb2.OptimizationSpec,
        request_id: str,
        labels: Mapping[str, str],
        *,
        admit: Callable[[str], None] | None = None,
    ) -> tuple[job_pb2.Job, bool]:
        """Store a new PENDING job, or return the job this request_id already made.

        Returns ``(job, created)``. The same request_id with a different request
        is ALREADY_EXISTS (REQUEST_ID_REUSED). The request claim is written
        first, so a crash half-way is completed by the client's retry. ``admit(job_id)`` is called
        just before a new job is written (not for a request_id that made its job already) and may
        raise ServiceError to refuse it (a quota): the claim stays, and a retry is admitted afresh.
        """
        fingerprint = record.request_fingerprint(model, spec, labels)
        job_id = record.new_job_id()
        with storage_errors(writing=True):
            claimed = self._claim(request_id, job_id, fingerprint)
            if claimed != job_id:
                with contextlib.suppress(ServiceError):
                    return self.get(claimed), False
            if admit is not None:
                admit(claimed)
            job = record.new_job(claimed, model, spec, request_id, labels)
            if self.owner:
                lease.stamp(job, self.owner, self.lease_s)
            if not self._write_new(job):
                return self.get(claimed), False
        self._notify()
        return job, True

    def _claim(self, request_id: str, job_id: str, fingerprint: str) -> str:
        """Claim ``request_id`` for ``job_id``; the id of the job that claimed it before, if one did.

        ALREADY_EXISTS (REQUEST_ID_REUSED) when it was claimed for another request.
        """
        claim_key = self._keys.request(request_id)
        claim = json.dumps({"job_id": job_id, "fingerprint": fingerprint, "request_id": request_id}).encode()
        try:
            self.store.put_bytes(claim_key, claim, if_absent=True)
        except PreconditionFailed:
            previous = json.loads(self.store.get_bytes(claim_key))
            if previous.get("fingerprint") != fingerprint:
                raise ServiceError(
                    Code.ALREADY_EXISTS,
                    "REQUEST_ID_REUSED",
                    f"request_id {request_id!r} was used for another request (job {previous['job_id']})",
                    metadata={"request_id": request_id, "job_id": str(previous["job_id"])},
                ) from None
            return str(previous["job_id"])
        return job_id

    def _write_new(self, job: job_pb2.Job) -> bool:
        """Write a new job's index entries and record; False, writing no listing entry, when
        a concurrent create with the same request_id wrote the record first."""
        millis = job.create_time.seconds * 1000 + job.create_time.nanos // 1_000_000
        self.store.put_bytes(self._keys.active(job.id), job.id.encode())
        try:
            self.store.put_bytes(self._keys.job(job.id), _encode(job), if_absent=True)
        except PreconditionFailed:
            return False
        self.store.put_bytes(self._keys.index_entry(job.id, millis), job.id.encode())
        return True

    # -- the index of active jobs ---------------------------------------------------------------

    def active_job_ids(self) -> list[str]:
        """Ids in the index of active jobs: written before the job record, removed only after an
        ended job's checkpoints were deleted (so it may hold ended jobs, and briefly unwritten ones)."""
        prefix = self._keys.active_prefix
        with storage_errors():
            keys = self.store.list_keys(prefix)
        return [key[len(prefix) :] for key in keys if record.is_valid_job_id(key[len(prefix) :])]

    def liveness(self, job_id: str) -> bool | None:
        """Whether the job is PENDING or RUNNING now; None when it has no record, False when its record
        cannot be read as a job (it holds nothing)."""
        try:
            return not record.is_terminal(self.get(job_id).state)
        except ServiceError as exc:
            if exc.reason == "JOB_NOT_FOUND":
                return None
            if exc.message.startswith(CORRUPT):
                return False
            raise

    def forget_active(self, job_id: str) -> None:
        """Remove ``job_id`` from the index of jobs not yet ended."""
        with storage_errors(writing=True):
            self.store.delete(self._keys.active(job_id))

    # -- read and update ------------------------------------------------------------------------

    def get(self, job_id: str) -> job_pb2.Job:
        """The stored job; NOT_FOUND (JOB_NOT_FOUND) when there is none."""
        if not record.is_valid_job_id(job_id):
            raise _job_not_found(job_id)
        with storage_errors():
            try:
                return self._read(self.store.get_bytes(self._keys.job(job_id)))
            except ObjectNotFound:
                raise _job_not_found(job_id) from None

    def _read(self, data: bytes) -> job_pb2.Job:
        """A stored record, its URIs shown as clients see them (records of older servers hold store URIs)."""
        job = _decode(data)
        self._uris.show_in(job)
        return job

    def mutate(self, job_id: str, change: Callable[[job_pb2.Job], bool]) -> job_pb2.Job:
        """Apply ``change`` to the stored job atomically and return the result.

        ``change`` edits the job in place and returns whether to write it; it
        may be called several times when writers race, and may raise
        ServiceError to refuse the change.
        """
        key = self._keys.job(job_id)
        for _ in range(_CAS_ATTEMPTS):
            with storage_errors():
                info = self.store.head(key)
                if info is None:
                    raise _job_not_found(job_id)
                job = self._read(self.store.get_bytes(key))
            if not change(job):
                return job
            try:
                with storage_errors(writing=True):
                    self.store.put_bytes(key, _encode(job), if_match=info.etag)
            except PreconditionFailed:
                continue
            self._notify()
            return job
        raise ServiceError(Code.ABORTED, "INTERNAL_ERROR", f"job {job_id} is being updated too often; retry")

    def list_jobs(
        self,
        page_size: int,
        page_token: str,
        match: Callable[[job_pb2.Job], bool] | None = None,
        max_scan: int = 1000,
    ) -> tuple[list[job_pb2.Job], str]:
        """One page of jobs, newest first, and the token of the next page ("" at the end).

        With ``match``, only the jobs it accepts, reading at most ``max_scan`` records for one page: a page
        may then hold fewer than ``page_size`` jobs (even none) and still have a next one.
        """
        index = self._keys.index_prefix
        last = self._start_after(page_token)
        jobs: list[job_pb2.Job] = []
        scanned = 0
        batch = page_size if match is None else min(max(page_size, 50), max_scan)
        while len(jobs) < page_size and scanned < max_scan:
            with storage_errors():
                keys = self.store.list_keys(index, start_after=last, limit=batch)
            if not keys:
                return jobs, ""
            for key in keys:
                scanned, last = scanned + 1, key
                with contextlib.suppress(ServiceError):
                    job = self.get(key[len(index) :].split("-", 1)[-1])
                    if match is None or match(job):
                        jobs.append(job)
                if len(jobs) == page_size or scanned >= max_scan:
                    break
        with storage_errors():
            more = self.store.list_keys(index, start_after=last, limit=1)
        return jobs, base64.urlsafe_b64encode(last.encode()).decode() if more and last else ""

    def _start_after(self, page_token: str) -> str | None:
        """The index key a page token continues after; INVALID_PAGE_TOKEN for one this server did not give."""
        if not page_token:
            return None
        try:
            start_after: str | None = base64.urlsafe_b64decode(page_token.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            start_after = None
        if start_after is None or not start_after.startswith(self._keys.index_prefix):
            raise ServiceError(
                Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", "page_token is not one this server gave"
            )
        return start_after

    # -- change notification --------------------------------------------------------------------

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> None:
        """Block until a record written through this store changes, or ``timeout`` seconds."""
        with self._changed:
            self._changed.wait(timeout)


def _encode(job: job_pb2.Job) -> bytes:
    return json_format.MessageToJson(job, preserving_proto_field_name=True).encode()


CORRUPT = "corrupt job record"


def _decode(data: bytes) -> job_pb2.Job:
    try:
        return json_format.Parse(data, job_pb2.Job(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"{CORRUPT}: {exc}") from exc


__all__ = ["JobStore"]
