"""Job records, models and artifacts kept in object storage.

Everything a client can ask about lives here, so any server on the same
storage answers for any job. Layout, per tenant::

    tenants/<t>/models/<sha256>/model          the uploaded bytes (content-addressed)
    tenants/<t>/models/<sha256>/meta.json      its ModelRef, written after the bytes
    tenants/<t>/jobs/<id>/job.json             the Job message as JSON
    tenants/<t>/jobs/<id>/attempts/<n>/<name>  files worker start n produced
    tenants/<t>/jobs/<id>/manifest.json        the artifacts, written last and only once
    tenants/<t>/jobs/<id>/checkpoints/...      training checkpoints (see checkpoint_sync)
    tenants/<t>/job-index/<inverted-ms>-<id>   newest-first listing
    tenants/<t>/active/<id>                    jobs not yet cleaned up (what the sweeper scans)
    tenants/<t>/requests/<sha256(request_id)>  {job_id, fingerprint}: idempotent create
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from google.protobuf import json_format

from prunekit.v1 import job_pb2, model_pb2, spec_pb2

from ...errors import Code, ServiceError
from ...storage import (
    ChecksumMismatch,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
)
from . import lease, record

_MAX_MS = 10**13 - 1
_CAS_ATTEMPTS = 20


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn storage failures into service errors.

    Unreachable or failing storage is UNAVAILABLE (STORAGE_UNAVAILABLE); corrupt
    data or a bad key is INTERNAL. ObjectNotFound and PreconditionFailed pass
    through for the caller to handle.
    """
    try:
        yield
    except (ObjectNotFound, PreconditionFailed):
        raise
    except (ChecksumMismatch, InvalidKey) as exc:
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"object storage: {exc}") from exc
    except StorageError as exc:
        raise ServiceError(Code.UNAVAILABLE, "STORAGE_UNAVAILABLE", f"object storage failed: {exc}") from exc


def _job_not_found(job_id: str) -> ServiceError:
    return ServiceError(Code.NOT_FOUND, "JOB_NOT_FOUND", f"no job {job_id!r}", metadata={"job_id": job_id})


