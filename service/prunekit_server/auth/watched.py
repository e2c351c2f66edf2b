"""A file re-read when it changes (size, mtime or inode), for credentials rotated in place."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in paths:
        info = os.stat(path)
        stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


class Watched(Generic[T]):
    """``parse(paths)`` of some files, parsed again when one of them changed since the last parse.

    A change that does not parse (a rotation caught half-way) keeps the last good value and is tried
    again on the next :meth:`get`; the first parse raises.
    """

    def __init__(self, paths: tuple[Path, ...], parse: Callable[[tuple[Path, ...]], T]) -> None:
        self._paths = paths
        self._parse = parse
        self._lock = threading.Lock()
        self._stamp = _stamp(paths)
        self._value = parse(paths)

    def get(self) -> T:
        """The current value, re-parsed first when a file changed."""
        return self.refresh()[0]

    def refresh(self) -> tuple[T, bool]:
        """The current value and whether it was just re-parsed."""
        with self._lock:
            try:
                stamp = _stamp(self._paths)
                if stamp == self._stamp:
                    return self._value, False
                value = self._parse(self._paths)
            except (OSError, ValueError):
                return self._value, False
            self._stamp, self._value = stamp, value
            return value, True
