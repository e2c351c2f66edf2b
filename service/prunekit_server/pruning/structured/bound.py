"""A wall-clock bound on Torch-Pruning's group search and the probes.

Some structures make the dependency search explode (its recursion over chains of
reshapes and concats); a worker must not sit in it for the job's whole timeout.
:func:`time_bound` interrupts the work with SIGALRM when the bound passes and
turns it into FAILED_PRECONDITION / UNSUPPORTED_MODEL saying what took too long.
The interruption is a ``BaseException`` so that the probes' own ``except
Exception`` cannot swallow it. Outside the main thread (no signals there) the work
runs unbounded.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ...errors import unsupported_model

__all__ = ["GROUP_SEARCH_SECONDS", "time_bound"]

GROUP_SEARCH_SECONDS = 300.0
"""How long finding and probing a model's dependency groups may take."""


class _Expired(BaseException):
    pass


def _expire(signum: int, frame: FrameType | None) -> None:
    raise _Expired


@contextmanager
def time_bound(seconds: float, what: str) -> Iterator[None]:
    """Run the body for at most ``seconds``; past that, UNSUPPORTED_MODEL naming ``what``.

    An interval timer already running (an outer bound that fires sooner) is left to fire; a later one
    is re-armed afterwards with the time it has left, under its own handler.
    """
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or 0 < outer_left <= seconds:
        yield
        return
    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise unsupported_model(
            f"{what} took longer than {seconds:g} s: the model's structure makes the dependency search "
            "explode; ignore the layers involved (prune.ignore) or choose another method",
            stage=what,
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 0.001))
