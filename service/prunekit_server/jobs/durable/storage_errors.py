"""Storage failures as service errors, for every store of this package, and the log of outages."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ...errors import Code, ServiceError, storage_full
from ...storage import (
    ChecksumMismatch,
    InvalidKey,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StorageFull,
    StorageUnavailable,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

UNAVAILABLE = "STORAGE_UNAVAILABLE"


class Outages:
    """One warning when object storage stops answering, one line when it answers again.

    Every failing call during an outage reports to :meth:`failed`, every successful write to
    :meth:`answered`; callers log nothing more for an outage themselves (at most a debug line), so
    an outage costs two lines in the server's log, not one per progress line or renewal.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """Whether the last storage call failed as unavailable."""
        return self._since is not None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._since is not None:
                return
            self._since = time.monotonic()
        log.warning("object storage unavailable: %s; waiting for it", error)

    def answered(self) -> None:
        if self._since is None:  # the usual case, without taking the lock
            return
        with self._lock:
            if self._since is None:
                return
            seconds, failures = time.monotonic() - self._since, self._failures
            self._since, self._failures = None, 0
        log.info("object storage answers again after %.1f s (%d calls failed)", seconds, failures)


OUTAGES = Outages()
"""This process's outage log (every store of a server shares the one object storage)."""


@contextlib.contextmanager
def storage_errors(*, writing: bool = False) -> Iterator[None]:
    """Turn storage failures into service errors, and report outages to :data:`OUTAGES`.

    Unreachable or failing storage is UNAVAILABLE (STORAGE_UNAVAILABLE); a store without space
    is RESOURCE_EXHAUSTED (STORAGE_FULL); corrupt data or a bad key is INTERNAL.
    ObjectNotFound and PreconditionFailed pass through for the caller to handle. Any call that
    fails as unavailable starts an outage; only a block that ``writing`` says writes ends it (a
    read-only store still answers reads).
    """
    try:
        yield
    except (ObjectNotFound, PreconditionFailed):
        if writing:
            OUTAGES.answered()
        raise
    except (ChecksumMismatch, InvalidKey) as exc:
        log.warning("object storage: %s", exc)
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"object storage: {_public(exc)}") from exc
    except StorageFull as exc:
        log.warning("object storage full: %s", exc)
        raise storage_full("store", _public(exc)) from exc
    except StorageError as exc:
        if isinstance(exc, StorageUnavailable):
            OUTAGES.failed(exc)
        else:
            log.warning("object storage failed: %s", exc)
        raise ServiceError(Code.UNAVAILABLE, UNAVAILABLE, f"object storage failed: {_public(exc)}") from exc
    if writing:
        OUTAGES.answered()


_PUBLIC = {
    ChecksumMismatch: "a stored object does not match its checksum",
    InvalidKey: "an object cannot be addressed",
    StorageFull: "no space left",
    StorageUnavailable: "it is unavailable or did not answer",
}


def _public(exc: StorageError) -> str:
    """What a client is told of a storage failure: its kind, never the message (that names the store's
    directory or bucket and the key; the server's log has it)."""
    kind = next((text for cls, text in _PUBLIC.items() if isinstance(exc, cls)), "a request failed")
    return f"{kind} (details in the server's log)"


def guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, with storage failures while streaming turned into service errors."""
    with storage_errors():
        yield from chunks


def is_unavailable(error: ServiceError) -> bool:
    """Whether ``error`` is an object-storage outage (waited out, and logged once by :data:`OUTAGES`)."""
    return error.reason == UNAVAILABLE


def retrying(
    action: Callable[[], T],
    *,
    budget_s: float,
    stopped: Callable[[], bool] = lambda: False,
    first_wait_s: float = 0.5,
    max_wait_s: float = 8.0,
) -> T:
    """``action()``, tried again while it fails with STORAGE_UNAVAILABLE, for up to ``budget_s`` seconds.

    Waits double from ``first_wait_s`` to ``max_wait_s`` between tries (cut short when ``stopped()``
    turns true). The last error is raised once the budget is spent or ``stopped()`` is true; any
    other error at once. For work that storage outages must not fail for good, such as staging a
    job's inputs. The outage itself is logged by :data:`OUTAGES`, not here.
    """
    deadline = time.monotonic() + budget_s
    wait = first_wait_s
    while True:
        try:
            return action()
        except ServiceError as exc:
            left = deadline - time.monotonic()
            if not is_unavailable(exc) or left <= 0 or stopped():
                raise
            log.debug("storage unavailable (%s); trying again in %.1f s", exc.message, min(wait, left))
            pause(min(wait, left), stopped)
            wait = min(wait * 2, max_wait_s)


def pause(seconds: float, stopped: Callable[[], bool]) -> bool:
    """Sleep ``seconds``, cut short when ``stopped()`` turns true; whether it slept them all."""
    until = time.monotonic() + seconds
    while not stopped():
        left = until - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.1))
    return False
