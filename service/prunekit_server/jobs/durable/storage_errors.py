"""Storage failures as service errors, for every store of this package."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ...errors import Code, ServiceError
from ...storage import ChecksumMismatch, InvalidKey, ObjectNotFound, PreconditionFailed, StorageError

T = TypeVar("T")
log = logging.getLogger(__name__)


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


def retrying(
    action: Callable[[], T],
    *,
    budget_s: float,
    stopped: Callable[[], bool] = lambda: False,
    first_wait_s: float = 0.5,
    max_wait_s: float = 8.0,
) -> T:
    """``action()``, tried again while it fails with STORAGE_UNAVAILABLE, for up to ``budget_s`` seconds.

    Waits double from ``first_wait_s`` to ``max_wait_s`` between tries. The last error is raised once the
    budget is spent or ``stopped()`` is true; any other error at once. For work that storage outages must
    not fail for good, such as staging a job's inputs.
    """
    deadline = time.monotonic() + budget_s
    wait = first_wait_s
    while True:
        try:
            return action()
        except ServiceError as exc:
            left = deadline - time.monotonic()
            if exc.reason != "STORAGE_UNAVAILABLE" or left <= 0 or stopped():
                raise
            log.warning("storage unavailable (%s); trying again in %.1f s", exc.message, min(wait, left))
            time.sleep(min(wait, left))
            wait = min(wait * 2, max_wait_s)
