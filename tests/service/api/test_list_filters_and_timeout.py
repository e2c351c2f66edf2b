"""ListJobs filters (states, labels) and a job's own timeout, on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2, model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.rpc_status import from_status
from prunekit_server.server import RunningServer

from .conftest import file_server, status_error, upload
from .jobflow import create, quick_spec, wait


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with file_server(tmp_path_factory, job_timeout_s=600.0) as running:
        yield running


@pytest.fixture(scope="module")
def model(stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]) -> model_pb2.ModelRef:
    return upload(stub, models["mlp.onnx"])


def _ids(stub: pb_grpc.OptimizerServiceStub, **filters: object) -> list[str]:
    ids, token = [], ""
    while True:
        reply = stub.ListJobs(pb.ListJobsRequest(page_size=1, page_token=token, **filters), timeout=30)  # type: ignore[arg-type]
        ids += [j.id for j in reply.jobs]
        token = reply.next_page_token
        if not token:
            return ids


def test_jobs_are_listed_by_state_and_label(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    done = create(stub, model, labels={"team": "a", "run": "ok"})
    assert wait(stub, done.id)[-1].state == job_pb2.JOB_STATE_SUCCEEDED
    stopped = []
    for team in ("b", "a"):
        job = create(stub, model, labels={"team": team})
        stub.CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=30)
        stopped.append(job.id)
    cancelled = [job_pb2.JOB_STATE_CANCELLED]
    assert _ids(stub, states=cancelled) == stopped[::-1]
    assert _ids(stub, labels={"team": "a"}) == [stopped[1], done.id]
    assert _ids(stub, labels={"team": "a"}, states=[job_pb2.JOB_STATE_SUCCEEDED]) == [done.id]
    assert _ids(stub, labels={"team": "a", "run": "ok"}) == [done.id]
    assert _ids(stub, labels={"team": "c"}) == []
    either = [job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_CANCELLED]
    assert _ids(stub, states=either) == [*stopped[::-1], done.id]
    with pytest.raises(grpc.RpcError) as bad:
        stub.ListJobs(pb.ListJobsRequest(states=[job_pb2.JOB_STATE_UNSPECIFIED]), timeout=30)
    error = status_error(bad.value)
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "INVALID_REQUEST")
    assert [v.field for v in error.violations] == ["states[0]"]


def test_a_job_past_its_own_timeout_fails_job_timeout(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    spec = quick_spec()
    spec.benchmark.CopyFrom(spec_pb2.BenchmarkSpec(warmup=1, iterations=100000, max_seconds=120))
    spec.timeout_seconds = 3.0
    job = wait(stub, create(stub, model, spec).id)[-1]
    assert job.state == job_pb2.JOB_STATE_FAILED
    error = from_status(job.error)
    assert (error.code.name, error.reason) == ("DEADLINE_EXCEEDED", "JOB_TIMEOUT")
    assert "timeout_seconds (3 s)" in error.message
    assert error.metadata["timeout_seconds"] == "3"


def test_a_timeout_beyond_the_servers_is_refused(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    spec = quick_spec()
    spec.timeout_seconds = 601.0
    with pytest.raises(grpc.RpcError) as refused:
        create(stub, model, spec)
    error = status_error(refused.value)
    assert error.reason == "INVALID_SPEC"
    assert [(v.field, v.description) for v in error.violations] == [
        ("spec.timeout_seconds", "at most 600 on this server (job_timeout_s)")
    ]
