"""A daemon thread that runs one loop until it is stopped: the lease keeper's and the sweeper's shape."""

from __future__ import annotations

import threading


class BackgroundLoop:
    """Runs :meth:`_loop` on a daemon thread from :meth:`start` until :meth:`stop`.

    Subclasses implement ``_loop`` and leave it soon after ``self._stopping`` is set.
    """

    def __init__(self, name: str) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and wait for it (at most 10 s)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        raise NotImplementedError
