"""A server's workers are forked by its zygote (warm workers), or started fresh with warm_workers off."""

from __future__ import annotations

import os
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
from .conftest import file_server, upload
from .jobflow import create, run, wait


@pytest.fixture(scope="module", params=[True, False], ids=["warm", "fresh"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with file_server(tmp_path_factory, warm_workers=request.param) as running:
        yield running


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(pid)


def _zygote(server: RunningServer) -> int | None:
    warm = server.executor.warm_workers
    return None if warm is None else warm.pid


def test_a_job_and_an_analysis_run(
    server: RunningServer, stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    analysis = stub.AnalyzeModel(pb.AnalyzeModelRequest(model=model), timeout=120).analysis
    assert analysis.parameters > 0
    assert run(stub, model).state == job_pb2.JOB_STATE_SUCCEEDED
    assert (_zygote(server) is not None) == server.settings.warm_workers


def test_the_worker_is_the_zygotes_child_and_cancel_kills_it(
    server: RunningServer, stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    job = create(stub, model, labels={FAULT_LABEL: "hang@prune"})
    for update in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=120):
        if update.job.progress.stage == "prune":
            break
    (worker,) = worker_pids(job.id)
    assert _parent(worker) == (_zygote(server) or os.getpid())
    assert os.getsid(worker) == worker
    stub.CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=10)
    final = wait(stub, job.id)[-1]
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert from_status(final.error).reason == "JOB_CANCELLED"
    deadline = time.monotonic() + 15
    while worker_pids(job.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker_pids(job.id), "the cancelled job's worker is still alive"


def test_a_killed_zygote_is_replaced(
    server: RunningServer, stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    zygote = _zygote(server)
    if zygote is None:
        pytest.skip("fresh workers")
    os.kill(zygote, 9)
    model = upload(stub, models["mlp.onnx"])
    try:
        assert run(stub, model).state == job_pb2.JOB_STATE_SUCCEEDED
    except grpc.RpcError as exc:  # pragma: no cover - diagnostic
        raise AssertionError(exc) from exc
    assert _zygote(server) not in (None, zygote)
