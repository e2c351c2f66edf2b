"""Workers that crash, hang, or are cancelled fail their job with a reason; the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.jobs.execution.executor import FAULT_LABEL
from prunekit_server.rpc_status import from_status
from prunekit_server.server import RunningServer

from ..server_process import worker_pids
from .conftest import assert_serving, file_server, status_error, upload
from .jobflow import create, run, wait

# Long enough for a job to start and reach its fault on a machine shared with busy processes (30 s
# was not, at load 15); the hanging worker waits it out.
JOB_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One worker, a queue of one, 4 GiB of address space, a short time limit."""
    with file_server(
        tmp_path_factory,
        workers=1,
        max_queued_jobs=1,
        job_timeout_s=JOB_TIMEOUT_S,
        worker_memory_bytes=4 << 30,
    ) as running:
        yield running


def fault(action: str, stage: str = "prune") -> dict[str, str]:
    return {FAULT_LABEL: f"{action}@{stage}"}


def test_segfaulting_worker_fails_the_job(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    final = run(stub, model, labels=fault("segfault"))
    assert final.state == job_pb2.JOB_STATE_FAILED
    error = from_status(final.error)
    assert final.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert error.reason == "WORKER_CRASHED"
    assert error.metadata["signal"] == "SIGSEGV"
    assert error.metadata["stage"] == "prune"
    assert_serving(channel)
    assert run(stub, model).state == job_pb2.JOB_STATE_SUCCEEDED


def test_worker_exiting_and_running_out_of_memory(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    exited = run(stub, model, labels=fault("exit", "analyze"))
    assert from_status(exited.error).reason == "WORKER_CRASHED"
    assert from_status(exited.error).metadata["exit_code"] == "17"
    starved = run(stub, model, labels=fault("memory"))
    assert starved.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert from_status(starved.error).reason == "WORKER_OUT_OF_MEMORY"


def test_hanging_worker_times_out(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    started = time.monotonic()
    final = run(stub, model, labels=fault("hang"))
    assert time.monotonic() - started < JOB_TIMEOUT_S + 30
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert final.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert from_status(final.error).reason == "WORKER_TIMEOUT"
    assert_serving(channel)


def test_cancel_stops_the_worker_and_queue_bound_holds(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    running = create(stub, model, labels=fault("hang"))
    queued = create(stub, model, labels=fault("hang"))
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_error(caught.value).reason == "QUEUE_FULL"
    assert status_error(caught.value).retry_after_s == 5.0

    for update in stub.WatchJob(pb.WatchJobRequest(job_id=running.id), timeout=60):
        if update.job.progress.stage == "prune":
            break
    assert worker_pids(running.id), "no worker runs the job"
    cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=running.id), timeout=10).job
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert (
        stub.CancelJob(pb.CancelJobRequest(job_id=queued.id), timeout=10).job.state
        == job_pb2.JOB_STATE_CANCELLED
    )
    assert wait(stub, running.id)[-1].state == job_pb2.JOB_STATE_CANCELLED
    deadline = time.monotonic() + 15
    while worker_pids(running.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker_pids(running.id), "the cancelled job's worker is still alive"
    assert from_status(wait(stub, running.id)[-1].error).reason == "JOB_CANCELLED"
    assert_serving(channel)
