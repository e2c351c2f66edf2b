"""Keeping long streams from taking every RPC thread: caps on streams held at once, and paced uploads.

Each upload, watch or download holds one thread of the server's pool for as long as it lasts. A
:class:`StreamCap` admits at most so many of one kind at once and refuses the next at once with
RESOURCE_EXHAUSTED ``TOO_MANY_STREAMS`` and a RetryInfo, so the unary calls always find a thread.
:class:`Paced` reads an upload's messages on a thread of its own so that a client that stops
sending is cut: DEADLINE_EXCEEDED ``UPLOAD_STALLED`` when no message came within the chunk timeout or
the stream outlived its own; whatever was spooled is removed as the error unwinds.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from ..errors import Code, ServiceError

T = TypeVar("T")

RETRY_AFTER_S = 2.0
"""What a refused stream is told to wait before it tries again."""
_PUT_POLL_S = 0.5


class StreamCap:
    """At most ``limit`` streams of one kind at once (``setting`` names the cap in errors)."""

    def __init__(self, kind: str, setting: str, limit: int) -> None:
        self.kind = kind
        self.setting = setting
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A place for one stream while the block runs; TOO_MANY_STREAMS when there is none."""
        with self._lock:
            if self._held >= self.limit:
                raise ServiceError(
                    Code.RESOURCE_EXHAUSTED,
                    "TOO_MANY_STREAMS",
                    f"this server already serves {self.limit} {self.kind} at once (its limit); retry shortly",
                    metadata={self.setting: str(self.limit)},
                    retry_after_s=RETRY_AFTER_S,
                )
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1


def _stalled(message: str, setting: str, seconds: float) -> ServiceError:
    return ServiceError(
        Code.DEADLINE_EXCEEDED,
        "UPLOAD_STALLED",
        f"{message}; nothing was stored",
        metadata={setting: f"{seconds:g}"},
    )


class Paced(Generic[T]):
    """The messages of ``source``, each within ``message_timeout_s``, all within ``stream_timeout_s``.

    Use as a context manager: leaving it lets the reader thread go (it ends when the call does).
    """

    def __init__(self, source: Iterator[T], message_timeout_s: float, stream_timeout_s: float) -> None:
        self._source = source
        self._message_timeout = message_timeout_s
        self._stream_timeout = stream_timeout_s
        self._deadline = time.monotonic() + stream_timeout_s
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=4)
        self._closed = threading.Event()
        self._done = False
        threading.Thread(target=self._pump, name="upload-reader", daemon=True).start()

    def __enter__(self) -> Paced[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()

    def __iter__(self) -> Paced[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        left = self._deadline - time.monotonic()
        try:
            kind, value = self._queue.get(timeout=max(0.0, min(self._message_timeout, left)))
        except queue.Empty:
            self._done = True
            if left <= self._message_timeout:
                raise _stalled(
                    f"the upload ran past {self._stream_timeout:g} s",
                    "upload_timeout_s",
                    self._stream_timeout,
                ) from None
            raise _stalled(
                f"the upload sent nothing for {self._message_timeout:g} s",
                "upload_chunk_timeout_s",
                self._message_timeout,
            ) from None
        if kind == "error":
            self._done = True
            assert isinstance(value, BaseException)
            raise value
        if kind == "end":
            self._done = True
            raise StopIteration
        return value  # type: ignore[return-value]

    def _pump(self) -> None:
        try:
            for item in self._source:
                if not self._offer("item", item):
                    return
        except BaseException as exc:  # the call ended (client gone, cancelled): the reader says so
            self._offer("error", exc)
            return
        self._offer("end", None)

    def _offer(self, kind: str, value: object) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put((kind, value), timeout=_PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False
