"""Fencing: a worker runs only while its server still holds the job's lease.

The server writes a line to the worker's stdin after every successful lease
renewal (:class:`Heartbeat`): the renewal's time on ``CLOCK_MONOTONIC``, a clock
the server and its child worker share. The worker (:func:`watch_heartbeats`)
exits with :data:`EXIT_FENCED` once ``fence_s`` seconds have passed since the
newest renewal it was told of, or at once when stdin closes. With ``fence_s``
below the lease (two thirds of it), a worker whose server froze (SIGSTOP, a
stalled VM, a partition from storage) is gone before the lease expires and
another server may take the job over: two workers never run one job at the
same time.

The fence follows the renewals, not their arrival: a worker starved of CPU
(a busy node, a long import holding the interpreter) drains the heartbeats
that waited in the pipe before it judges, so it stops only when the lease is
really at risk, and a heartbeat that arrives late still carries its true age.
"""

from __future__ import annotations

import contextlib
import os
import select
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

    ``renewed_at()`` returns the ``time.monotonic()`` of the job's last
    successful renewal, or None when the job is not held. :meth:`pulse` is
    called often; it writes one line per new renewal: that time, in seconds.
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
            stdin.write(b"%.6f\n" % stamp)
            stdin.flush()


def watch_heartbeats(fence_s: float, fd: int = 0, log: IO[str] | None = None) -> None:
    """Worker side: exit with :data:`EXIT_FENCED` ``fence_s`` seconds after the newest renewal heard of.

    Starts one daemon thread that waits on file descriptor ``fd`` (default
    stdin) with ``select`` and reads it raw (a daemon thread blocked inside a
    buffered reader would abort the interpreter at exit). Until the first
    heartbeat the fence counts from this call; from then on from the renewals'
    own times (an old first renewal counts as old). EOF means the server closed the
    pipe or died: exit at once. ``fence_s`` <= 0 disables fencing.
    """
    if fence_s <= 0:
        return
    out = log if log is not None else sys.stderr
    tick = min(0.25, fence_s / 4)

    def stop(reason: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            out.write(f"prunekit worker: {reason}; stopping\n")
            out.flush()
        os._exit(EXIT_FENCED)

    def watch() -> None:
        newest: float | None = None  # the newest renewal heard of; until one, the fence counts from now
        started = time.monotonic()
        pending = b""
        while True:
            try:
                ready = select.select([fd], [], [], tick)[0]
                chunk = os.read(fd, 4096) if ready else None
            except OSError:
                chunk = b""
            if chunk == b"":
                stop("the server closed the heartbeat pipe")
            if chunk:
                *lines, pending = (pending + chunk).split(b"\n")
                stamps = _stamps(lines)
                if stamps:
                    newest = max(stamps) if newest is None else max(newest, *stamps)
                if select.select([fd], [], [], 0)[0]:
                    continue  # drain what waited before judging
            if time.monotonic() - (started if newest is None else newest) > fence_s:
                stop(f"no lease renewal from the server for {fence_s:.1f} s")

    threading.Thread(target=watch, name="fence-watchdog", daemon=True).start()


def _stamps(lines: list[bytes]) -> list[float]:
    stamps = []
    for line in lines:
        with contextlib.suppress(ValueError):
            stamps.append(float(line))
    return stamps
