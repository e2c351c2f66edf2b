"""A real, local Ray cluster for tests: a head node started by a holder process, stopped with it.

``python -m tests.service.jobs.ray.local_cluster CPUS TEMP_DIR`` starts a head node (``ray.init``),
prints its address, and stops it (every process of the node, detached actors included) when its stdin
closes. :func:`local_ray` runs it for a ``with`` block.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: What Ray's processes in tests are started with: no usage report, no token (a cluster of one machine).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@contextmanager
def local_ray(cpus: int = 2) -> Iterator[str]:
    """The address (``host:port``) of a local Ray head node with ``cpus`` CPUs, for the block's time."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    command = [sys.executable, "-m", "tests.service.jobs.ray.local_cluster", str(cpus), temp]
    env = {**os.environ, **RAY_ENV}
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _hold(cpus: int, temp: str) -> None:
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    print(ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.read()
    ray.shutdown()


if __name__ == "__main__":
    _hold(int(sys.argv[1]), sys.argv[2])
