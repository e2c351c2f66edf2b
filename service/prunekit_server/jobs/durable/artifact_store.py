"""What a job's worker starts leave in object storage: their files, the job's one manifest, and the
prefix of its training checkpoints (keys: :mod:`.keys`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import json_format

from prunekit.v1 import job_pb2

from ...errors import Code, ServiceError
from ...storage import ObjectNotFound, ObjectStore, PreconditionFailed
from . import record
from .keys import TenantKeys
from .storage_errors import guarded, storage_errors
from .uris import TenantUris
from .usage import TenantUsage


class ArtifactStore:
    """One tenant's job artifacts and checkpoints in an :class:`ObjectStore`. Thread-safe."""

    def __init__(self, store: ObjectStore, tenant: str = "default") -> None:
        self.store = store
        self.tenant = tenant
        self._keys = TenantKeys(tenant)
        self.uris = TenantUris(store, tenant)
        self.usage = TenantUsage(store, tenant)

    def checkpoint_prefix(self, job_id: str) -> str:
        """Where a job's training checkpoints live (``<prefix><phase>/...``)."""
        return self._keys.checkpoints(job_id)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a job's checkpoints, an attempt's artifacts)."""
        with storage_errors(writing=True):
            for key in self.store.list_keys(prefix):
                self.store.delete(key)

    def put(self, job_id: str, name: str, path: Path, sha256: str, attempt: int = 1) -> job_pb2.Artifact:
        """Upload one file of worker start ``attempt``, verified against ``sha256``.

        Each attempt writes under its own prefix, so a server that lost the
        job's lease never overwrites the files the manifest names.
        """
        key = self._keys.attempt_file(job_id, max(1, attempt), name)
        with storage_errors(writing=True):
            info = self.store.put_file(key, path, sha256=sha256)
        return job_pb2.Artifact(name=name, uri=self.uris.uri_for(key), sha256=sha256, size_bytes=info.size)

    def discard_unlisted(self, job_id: str, attempt: int | None = None) -> int:
        """Delete the files of worker start ``attempt`` (None: of every start) that the job's manifest
        does not name: what a failed, interrupted or outrun publish left. Returns how many."""
        listed = {self.uris.key_for_uri(a.uri) for a in self.manifest(job_id) or []}
        prefix = self._keys.attempts(job_id) + (f"{attempt}/" if attempt is not None else "")
        with storage_errors(writing=True):
            stale = [key for key in self.store.list_keys(prefix) if key not in listed]
            for key in stale:
                self.store.delete(key)
        return len(stale)

    def write_manifest(self, job_id: str, artifacts: list[job_pb2.Artifact]) -> bool:
        """Record what a job produced, written after every artifact and at most once.

        Returns False, writing nothing, when the job already has a manifest (a
        conditional put: of two publishers, the first one wins). The winner's artifacts count
        against the tenant's stored bytes (never refused: the job's work is done).
        """
        body = {"job_id": job_id, "artifacts": [json_format.MessageToDict(a) for a in artifacts]}
        total = sum(a.size_bytes for a in artifacts)
        with self.usage.reserved(total), storage_errors(writing=True):
            try:
                self.store.put_bytes(
                    self._keys.manifest(job_id), json.dumps(body, indent=1).encode(), if_absent=True
                )
            except PreconditionFailed:
                self.usage.add(-total)
                return False
        return True

    def manifest(self, job_id: str) -> list[job_pb2.Artifact] | None:
        """The job's manifest, or None when it has none (it did not succeed); URIs in their logical form
        (:mod:`.uris`), also in manifests older servers wrote with storage URIs."""
        with storage_errors():
            try:
                body = json.loads(self.store.get_bytes(self._keys.manifest(job_id)))
            except ObjectNotFound:
                return None
        artifacts = [json_format.ParseDict(a, job_pb2.Artifact()) for a in body["artifacts"]]
        for artifact in artifacts:
            artifact.uri = self.uris.shown(artifact.uri)
        return artifacts

    def read(self, artifact: job_pb2.Artifact) -> bytes:
        """The whole content of a listed artifact (small ones: the report)."""
        with storage_errors():
            return self.store.get_bytes(self.uris.key_for_uri(artifact.uri))

    def open(self, job: job_pb2.Job, name: str) -> tuple[job_pb2.Artifact, Iterator[bytes]]:
        """An artifact listed in the manifest of ``job`` (as stored now) and a stream of its bytes."""
        artifacts = self.manifest(job.id) if job.state == record.SUCCEEDED else None
        if artifacts is None:
            raise ServiceError(
                Code.FAILED_PRECONDITION,
                "JOB_NOT_SUCCEEDED",
                f"job {job.id} is {record.state_name(job.state)}; only a succeeded job has artifacts",
            )
        for artifact in artifacts:
            if artifact.name == name:
                with storage_errors():
                    chunks = self.store.iter_chunks(self.uris.key_for_uri(artifact.uri))
                return artifact, guarded(chunks)
        names = ", ".join(a.name for a in artifacts)
        raise ServiceError(
            Code.NOT_FOUND, "ARTIFACT_NOT_FOUND", f"job {job.id} has no artifact {name!r} (it has: {names})"
        )
