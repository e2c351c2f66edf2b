"""Bounded retries with exponential backoff and jitter, for calls that are safe to repeat."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from prunekit._errors import PrunekitError

__all__ = ["RetryPolicy", "is_retryable"]

T = TypeVar("T")

RETRYABLE_EXHAUSTED_REASONS = frozenset({"QUEUE_FULL", "TOO_MANY_STREAMS"})


def is_retryable(err: PrunekitError) -> bool:
    """Whether repeating the same idempotent call may succeed.

    ``UNAVAILABLE`` always is (a restarting or shutting-down replica, a dropped connection, storage briefly
    away). ``RESOURCE_EXHAUSTED`` is only when the reason is ``QUEUE_FULL`` or ``TOO_MANY_STREAMS``, which
    the API documents as "retry later"; other exhaustion (``MODEL_TOO_LARGE``, ``WORKER_OUT_OF_MEMORY``)
    would fail the same way again. ``DEADLINE_EXCEEDED`` is not retried: the deadline is the caller's
    budget, spent.
    """
    if err.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason in RETRYABLE_EXHAUSTED_REASONS


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``retries`` repeats after the first attempt.

    The n-th repeat (n from 0) waits a random time in ``[cap / 2, cap]`` with
    ``cap = min(max_backoff, backoff * 2 ** n)``, or the server's ``RetryInfo`` delay when that is longer
    (never more than ``max_backoff``).
    """

    retries: int = 4
    backoff: float = 0.25
    max_backoff: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def delay(self, retry: int, hint: float | None = None) -> float:
        """Seconds to wait before repeat number ``retry`` (0-based)."""
        cap = min(self.max_backoff, self.backoff * 2.0**retry)
        wait = random.uniform(cap / 2.0, cap)
        if hint is not None and hint > wait:
            wait = min(hint, self.max_backoff)
        return wait

    def pause(self, retry: int, err: PrunekitError) -> None:
        """Sleeps before repeat number ``retry`` after ``err``."""
        self.sleep(self.delay(retry, err.retry_delay))

    def call(self, attempt: Callable[[int], T]) -> T:
        """Runs ``attempt(n)`` (n = 0, 1, ...) until it returns, repeating it while it fails retryably.

        ``attempt`` may raise ``grpc.RpcError`` (converted with :meth:`PrunekitError.from_rpc_error`) or
        :class:`PrunekitError`. The last error is raised once retries are spent or at the first error that is
        not retryable.
        """
        retry = 0
        while True:
            try:
                return attempt(retry)
            except grpc.RpcError as exc:
                err = PrunekitError.from_rpc_error(exc)
                if retry >= self.retries or not is_retryable(err):
                    raise err from exc
            except PrunekitError as err_:
                err = err_
                if retry >= self.retries or not is_retryable(err):
                    raise
            self.pause(retry, err)
            retry += 1
