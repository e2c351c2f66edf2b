"""Uploaded models in object storage, content-addressed by their SHA-256 (keys: :mod:`.keys`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

from google.protobuf import json_format

from prunekit.v1 import model_pb2

from ...errors import Code, ServiceError
from ...storage import ChecksumMismatch, ObjectNotFound, ObjectStore
from .keys import MODELS, TenantKeys, is_sha256
from .storage_errors import storage_errors
from .uris import TenantUris
from .usage import TenantUsage

log = logging.getLogger(__name__)


class ModelStore:
    """One tenant's uploaded models in an :class:`ObjectStore`. Thread-safe (it keeps no state)."""

    def __init__(self, store: ObjectStore, tenant: str = "default") -> None:
        self.store = store
        self.tenant = tenant
        self._keys = TenantKeys(tenant)
        self.uris = TenantUris(store, tenant)
        self.usage = TenantUsage(store, tenant)

    def key(self, sha256: str) -> str:
        """The key of the model bytes with this digest."""
        return self._keys.model(sha256)

    def put(
        self, path: Path, ref: model_pb2.ModelRef, *, quota_bytes: int = 0
    ) -> tuple[model_pb2.ModelRef, bool]:
        """Store model bytes once; returns the stored ref and whether they were there already.

        ``ref.sha256`` must be the digest of the file's bytes, computed by the caller while it received them
        (the upload does): the file is moved into the store (:meth:`ObjectStore.adopt_file`), not re-read.
        New bytes count against the tenant's stored bytes (QUOTA_EXCEEDED beyond ``quota_bytes`` > 0).
        """
        existing = self.find(ref.sha256)
        if existing is not None:
            if existing.format != ref.format:
                raise ServiceError(
                    Code.INVALID_ARGUMENT,
                    "INVALID_REQUEST",
                    f"these bytes were uploaded before as {model_pb2.ModelFormat.Name(existing.format)}",
                )
            self.in_use(ref.sha256)
            return existing, True
        key = self.key(ref.sha256)
        stored = model_pb2.ModelRef()
        stored.CopyFrom(ref)
        stored.uri = self.uris.uri_for(key)
        with self.usage.reserved(ref.size_bytes, limit=quota_bytes), storage_errors(writing=True):
            self.store.adopt_file(key, path, sha256=ref.sha256)
            self.store.put_bytes(
                self._keys.model_meta(ref.sha256), json_format.MessageToJson(stored).encode()
            )
        return stored, False

    def in_use(self, sha256: str) -> None:
        """The model was uploaded again or named by a job: it is not garbage (see :mod:`.collect`)."""
        with storage_errors(writing=True):
            self.store.delete(self._keys.gc_mark(MODELS, sha256))

    def find(self, sha256: str) -> model_pb2.ModelRef | None:
        """The stored ref of the model with this digest, or None; its ``uri`` is always the logical one
        (:mod:`.uris`), also for refs older servers stored with a storage URI."""
        if not is_sha256(sha256):
            return None
        found = read_meta(self.store, self._keys.model_meta(sha256), model_pb2.ModelRef(), sha256)
        if found is not None:
            found.uri = self.uris.uri_for(self.key(sha256))
        return found

    def resolve(self, ref: model_pb2.ModelRef) -> model_pb2.ModelRef:
        """The stored model a client's ref points at (looked up by digest, never by its URI; a ``uri``, when
        given, must name the same object, in either form :meth:`TenantUris.key_for_uri` reads)."""
        if not is_sha256(ref.sha256):
            raise ServiceError(
                Code.INVALID_ARGUMENT, "INVALID_REQUEST", "model.sha256 must be 64 lower-case hex digits"
            )
        stored = self.find(ref.sha256)
        if stored is None or (ref.uri and not self.uris.names(ref.uri, self.key(ref.sha256))):
            raise ServiceError(
                Code.NOT_FOUND,
                "MODEL_NOT_FOUND",
                f"no model {ref.sha256} here; upload it first",
                metadata={"sha256": ref.sha256},
            )
        return stored


_M = TypeVar("_M", model_pb2.ModelRef, model_pb2.DatasetRef)


def read_meta(store: ObjectStore, key: str, ref: _M, sha256: str) -> _M | None:
    """The stored ``meta.json`` at ``key``, or None when there is none.

    A ``meta.json`` that fails its recorded sha256 or does not parse is treated as absent (the next
    upload of the same bytes writes it again; a job naming them gets MODEL_NOT_FOUND or
    DATASET_NOT_FOUND, asking for that upload), with a warning in the server's log.
    """
    with storage_errors():
        try:
            data = store.get_bytes(key)
        except ObjectNotFound:
            return None
        except ChecksumMismatch as exc:
            log.warning("the metadata of %s in storage is corrupt (%s); treated as absent", sha256, exc)
            return None
    try:
        return json_format.Parse(data, ref)
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        log.warning("the metadata of %s in storage is unreadable (%s); treated as absent", sha256, exc)
        return None
