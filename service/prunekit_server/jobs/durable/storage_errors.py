"""Storage failures as service errors, for every store of this package."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ...errors import Code, ServiceError
from ...storage import ChecksumMismatch, InvalidKey, ObjectNotFound, PreconditionFailed, StorageError


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


def guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, with storage failures while streaming turned into service errors."""
    with storage_errors():
        yield from chunks
