"""An object store that times every call and counts its failures (:mod:`.metrics`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from ..storage import ObjectInfo, ObjectNotFound, ObjectStore, PreconditionFailed
from .metrics import STORAGE_ERRORS, STORAGE_SECONDS

_EXPECTED = (ObjectNotFound, PreconditionFailed)
"""Answers, not failures: a missing key and a lost compare-and-swap are part of the protocol."""


@contextlib.contextmanager
def _measured(operation: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except _EXPECTED:
        raise
    except Exception as exc:
        STORAGE_ERRORS.labels(operation, type(exc).__name__).inc()
        raise
    finally:
        STORAGE_SECONDS.labels(operation).observe(time.perf_counter() - started)


class MeasuredStore:
    """``store`` with each call observed in ``prunekit_storage_operation_duration_seconds`` and each
    failure (other than a missing key or a failed precondition) in ``prunekit_storage_errors_total``."""

    def __init__(self, store: ObjectStore) -> None:
        self.inner = store

    @property
    def uri(self) -> str:
        return self.inner.uri

    def uri_for(self, key: str) -> str:
        return self.inner.uri_for(key)

    def key_for_uri(self, uri: str) -> str:
        return self.inner.key_for_uri(uri)

    def put_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        with _measured("put"):
            return self.inner.put_bytes(key, data, if_absent=if_absent, if_match=if_match)

    def put_file(
        self, key: str, path: Path, *, sha256: str | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        with _measured("put_file"):
            return self.inner.put_file(key, path, sha256=sha256, if_absent=if_absent)

    def spool_dir(self) -> Path | None:
        return self.inner.spool_dir()

    def adopt_file(self, key: str, path: Path, *, sha256: str, if_absent: bool = False) -> ObjectInfo:
        with _measured("put_file"):
            return self.inner.adopt_file(key, path, sha256=sha256, if_absent=if_absent)

    def get_bytes(self, key: str) -> bytes:
        with _measured("get"):
            return self.inner.get_bytes(key)

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        with _measured("get_file"):
            return self.inner.get_file(key, path)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The stream as the inner store opens it; only opening it is timed."""
        with _measured("open_stream"):
            return self.inner.iter_chunks(key, chunk_size)

    def head(self, key: str) -> ObjectInfo | None:
        with _measured("head"):
            return self.inner.head(key)

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        with _measured("list"):
            return self.inner.list_keys(prefix, start_after=start_after, limit=limit)

    def delete(self, key: str) -> None:
        with _measured("delete"):
            self.inner.delete(key)
