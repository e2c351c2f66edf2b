"""The server as a process: a second one on the same storage, and SIGTERM draining."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.jobs.execution.executor import FAULT_LABEL
from prunekit_server.rpc_status import from_status
from tests.samples import write_sample_model

from .api.conftest import new_bucket_uri, upload
from .api.jobflow import create, run, wait
from .server_process import server_process


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return new_bucket_uri(request.getfixturevalue("s3_endpoint"))
    return f"file://{tmp_path / 'store'}"


def test_second_server_sees_first_servers_jobs(storage: str, tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    write_sample_model(model_path, "onnx", "mlp")
    with server_process(storage) as first, grpc.insecure_channel(first.target) as ch1:
        stub1 = pb_grpc.OptimizerServiceStub(ch1)
        model = upload(stub1, model_path)
        done = run(stub1, model)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
        with server_process(storage) as second, grpc.insecure_channel(second.target) as ch2:
            stub2 = pb_grpc.OptimizerServiceStub(ch2)
            assert stub2.GetJob(pb.GetJobRequest(job_id=done.id), timeout=10).job == done
            assert done.id in {j.id for j in stub2.ListJobs(pb.ListJobsRequest(), timeout=10).jobs}
            pending = create(stub1, model, request_id=f"shared-{uuid.uuid4().hex}")
            watched = wait(stub2, pending.id)
            assert watched[-1].state == job_pb2.JOB_STATE_SUCCEEDED
            artifact = next(a for a in watched[-1].artifacts if a.name == "pruned.onnx")
            chunks = list(
                stub2.DownloadArtifact(pb.DownloadArtifactRequest(job_id=pending.id, name=artifact.name))
            )
            assert sum(len(c.chunk) for c in chunks[1:]) == artifact.size_bytes


def test_sigterm_drains_then_fails_unfinished_jobs(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    write_sample_model(model_path, "onnx", "mlp")
    env = {"PRUNEKIT_SHUTDOWN_GRACE_S": "6"}
    with server_process(f"file://{tmp_path / 'store'}", extra_env=env) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            model = upload(stub, model_path)
            job = create(stub, model, labels={FAULT_LABEL: "hang@prune"})
            for update in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=60):
                if update.job.progress.stage == "prune":
                    break
            assert server.health() == health_pb2.HealthCheckResponse.SERVING
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while server.health() == health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.health() == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as caught:
                create(stub, model)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.proc.wait(timeout=60) == 0
    with (
        server_process(f"file://{tmp_path / 'store'}") as again,
        grpc.insecure_channel(again.target) as channel,
    ):
        final = pb_grpc.OptimizerServiceStub(channel).GetJob(pb.GetJobRequest(job_id=job.id), timeout=10).job
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert from_status(final.error).reason == "SERVER_SHUTTING_DOWN"
    assert final.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