def is_sha256(text: str) -> bool:
    """Whether ``text`` is 64 lower-case hex digits."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class JobStore:
    """One tenant's jobs, models and artifacts in an :class:`ObjectStore`.

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
        self._prefix = f"tenants/{tenant}"
        self._changed = threading.Condition()

    # -- models ---------------------------------------------------------------------------------

    def model_key(self, sha256: str) -> str:
        return f"{self._prefix}/models/{sha256}/model"

    def _model_meta_key(self, sha256: str) -> str:
        return f"{self._prefix}/models/{sha256}/meta.json"

    def put_model(self, path: Path, ref: model_pb2.ModelRef) -> tuple[model_pb2.ModelRef, bool]:
        """Store verified model bytes once; returns the stored ref and whether they were there already."""
        existing = self.find_model(ref.sha256)
        if existing is not None:
            if existing.format != ref.format:
                raise ServiceError(
                    Code.INVALID_ARGUMENT,
                    "INVALID_REQUEST",
                    f"these bytes were uploaded before as {model_pb2.ModelFormat.Name(existing.format)}",
                )
            return existing, True
        key = self.model_key(ref.sha256)
        stored = model_pb2.ModelRef()
        stored.CopyFrom(ref)
        stored.uri = self.store.uri_for(key)
        with storage_errors():
            self.store.put_file(key, path, sha256=ref.sha256)
            self.store.put_bytes(self._model_meta_key(ref.sha256), json_format.MessageToJson(stored).encode())
        return stored, False

    def find_model(self, sha256: str) -> model_pb2.ModelRef | None:
        """The stored ref of the model with this digest, or None."""
        if not is_sha256(sha256):
            return None
        with storage_errors():
            try:
                data = self.store.get_bytes(self._model_meta_key(sha256))
            except ObjectNotFound:
                return None
        return json_format.Parse(data, model_pb2.ModelRef())

    def resolve_model(self, ref: model_pb2.ModelRef) -> model_pb2.ModelRef:
        """The stored model a client's ref points at (looked up by digest, never by its URI)."""
        if not is_sha256(ref.sha256):
            raise ServiceError(
                Code.INVALID_ARGUMENT, "INVALID_REQUEST", "model.sha256 must be 64 lower-case hex digits"
            )
        stored = self.find_model(ref.sha256)
        if stored is None or (ref.uri and ref.uri != stored.uri):
            raise ServiceError(
                Code.NOT_FOUND,
                "MODEL_NOT_FOUND",
                f"no model {ref.sha256} here; upload it first",
                metadata={"sha256": ref.sha256},
            )
        return stored

    # -- jobs -----------------------------------------------------------------------------------

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}/jobs/{job_id}/job.json"

    def _index_prefix(self) -> str:
        return f"{self._prefix}/job-index/"

    def create(
        self,
        model: model_pb2.ModelRef,
        spec: spec_pb2.OptimizationSpec,
        request_id: str,
        labels: Mapping[str, str],
    ) -> tuple[job_pb2.Job, bool]:
        """Store a new PENDING job, or return the job this request_id already made.

        Returns ``(job, created)``. The same request_id with a different request
        is ALREADY_EXISTS (REQUEST_ID_REUSED). The request claim is written
        first, so a crash half-way is completed by the client's retry.
        """
        fingerprint = record.request_fingerprint(model, spec, labels)
        claim_key = f"{self._prefix}/requests/{_digest(request_id)}.json"
        job_id = record.new_job_id()
        claim = json.dumps({"job_id": job_id, "fingerprint": fingerprint, "request_id": request_id}).encode()
        with storage_errors():
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
                job_id = str(previous["job_id"])
                with contextlib.suppress(ServiceError):
                    return self.get(job_id), False
            job = record.new_job(job_id, model, spec, request_id, labels)
            if self.owner:
                lease.stamp(job, self.owner, self.lease_s)
            if not self._write_new(job):
                return self.get(job_id), False
        self._notify()
        return job, True

    def _write_new(self, job: job_pb2.Job) -> bool:
        """Write a new job's index entries and record; False, writing no listing entry, when
        a concurrent create with the same request_id wrote the record first."""
        millis = job.create_time.seconds * 1000 + job.create_time.nanos // 1_000_000
        index_key = f"{self._index_prefix()}{_MAX_MS - millis:013d}-{job.id}"
        self.store.put_bytes(self._active_key(job.id), job.id.encode())
        try:
            self.store.put_bytes(self._job_key(job.id), _encode(job), if_absent=True)
        except PreconditionFailed:
            return False
        self.store.put_bytes(index_key, job.id.encode())
        return True

    def _active_key(self, job_id: str) -> str:
        return f"{self._prefix}/active/{job_id}"

    def active_job_ids(self) -> list[str]:
        """Ids in the index of active jobs: written before the job record, removed only after an
        ended job's checkpoints were deleted (so it may hold ended jobs, and briefly unwritten ones)."""
        prefix = f"{self._prefix}/active/"
        with storage_errors():
            keys = self.store.list_keys(prefix)
        return [key[len(prefix) :] for key in keys if record.is_valid_job_id(key[len(prefix) :])]

    def forget_active(self, job_id: str) -> None:
        """Remove ``job_id`` from the index of jobs not yet ended."""
        with storage_errors():
            self.store.delete(self._active_key(job_id))

    def get(self, job_id: str) -> job_pb2.Job:
        """The stored job; NOT_FOUND (JOB_NOT_FOUND) when there is none."""
        if not record.is_valid_job_id(job_id):
            raise _job_not_found(job_id)
        with storage_errors():
            try:
                return _decode(self.store.get_bytes(self._job_key(job_id)))
            except ObjectNotFound:
                raise _job_not_found(job_id) from None

    def mutate(self, job_id: str, change: Callable[[job_pb2.Job], bool]) -> job_pb2.Job:
        """Apply ``change`` to the stored job atomically and return the result.

        ``change`` edits the job in place and returns whether to write it; it
        may be called several times when writers race, and may raise
        ServiceError to refuse the change.
        """
        key = self._job_key(job_id)
        for _ in range(_CAS_ATTEMPTS):
            with storage_errors():
                info = self.store.head(key)
                if info is None:
                    raise _job_not_found(job_id)
                job = _decode(self.store.get_bytes(key))
                if not change(job):
                    return job
                try:
                    self.store.put_bytes(key, _encode(job), if_match=info.etag)
                except PreconditionFailed:
                    continue
            self._notify()
            return job
        raise ServiceError(Code.ABORTED, "INTERNAL_ERROR", f"job {job_id} is being updated too often; retry")

    def list_jobs(self, page_size: int, page_token: str) -> tuple[list[job_pb2.Job], str]:
        """One page of jobs, newest first, and the token of the next page ("" at the end)."""
        start_after: str | None = None
        if page_token:
            try:
                start_after = base64.urlsafe_b64decode(page_token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                start_after = None
            if start_after is None or not start_after.startswith(self._index_prefix()):
                raise ServiceError(
                    Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", "page_token is not one this server gave"
                )
        jobs: list[job_pb2.Job] = []
        with storage_errors():
            keys = self.store.list_keys(self._index_prefix(), start_after=start_after, limit=page_size + 1)
        for key in keys[:page_size]:
            job_id = key[len(self._index_prefix()) :].split("-", 1)[-1]
            with contextlib.suppress(ServiceError):
                jobs.append(self.get(job_id))
        next_token = ""
        if len(keys) > page_size:
            next_token = base64.urlsafe_b64encode(keys[page_size - 1].encode()).decode()
        return jobs, next_token

    # -- artifacts ------------------------------------------------------------------------------

    def _manifest_key(self, job_id: str) -> str:
        return f"{self._prefix}/jobs/{job_id}/manifest.json"

    def checkpoint_prefix(self, job_id: str) -> str:
        """Where a job's training checkpoints live (``<prefix><phase>/...``)."""
        return f"{self._prefix}/jobs/{job_id}/checkpoints/"

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a job's checkpoints, an attempt's artifacts)."""
        with storage_errors():
            for key in self.store.list_keys(prefix):
                self.store.delete(key)

    def put_artifact(
        self, job_id: str, name: str, path: Path, sha256: str, attempt: int = 1
    ) -> job_pb2.Artifact:
        """Upload one file of worker start ``attempt``, verified against ``sha256``.

        Each attempt writes under its own prefix, so a server that lost the
        job's lease never overwrites the files the manifest names.
        """
        key = f"{self._prefix}/jobs/{job_id}/attempts/{max(1, attempt)}/{name}"
        with storage_errors():
            info = self.store.put_file(key, path, sha256=sha256)
        return job_pb2.Artifact(name=name, uri=self.store.uri_for(key), sha256=sha256, size_bytes=info.size)

    def write_manifest(self, job_id: str, artifacts: list[job_pb2.Artifact]) -> bool:
        """Record what a job produced, written after every artifact and at most once.

        Returns False, writing nothing, when the job already has a manifest (a
        conditional put: of two publishers, the first one wins).
        """
        body = {"job_id": job_id, "artifacts": [json_format.MessageToDict(a) for a in artifacts]}
        with storage_errors():
            try:
                self.store.put_bytes(
                    self._manifest_key(job_id), json.dumps(body, indent=1).encode(), if_absent=True
                )
            except PreconditionFailed:
                return False
        return True

    def manifest(self, job_id: str) -> list[job_pb2.Artifact] | None:
        """The job's manifest, or None when it has none (it did not succeed)."""
        with storage_errors():
            try:
                body = json.loads(self.store.get_bytes(self._manifest_key(job_id)))
            except ObjectNotFound:
                return None
        return [json_format.ParseDict(a, job_pb2.Artifact()) for a in body["artifacts"]]

    def artifact_bytes(self, artifact: job_pb2.Artifact) -> bytes:
        """The whole content of a listed artifact (small ones: the report)."""
        with storage_errors():
            return self.store.get_bytes(self.store.key_for_uri(artifact.uri))

    def open_artifact(self, job_id: str, name: str) -> tuple[job_pb2.Artifact, Iterator[bytes]]:
        """An artifact listed in the job's manifest and a stream of its bytes."""
        job = self.get(job_id)
        artifacts = self.manifest(job_id) if job.state == record.SUCCEEDED else None
        if artifacts is None:
            raise ServiceError(
                Code.FAILED_PRECONDITION,
                "JOB_NOT_SUCCEEDED",
                f"job {job_id} is {record.state_name(job.state)}; only a succeeded job has artifacts",
            )
        for artifact in artifacts:
            if artifact.name == name:
                with storage_errors():
                    chunks = self.store.iter_chunks(self.store.key_for_uri(artifact.uri))
                return artifact, _guarded(chunks)
        names = ", ".join(a.name for a in artifacts)
        raise ServiceError(
            Code.NOT_FOUND, "ARTIFACT_NOT_FOUND", f"job {job_id} has no artifact {name!r} (it has: {names})"
        )

    # -- change notification --------------------------------------------------------------------

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> None:
        """Block until a record written through this store changes, or ``timeout`` seconds."""
        with self._changed:
            self._changed.wait(timeout)


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    with storage_errors():
        yield from chunks


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(job: job_pb2.Job) -> bytes:
    return json_format.MessageToJson(job, preserving_proto_field_name=True).encode()


def _decode(data: bytes) -> job_pb2.Job:
    try:
        return json_format.Parse(data, job_pb2.Job(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"corrupt job record: {exc}") from exc


__all__ = ["JobStore", "is_sha256", "storage_errors"]
