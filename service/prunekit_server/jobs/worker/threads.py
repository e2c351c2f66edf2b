"""How many threads a worker runs: as many as the CPUs it may actually use, and none spinning.

A worker that starts more compute threads than it has CPUs, or whose idle
threads spin (GNU OpenMP's default), collapses under contention: every
parallel region waits for a descheduled thread. :func:`usable_cpus` counts
the CPUs this process may run on (its affinity mask) and caps them by the
cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); the sandbox
puts :func:`thread_env` into the worker's environment (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OMP_WAIT_POLICY=PASSIVE``, unless the operator set
them), and the worker calls :func:`configure_torch` before any model work.
Importing this module loads no model library.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")

#: Variables :func:`thread_env` fills in when the operator did not set them.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroup and the root one; None when unlimited."""
    found: list[float] = []
    for directory in cgroup_dirs(cgroup_root, proc_cgroup, "cpu", "cpu,cpuacct"):
        quota = _v2_quota(directory / "cpu.max")
        if quota is None:
            quota = _v1_quota(directory)
        if quota is not None:
            found.append(quota)
    return min(found) if found else None


def cgroup_dirs(root: Path, proc_cgroup: Path, *v1_mounts: str) -> list[Path]:
    """The cgroup directories of this process (v2, and v1 under ``v1_mounts``), root ones first."""
    dirs = [root, *(root / mount for mount in v1_mounts)]
    controller = v1_mounts[0] if v1_mounts else ""
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            relative = path.strip().lstrip("/")
            if not relative:
                continue
            if hierarchy == "0" and not controllers:
                dirs.append(root / relative)
            elif controller in controllers.split(","):
                dirs += [root / mount / relative for mount in v1_mounts]
    return dirs


def _v2_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def thread_env(environ: Mapping[str, str], cpus: int | None = None) -> dict[str, str]:
    """The thread variables a worker gets: the operator's where set, else ``cpus`` threads, passive waits."""
    n = usable_cpus() if cpus is None else max(1, cpus)
    defaults = {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n), "OMP_WAIT_POLICY": "PASSIVE"}
    return {name: environ.get(name) or default for name, default in defaults.items()}


def worker_threads(environ: Mapping[str, str] | None = None) -> int:
    """A worker's intra-op threads: ``OMP_NUM_THREADS`` when a positive integer, else :func:`usable_cpus`."""
    raw = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    with contextlib.suppress(ValueError):
        if int(raw) > 0:
            return int(raw)
    return usable_cpus()


def configure_torch(threads: int) -> None:
    """``threads`` intra-op threads and one inter-op thread for torch (imports torch).

    Call before any tensor work: the inter-op pool can only be sized before it starts.
    """
    import torch

    torch.set_num_threads(max(1, threads))
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
