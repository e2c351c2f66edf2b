"""Peak memory a block of code adds to this process, without tracing allocations.

On Linux the kernel keeps the resident-set high-water mark (``VmHWM`` in
``/proc/self/status``); writing ``5`` to ``/proc/self/clear_refs`` resets it
to the current resident size. :class:`PeakMemory` first collects garbage and
asks glibc to hand its free heap pages back (``malloc_trim(0)``), so the
block's allocations fault in new pages instead of silently reusing freed
ones; then it resets the mark, reads ``VmRSS``, runs the block and reads
``VmHWM``: the difference is the most resident memory the block added at any
moment (native allocations of ONNX Runtime and torch included, which
``tracemalloc`` would not see). Memory that stayed resident but free in
allocator caches the trim cannot release can still hide part of a peak.

Where the reset is not allowed (or not Linux) the fallback compares
``getrusage(RUSAGE_SELF).ru_maxrss`` before and after: a lower bound, 0 when
the process had already peaked higher before the block. :attr:`PeakMemory.method`
says which one measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from pathlib import Path
from types import TracebackType

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")

VMHWM_METHOD = (
    "VmHWM growth: after gc and malloc_trim, /proc/self/clear_refs resets the resident high-water mark "
    "before the session is created; peak = VmHWM after creation and warm-up - VmRSS before (Linux)"
)
MAXRSS_METHOD = (
    "ru_maxrss growth around creation and warm-up: a lower bound, 0 when the worker had peaked higher before"
)


def _status_bytes(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                number, _, unit = value.strip().partition(" ")
                return int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    except (OSError, ValueError):
        return None
    return None


def release_free_memory(*, collect: bool = True) -> None:
    """Collect garbage (when ``collect``: it costs ~0.1 s with torch loaded) and ``malloc_trim(0)``."""
    if collect:
        gc.collect()
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _maxrss_bytes() -> int:
    value = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return value if sys.platform == "darwin" else value * 1024


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.bytes`` and ``peak.method``.

    ``collect=False`` skips the garbage collection (the trim still runs): for a
    series of blocks, collect once before the first.
    """

    def __init__(self, *, collect: bool = True) -> None:
        self._collect = collect
        self.bytes = 0
        self.method = ""
        self._before = 0

    def __enter__(self) -> PeakMemory:
        release_free_memory(collect=self._collect)
        rss = _status_bytes("VmRSS") if _reset_high_water_mark() else None
        if rss is not None:
            self.method = VMHWM_METHOD
            self._before = rss
        else:
            self.method = MAXRSS_METHOD
            self._before = _maxrss_bytes()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        after = _status_bytes("VmHWM") if self.method == VMHWM_METHOD else _maxrss_bytes()
        self.bytes = max(0, (after or 0) - self._before)
