"""A real local Ray cluster (two nodes of one CPU each) for this package's tests, and front doors that
use it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prunekit.v1 import model_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.server import SUBMISSION_SERVICE
from tests.service.server_process import ServerProcess, server_process

from ...api.jobflow import TERMINAL
from ..execution.finetune_flow import upload_inputs
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
    with local_ray(cpus=1, nodes=2) as address:
        yield address


def front_door(storage: str, address: str, log: Path | None = None) -> AbstractContextManager[ServerProcess]:
    """A ``prunekit-server --executor ray`` over ``storage``, its jobs on the cluster at ``address``."""
    env = {**DOOR_ENV, **RAY_ENV, "RAY_ADDRESS": address}
    return server_process(storage, extra_env=env, args=["--executor", "ray"], log=log)


def submission(door: ServerProcess) -> int:
    """The door's health status for job submission."""
    with grpc.insecure_channel(door.target) as channel:
        request = health_pb2.HealthCheckRequest(service=SUBMISSION_SERVICE)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status)


def ready(door: ServerProcess, timeout: float = 120) -> None:
    """Wait until the door reaches the cluster (its submission health turns SERVING)."""
    deadline = time.monotonic() + timeout
    while submission(door) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "the front door did not reach the Ray cluster"
        time.sleep(0.5)


@contextmanager
def finetune_door(
    address: str, tmp_path: Path
) -> Iterator[tuple[str, pb_grpc.OptimizerServiceStub, model_pb2.ModelRef, str]]:
    """A ready front door over a file store under ``tmp_path``: the storage URI, a stub, the uploaded
    digits model and the URI of its train split."""
    storage = f"file://{tmp_path / 'store'}"
    with front_door(storage, address, tmp_path / "door.log") as door:
        ready(door)
        with grpc.insecure_channel(door.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            model, train = upload_inputs(stub, tmp_path)
            yield storage, stub, model, train


def first_checkpoint(stub: pb_grpc.OptimizerServiceStub, job_id: str, timeout: float = 600) -> None:
    """Wait until the job's first checkpoint is in storage (watching again when a watch closes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for update in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=deadline - time.monotonic()):
            assert update.job.state not in TERMINAL, update.job.error
            if update.job.progress.finetune.checkpoint_step > 0:
                return
    raise AssertionError("no checkpoint was stored in time")
