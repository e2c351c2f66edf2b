"""Dataset shards in object storage: stored by UploadDataset, named by a spec's ``data``, staged for a worker.

Layout, per tenant (beside the models and jobs, see :mod:`.keys`)::

    tenants/<t>/datasets/<sha256>/data.npz     an uploaded shard (content-addressed)
    tenants/<t>/datasets/<sha256>/meta.json    its DatasetRef, written after the bytes
    tenants/<t>/datasets/<anything>.npz        shards users put there with their own tools

A ``data.train`` / ``data.eval`` entry is a URI naming a key under
``tenants/<t>/datasets/``: ``prunekit://datasets/...`` (:mod:`.uris`; the URI UploadDataset returns is
one), or a storage URI of the same key (what older servers returned); an entry
ending in ``/`` stands for every ``.npz`` under that prefix, sorted. Entries
outside the prefix, with a ``.`` or ``..`` segment, or whose path meets a
symbolic link (file backend) are PERMISSION_DENIED (DATASET_OUTSIDE_PREFIX);
entries naming nothing are NOT_FOUND (DATASET_NOT_FOUND); more shards or bytes
than the server allows one job are RESOURCE_EXHAUSTED (DATASET_TOO_LARGE).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from prunekit.v1 import model_pb2, spec_pb2

from ...config import Settings
from ...errors import Code, FieldViolation, ServiceError, invalid_spec
from ...hashing import sha256_file
from ...storage import InvalidKey, ObjectNotFound, ObjectStore
from .keys import DATASETS, TenantKeys, is_sha256
from .model_store import read_meta
from .shard_format import inspect_shard
from .storage_errors import storage_errors
from .stores import TenantStores
from .uris import TenantUris
from .usage import TenantUsage

SHARD_SUFFIX = ".npz"
_LIST_PAGE = 1000
_MAX_LISTED = 20 * _LIST_PAGE
"""Objects one prefix entry may make CreateJob list (shards or not) before it is refused."""


@dataclass(frozen=True)
class ShardRef:
    """One shard a ``data`` entry names: key and URI in the store, sha256 ("" if not recorded), size."""

    key: str
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ResolvedData:
    """The shards of ``data.train`` and ``data.eval``, entries expanded, in spec order."""

    train: list[ShardRef] = field(default_factory=list)
    eval: list[ShardRef] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in [*self.train, *self.eval])


def _outside(entry: str, why: str) -> ServiceError:
    return ServiceError(
        Code.PERMISSION_DENIED,
        "DATASET_OUTSIDE_PREFIX",
        f"data entry {entry!r} {why}",
        metadata={"entry": entry},
    )


def _not_found(entry: str, message: str) -> ServiceError:
    return ServiceError(Code.NOT_FOUND, "DATASET_NOT_FOUND", message, metadata={"entry": entry})


def _too_large(message: str, **metadata: str) -> ServiceError:
    return ServiceError(Code.RESOURCE_EXHAUSTED, "DATASET_TOO_LARGE", message, metadata=metadata)


class DatasetStore:
    """One tenant's dataset shards in an :class:`ObjectStore`, with the per-job limits. Thread-safe."""

    def __init__(self, store: ObjectStore, tenant: str, *, max_job_bytes: int, max_job_shards: int) -> None:
        self.store = store
        self._keys = TenantKeys(tenant)
        self.prefix = self._keys.datasets_prefix
        self.uris = TenantUris(store, tenant)
        self.usage = TenantUsage(store, tenant)
        self.max_job_bytes = max_job_bytes
        self.max_job_shards = max_job_shards

    @classmethod
    def for_tenant(cls, stores: TenantStores, settings: Settings) -> DatasetStore:
        """The datasets beside ``stores`` (same object store and tenant), with ``settings``' job limits."""
        return cls(
            stores.store,
            stores.jobs.tenant,
            max_job_bytes=settings.max_job_data_bytes,
            max_job_shards=settings.max_job_data_shards,
        )

    @property
    def prefix_uri(self) -> str:
        """The URI every new-style ``data`` entry starts with (``prunekit://datasets/``)."""
        return self.uris.uri_for(self.prefix.rstrip("/")) + "/"

    # -- uploads --------------------------------------------------------------------------------

    def _shard_key(self, sha256: str) -> str:
        return f"{self.prefix}{sha256}/data{SHARD_SUFFIX}"

    def _meta_key(self, sha256: str) -> str:
        return f"{self.prefix}{sha256}/meta.json"

    def find(self, sha256: str) -> model_pb2.DatasetRef | None:
        """The stored ref of the uploaded shard with this digest, or None; its ``uri`` the logical one."""
        if not is_sha256(sha256):
            return None
        found = read_meta(self.store, self._meta_key(sha256), model_pb2.DatasetRef(), sha256)
        if found is not None:
            found.uri = self.uris.uri_for(self._shard_key(sha256))
        return found

    def put(
        self, path: Path, ref: model_pb2.DatasetRef, *, quota_bytes: int = 0
    ) -> tuple[model_pb2.DatasetRef, bool]:
        """Store shard bytes once; returns the stored ref and whether they were there already. New bytes
        count against the tenant's stored bytes (QUOTA_EXCEEDED beyond ``quota_bytes`` > 0).

        ``ref.sha256`` must be the digest the caller computed over the bytes: the file is moved in, not
        re-read.

        New bytes are checked first (:func:`inspect_shard`: INVALID_DATASET naming
        ``<filename>:<array>``); the ref, with ``uri``, ``samples`` and ``arrays``
        filled, is written after the bytes.
        """
        existing = self.find(ref.sha256)
        if existing is not None:
            self._in_use(ref.sha256)
            return existing, True
        summary = inspect_shard(path, ref.filename)
        stored = model_pb2.DatasetRef()
        stored.CopyFrom(ref)
        key = self._shard_key(ref.sha256)
        stored.uri = self.uris.uri_for(key)
        stored.samples = summary.samples
        stored.arrays[:] = summary.arrays
        with self.usage.reserved(ref.size_bytes, limit=quota_bytes), storage_errors(writing=True):
            self.store.adopt_file(key, path, sha256=ref.sha256)
            self.store.put_bytes(self._meta_key(ref.sha256), json_format.MessageToJson(stored).encode())
        return stored, False

    # -- a job's data ---------------------------------------------------------------------------

    def _key(self, entry: str, where: str) -> str:
        """The key (without a trailing ``/``) an entry names, checked to lie under the dataset prefix."""
        if not entry.strip() or "://" not in entry:
            description = f"{entry!r} is not a URI; use a DatasetRef uri or {self.prefix_uri}..."
            raise invalid_spec([FieldViolation(where, description)])
        path = entry.split("://", 1)[1]
        if any(part in (".", "..") for part in path.rstrip("/").split("/")):
            raise _outside(entry, "has a '.' or '..' segment")
        try:
            key = self.uris.key_for_uri(entry.rstrip("/"))
        except InvalidKey:
            raise _outside(entry, f"is not under {self.prefix_uri}") from None
        if not (key + "/").startswith(self.prefix):
            raise _outside(entry, f"is not under {self.prefix_uri}")
        return key

    def _expand(self, entry: str, key: str, budget: int) -> list[ShardRef]:
        """Every ``.npz`` under ``key + '/'`` (sorted), at most ``budget`` + 1 of them.

        DATASET_TOO_LARGE when the prefix holds more than :data:`_MAX_LISTED`
        objects before that many shards are found (CreateJob lists it inline).
        """
        prefix = key + "/"
        keys: list[str] = []
        start: str | None = None
        listed = 0
        while True:
            with storage_errors():
                page = self.store.list_keys(prefix, start_after=start, limit=_LIST_PAGE)
            listed += len(page)
            keys += [k for k in page if k.endswith(SHARD_SUFFIX)]
            if len(page) < _LIST_PAGE or len(keys) > budget:
                break
            if listed >= _MAX_LISTED:
                raise _too_large(
                    f"data entry {entry!r}: more than {_MAX_LISTED} objects under this prefix; "
                    "name a narrower prefix or the shards themselves",
                    entry=entry,
                )
            start = page[-1]
        if not keys:
            raise _not_found(entry, f"data entry {entry!r}: no {SHARD_SUFFIX} shards under it")
        return [self._ref(entry, k) for k in keys[: budget + 1]]

    def _ref(self, entry: str, key: str) -> ShardRef:
        with storage_errors():
            try:
                info = self.store.head(key)
            except InvalidKey as exc:  # the file backend's path meets a symbolic link
                raise _outside(entry, f"cannot be read: {exc}") from None
        if info is None:
            raise _not_found(entry, f"data entry {entry!r}: no such shard")
        return ShardRef(key=key, uri=self.uris.uri_for(key), sha256=info.sha256 or "", size=info.size)

    def _split(self, entries: list[str], where: str, budget: int) -> list[ShardRef]:
        shards: list[ShardRef] = []
        for i, entry in enumerate(entries):
            key = self._key(entry, f"{where}[{i}]")
            left = budget - len(shards)
            shards += self._expand(entry, key, left) if entry.endswith("/") else [self._ref(entry, key)]
            if len(shards) > budget:
                raise _too_large(
                    f"the job's data names more than {self.max_job_shards} shards",
                    max_job_data_shards=str(self.max_job_shards),
                )
        return shards

    def _in_use(self, sha256: str) -> None:
        with storage_errors(writing=True):
            self.store.delete(self._keys.gc_mark(DATASETS, sha256))

    def resolve(self, data: spec_pb2.DataSpec) -> ResolvedData:
        """The shards ``data`` names (see the module docstring for the errors); uploaded ones are marked
        in use (see :mod:`.collect`)."""
        train = self._split(list(data.train), "spec.data.train", self.max_job_shards)
        evaluation = self._split(list(data.eval), "spec.data.eval", self.max_job_shards - len(train))
        resolved = ResolvedData(train, evaluation)
        for shard in [*train, *evaluation]:
            if self._is_upload(shard.key):
                self._in_use(shard.key[len(self.prefix) :].split("/", 1)[0])
        if resolved.total_bytes > self.max_job_bytes:
            raise _too_large(
                f"the job's data is {resolved.total_bytes} bytes, over this server's "
                f"{self.max_job_bytes} byte limit",
                max_job_data_bytes=str(self.max_job_bytes),
            )
        return resolved

    def stage(self, data: spec_pb2.DataSpec, workdir: Path) -> dict[str, Any]:
        """Download the shards ``data`` names into ``workdir/input/data/{train,eval}/NNNN.npz``.

        Returns the worker task's ``data``: ``{"train": [{"path", "uri", "sha256"}, ...],
        "eval": [...]}`` with paths relative to ``workdir`` (both lists empty without
        data). Each file's sha256 is computed and must match the one recorded in
        storage; shards not uploaded through UploadDataset are checked like uploads
        (INVALID_DATASET naming ``<file name>:<array>``).
        """
        resolved = self.resolve(data)
        staged: dict[str, Any] = {}
        for split, shards in (("train", resolved.train), ("eval", resolved.eval)):
            staged[split] = [self._stage_one(shard, workdir, split, i) for i, shard in enumerate(shards)]
        return staged

    def _stage_one(self, shard: ShardRef, workdir: Path, split: str, index: int) -> dict[str, str]:
        relative = Path("input", "data", split, f"{index:04d}{SHARD_SUFFIX}")
        target = workdir / relative
        with storage_errors():
            try:
                self.store.get_file(shard.key, target)
            except ObjectNotFound:
                raise _not_found(shard.uri, f"data shard {shard.uri!r} disappeared before staging") from None
        digest = sha256_file(target)
        if shard.sha256 and digest != shard.sha256:
            raise ServiceError(
                Code.INTERNAL,
                "INTERNAL_ERROR",
                f"data shard {shard.uri}: sha256 {digest}, storage recorded {shard.sha256}",
            )
        if not self._is_upload(shard.key):
            inspect_shard(target, os.path.basename(shard.key))
        return {"path": relative.as_posix(), "uri": shard.uri, "sha256": digest}

    def _is_upload(self, key: str) -> bool:
        name = key[len(self.prefix) :]
        digest, _, rest = name.partition("/")
        return rest == f"data{SHARD_SUFFIX}" and is_sha256(digest)


__all__ = ["DatasetStore", "ResolvedData", "ShardRef"]
