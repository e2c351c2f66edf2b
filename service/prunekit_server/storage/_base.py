"""The object-store contract: the info record, the error hierarchy and the protocol."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "ChecksumMismatch",
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
]


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object.

    ``sha256`` is the lower-case hex digest recorded when the object was written
    (``None`` only for objects written by something else without one). ``etag``
    is an opaque version token: pass it back as ``if_match`` for a compare-and-swap.
    """

    key: str
    size: int
    sha256: str | None
    etag: str


class StorageError(Exception):
    """Base of every error a store raises."""


class ObjectNotFound(StorageError):  # noqa: N818 (names are the public contract)
    """The key does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key!r}")
        self.key = key


class PreconditionFailed(StorageError):  # noqa: N818 (names are the public contract)
    """A conditional write lost: ``if_absent`` on an existing key, or a stale ``if_match``."""


class StorageUnavailable(StorageError):  # noqa: N818 (names are the public contract)
    """The store cannot serve requests now: unreachable, credentials rejected, throttled, disk full..."""


class StorageFull(StorageUnavailable):
    """The store has no space left (a full disk or quota): writes fail until space is freed."""


class ChecksumMismatch(StorageError):  # noqa: N818 (names are the public contract)
    """Content does not match its sha256 (the one supplied to a write, or the one recorded on read)."""


class InvalidKey(StorageError, ValueError):  # noqa: N818 (names are the public contract)
    """A key, prefix or URI that a store refuses (syntax, reserved names, outside the store)."""


class ObjectStore(Protocol):
    """A flat namespace of immutable-per-write objects under ``/``-separated keys.

    Every write is atomic: readers see the old object or the new one, never a mix.
    Keys are validated by :func:`prunekit_server.storage.validate_key` rules on every
    call. Errors are always :class:`StorageError` subclasses.
    """

    @property
    def uri(self) -> str:
        """The base URI the store was opened with, normalised (``file:///abs`` or ``s3://bucket/prefix``)."""
        ...

    def uri_for(self, key: str) -> str:
        """The URI of ``key`` in this store."""
        ...

    def key_for_uri(self, uri: str) -> str:
        """Inverse of :meth:`uri_for`; raises :class:`InvalidKey` for a URI outside this store."""
        ...

    def put_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        """Write ``data`` under ``key``.

        ``if_absent``: fail with :class:`PreconditionFailed` if the key exists. ``if_match``:
        fail with :class:`PreconditionFailed` unless the key exists with that etag. The two are
        exclusive (``ValueError``).
        """
        ...

    def put_file(
        self, key: str, path: Path, *, sha256: str | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        """Stream the file at ``path`` into ``key`` without holding it in memory.

        If ``sha256`` is given the content must match it, else :class:`ChecksumMismatch`
        and nothing is written. A missing ``path`` raises ``FileNotFoundError``.
        """
        ...

    def spool_dir(self) -> Path | None:
        """A local directory from which :meth:`adopt_file` moves files in without copying them, or None."""
        ...

    def adopt_file(self, key: str, path: Path, *, sha256: str, if_absent: bool = False) -> ObjectInfo:
        """Store the local file ``path`` under ``key`` and consume it (it is gone afterwards, on success).

        ``sha256`` is what the caller computed over exactly these bytes while writing them: the store
        records it without reading the file again. A file in :meth:`spool_dir` is renamed into place;
        any other is copied and removed.
        """
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object; :class:`ObjectNotFound` if absent, :class:`ChecksumMismatch` if corrupt."""
        ...

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Stream the object to ``path`` atomically (temporary file beside it, then rename).

        Parent directories are created. On any error ``path`` is left as it was; failures of
        the local filesystem surface as ``OSError``.
        """
        ...

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the object in chunks of at most ``chunk_size`` bytes.

        :class:`ObjectNotFound` is raised by this call itself, before any chunk; a recorded
        sha256 is checked after the last chunk (:class:`ChecksumMismatch`).
        """
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or ``None`` if absent."""
        ...

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Keys starting with the plain string ``prefix``, ascending in UTF-8 byte order.

        Only keys strictly greater than ``start_after`` are returned, at most ``limit`` of them.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting an absent key is not an error."""
        ...
