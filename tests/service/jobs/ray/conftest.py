"""A real local Ray cluster (two CPUs) for this package's tests, and front doors that use it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.service.server_process import ServerProcess, server_process

from .local_cluster import RAY_ENV, local_ray

#: Short leases and scans: a job left unsubmitted is handed on within seconds.
DOOR_ENV = {
    "PRUNEKIT_LEASE_S": "4",
    "PRUNEKIT_SWEEP_INTERVAL_S": "1",
    "PRUNEKIT_HEALTH_PROBE_S": "1",
    "PRUNEKIT_PROGRESS_INTERVAL_S": "0.1",
    "PRUNEKIT_WATCH_POLL_S": "0.1",
    "PRUNEKIT_WORKER_MEMORY_BYTES": "0",
    "PRUNEKIT_WORKERS": "1",
}


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    with local_ray(cpus=2) as address:
        yield address


def front_door(storage: str, address: str, log: Path | None = None) -> AbstractContextManager[ServerProcess]:
    """A ``prunekit-server --executor ray`` over ``storage``, its jobs on the cluster at ``address``."""
    env = {**DOOR_ENV, **RAY_ENV, "RAY_ADDRESS": address}
    return server_process(storage, extra_env=env, args=["--executor", "ray"], log=log)
