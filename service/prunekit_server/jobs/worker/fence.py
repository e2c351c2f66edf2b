"""Fencing: a worker runs only while its server still holds the job's lease.

The server writes one byte to the worker's stdin after every successful lease
renewal (:class:`Heartbeat`); the worker (:func:`watch_heartbeats`) exits with
:data:`EXIT_FENCED` when no byte came for ``fence_s`` seconds, or at once when
stdin closes. With ``fence_s`` below the lease (two thirds of it), a worker
whose server froze (SIGSTOP, a stalled VM, a partition from storage) is gone
before the lease expires and another server may take the job over: two
workers never run one job at the same time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

EXIT_FENCED = 6
"""The worker stopped itself: its server stopped renewing the lease."""

FENCE_SHARE = 2.0 / 3.0
"""``fence_s`` as a share of the lease: renewals come every third of it."""


class Heartbeat:
    """Server side: forwards lease renewals to a worker's stdin.

    ``renewed_at()`` returns the time of the job's last successful renewal
    (any clock; only changes matter), or None when the job is not held.
    :meth:`pulse` is called often; it writes one byte per new renewal.
    """

    def __init__(self, renewed_at: Callable[[], float | None]) -> None:
        self._renewed_at = renewed_at
        self._sent: float | None = None

    def pulse(self, stdin: IO[bytes] | None) -> None:
        stamp = self._renewed_at()
        if stdin is None or stamp is None or stamp == self._sent:
            return
        self._sent = stamp
        with contextlib.suppress(OSError, ValueError):
            stdin.write(b".")
            stdin.flush()


def watch_heartbeats(fence_s: float, fd: int = 0, log: IO[str] | None = None) -> None:
    """Worker side: exit with :data:`EXIT_FENCED` when heartbeats stop for ``fence_s`` seconds.

    Starts two daemon threads (a reader of file descriptor ``fd``, default
    stdin, and a watchdog). EOF means the server closed the pipe or died: exit
    at once. ``fence_s`` <= 0 disables fencing. The reader uses ``os.read``
    on the raw descriptor: a daemon thread blocked inside a buffered reader
    would abort the interpreter at exit.
    """
    if fence_s <= 0:
        return
    out = log if log is not None else sys.stderr
    last = [time.monotonic()]

    def stop(reason: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            out.write(f"prunekit worker: {reason}; stopping\n")
            out.flush()
        os._exit(EXIT_FENCED)

    def read() -> None:
        while True:
            try:
                byte = os.read(fd, 64)
            except OSError:
                byte = b""
            if not byte:
                stop("the server closed the heartbeat pipe")
            last[0] = time.monotonic()

    def watch() -> None:
        while True:
            time.sleep(min(0.25, fence_s / 4))
            if time.monotonic() - last[0] > fence_s:
                stop(f"no lease renewal from the server for {fence_s:.1f} s")

    threading.Thread(target=read, name="fence-reader", daemon=True).start()
    threading.Thread(target=watch, name="fence-watchdog", daemon=True).start()
