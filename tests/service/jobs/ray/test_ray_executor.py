"""The ``ray`` executor on a real local Ray cluster: front doors hand jobs to Ray and report them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent import futures
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.jobs.durable.tenants import Tenants
from prunekit_server.jobs.ray.bridge import DRIVER_MODULE
from prunekit_server.jobs.ray.executor import UNSUBMITTED
from prunekit_server.jobs.worker.faults import FAULT_LABEL
from prunekit_server.storage import open_store
from tests.samples import write_sample_model
from tests.service.server_process import ServerProcess, worker_pids

from ...api.conftest import status_error, upload
from ...api.jobflow import create, wait
from ..execution.finetune_flow import artifact_attempts, finetune_spec, single_manifest, upload_inputs
from .conftest import finetune_door, first_checkpoint, front_door, ready, submission
from .local_cluster import local_ray

# Real clusters, servers and workers on a busy 2-core machine: generous, not tight.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _stores(storage: str) -> Tenants:
    return Tenants(open_store(storage), owner="", lease_s=30)


# Ten jobs queue for the cluster's two CPUs, each paying a new actor and a cold worker: about two
# minutes on an idle 2-core machine, over ten when the machine is shared with other busy processes.
@pytest.mark.timeout(2400)
def test_two_front_doors_run_ten_jobs_each_exactly_once(ray_address: str, tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'store'}"
    write_sample_model(tmp_path / "mlp.onnx", "onnx", "mlp")
    with (
        front_door(storage, ray_address, tmp_path / "one.log") as one,
        front_door(storage, ray_address, tmp_path / "two.log") as two,
    ):
        ready(one)
        ready(two)
        with grpc.insecure_channel(one.target) as a, grpc.insecure_channel(two.target) as b:
            stubs = [pb_grpc.OptimizerServiceStub(a), pb_grpc.OptimizerServiceStub(b)]
            model = upload(stubs[0], tmp_path / "mlp.onnx")
            jobs = [create(stubs[i % 2], model) for i in range(10)]
            with futures.ThreadPoolExecutor(10) as pool:
                ended = list(pool.map(lambda i: wait(stubs[(i + 1) % 2], jobs[i].id, 1800)[-1], range(10)))
    stores = _stores(storage).stores("default")
    for job in ended:
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
        assert job.attempt == 1
        single_manifest(stores, job)
    assert len({job.id for job in ended}) == 10
    for log in ("one.log", "two.log"):  # running jobs are Ray's: no scan "takes them over" again
        assert "took over" not in (tmp_path / log).read_text()


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _actor_pid(job_id: str, timeout: float = 120) -> int:
    """The Ray worker process running the job's actor: its sandboxed worker's parent."""
    deadline = time.monotonic() + timeout
    while not (pids := worker_pids(job_id)):
        assert time.monotonic() < deadline, "the job's worker did not start"
        time.sleep(0.1)
    return _parent(pids[0])


def _drivers(parent: int) -> list[int]:
    """The Ray driver processes of the front door ``parent`` (their command line names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if DRIVER_MODULE.encode() in command and str(parent).encode() in command:
            found.append(int(entry.name))
    return found


def _gone(running: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while running():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_killed_ray_worker_resumes_from_its_checkpoint(ray_address: str, tmp_path: Path) -> None:
    with finetune_door(ray_address, tmp_path) as (storage, stub, model, train):
        # the first start's worker hangs once it announced its first checkpoint: no race with the kill
        hang = {FAULT_LABEL: "hang@checkpoint"}
        job = create(stub, model, finetune_spec(train, steps=200, every=20), labels=hang)
        first_checkpoint(stub, job.id)
        os.kill(_actor_pid(job.id), signal.SIGKILL)
        done = wait(stub, job.id, 600)[-1]
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    assert done.attempt == 2
    assert done.report.finetune.runs[-1].resumed_from_step >= 20
    assert artifact_attempts(done) == {"2"}
    single_manifest(_stores(storage).stores("default"), done)


def test_jobs_outlive_their_front_door_and_cancel_stops_the_ray_task(
    ray_address: str, tmp_path: Path
) -> None:
    storage = f"file://{tmp_path / 'store'}"
    with front_door(storage, ray_address, tmp_path / "other.log") as other:
        ready(other)
        with front_door(storage, ray_address, tmp_path / "first.log") as first:
            ready(first)
            with grpc.insecure_channel(first.target) as channel:
                stub = pb_grpc.OptimizerServiceStub(channel)
                model, train = upload_inputs(stub, tmp_path)
                finishing = create(stub, model, finetune_spec(train, steps=60, every=20))
                cancelled = create(stub, model, finetune_spec(train, steps=100000, every=50))
                _actor_pid(finishing.id)
                unsubmitted = create(stub, model, labels={FAULT_LABEL: UNSUBMITTED})
            first.proc.kill()
            first.proc.wait()
            _gone(lambda: bool(_drivers(first.proc.pid)), "the killed front door's Ray driver still runs")
        with grpc.insecure_channel(other.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            done = wait(stub, finishing.id, 600)[-1]
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
            assert done.attempt == 1
            recovered = wait(stub, unsubmitted.id, 600)[-1]
            assert recovered.state == job_pb2.JOB_STATE_SUCCEEDED, recovered.error
            assert recovered.attempt == 1
            actor = _actor_pid(cancelled.id)
            reply = stub.CancelJob(pb.CancelJobRequest(job_id=cancelled.id), timeout=30)
            assert reply.job.state == job_pb2.JOB_STATE_CANCELLED

            def running() -> bool:
                return bool(worker_pids(cancelled.id)) or Path(f"/proc/{actor}").exists()

            _gone(running, "the cancelled job's Ray actor still runs")
            assert stub.GetJob(pb.GetJobRequest(job_id=cancelled.id), timeout=10).job.state == (
                job_pb2.JOB_STATE_CANCELLED
            )


def _refuses_jobs(door: ServerProcess, storage: str, tmp_path: Path) -> None:
    """The door serves, but not job submission: CreateJob fails RAY_UNAVAILABLE and writes nothing."""
    write_sample_model(tmp_path / "mlp.onnx", "onnx", "mlp")
    assert door.health() == health_pb2.HealthCheckResponse.SERVING
    assert submission(door) == health_pb2.HealthCheckResponse.NOT_SERVING
    with grpc.insecure_channel(door.target) as channel:
        stub = pb_grpc.OptimizerServiceStub(channel)
        model = upload(stub, tmp_path / "mlp.onnx")
        with pytest.raises(grpc.RpcError) as caught:
            create(stub, model)
        error = status_error(caught.value)
        assert error.code.name == "UNAVAILABLE"
        assert error.reason == "RAY_UNAVAILABLE"
        assert error.retry_after_s is not None
        assert error.retry_after_s > 0
        assert "Ray cluster" in error.message
        assert list(stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs) == []
    tenants = _stores(storage)
    assert tenants.active_job_ids() == []
    assert [k for k in tenants.store.list_keys("") if "/jobs/" in k] == []


def test_an_unreachable_cluster_refuses_jobs_and_writes_nothing(tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'store'}"
    with front_door(storage, "127.0.0.1:9") as door:
        _refuses_jobs(door, storage, tmp_path)


def test_a_cluster_that_goes_away_turns_submission_not_serving(tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'store'}"
    with ExitStack() as cluster:
        address = cluster.enter_context(local_ray(cpus=1))
        with front_door(storage, address, tmp_path / "door.log") as door:
            ready(door)
            cluster.close()  # the head and every process of the cluster stop

            def submitting() -> bool:
                return submission(door) == health_pb2.HealthCheckResponse.SERVING

            _gone(submitting, "submission still SERVING without a cluster", timeout=120)
            _refuses_jobs(door, storage, tmp_path)
