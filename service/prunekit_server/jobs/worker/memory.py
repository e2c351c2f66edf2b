"""How much memory each worker gets: all the workers that may run at once must fit the pod or machine.

:func:`usable_memory` is the memory this process may use: the machine's RAM (``/proc/meminfo``), capped
by its cgroup's limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``). :func:`worker_memory` shares it,
less :data:`SERVER_RESERVE_BYTES` for the server and its zygote, among the workers that may run at once
(``workers`` jobs and as many analyses); never below :data:`MIN_WORKER_BYTES` (1.5 GiB), the address space a
worker needs to import its libraries and run a small model. Importing this module loads no model library.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .threads import CGROUP_ROOT, cgroup_dirs

SERVER_RESERVE_BYTES = 1 << 30
MIN_WORKER_BYTES = 3 << 29
FALLBACK_BYTES = 16 << 30
"""Assumed when neither the cgroup nor ``/proc/meminfo`` says (not Linux)."""
_UNLIMITED = 1 << 60

log = logging.getLogger(__name__)


def usable_memory(
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    meminfo: Path = Path("/proc/meminfo"),
) -> int:
    """Bytes of memory this process may use: RAM, capped by the tightest cgroup limit."""
    found = [_mem_total(meminfo) or FALLBACK_BYTES]
    for directory in cgroup_dirs(cgroup_root, proc_cgroup, "memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):
            limit = _limit(directory / name)
            if limit is not None:
                found.append(limit)
    return min(found)


def worker_memory(workers: int, usable: int | None = None) -> int:
    """Each worker's share when ``workers`` jobs and as many analyses run at once."""
    total = usable_memory() if usable is None else usable
    concurrent = 2 * max(1, workers)
    share = (total - SERVER_RESERVE_BYTES) // concurrent
    if share < MIN_WORKER_BYTES:
        log.warning(
            "%d MiB of memory is too little for %d workers at once: each gets %d MiB, together more than "
            "there is (lower PRUNEKIT_WORKERS or raise the memory limit)",
            total >> 20,
            concurrent,
            MIN_WORKER_BYTES >> 20,
        )
    return max(MIN_WORKER_BYTES, share)


def _mem_total(meminfo: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _limit(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if not raw.isdigit():
        return None
    value = int(raw)
    return value if 0 < value < _UNLIMITED else None


def worker_memory_limits(setting: int, workers: int) -> tuple[int, int]:
    """A worker's address-space limit (0: none) and memory budget from ``worker_memory_bytes``.

    ``setting`` > 0 is both; 0 is no limit with the derived budget; < 0 derives both (:func:`worker_memory`).
    """
    if setting > 0:
        return setting, setting
    budget = worker_memory(workers)
    return (0 if setting == 0 else budget), budget
