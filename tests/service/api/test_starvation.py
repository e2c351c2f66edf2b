"""No starvation: 100 stalled streams on a real server process leave health and GetJob answering.

Fifty uploads send their metadata and then nothing; fifty watches follow a job that hangs. The server
holds as many of each as its caps allow and refuses the rest at once (TOO_MANY_STREAMS with RetryInfo);
unary calls and health keep answering within a second; held uploads are cut after the chunk timeout
with nothing left in the spool; held watches end cleanly after ``watch_max_s`` and the SDK's watch
re-opens its stream by itself.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prunekit import Client
from prunekit.v1 import job_pb2, model_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.config import Settings
from prunekit_server.jobs.execution.executor import FAULT_LABEL
from prunekit_server.server import check_stream_caps

from ..server_process import ServerProcess, server_process
from .conftest import status_error, upload
from .jobflow import create

UPLOADS_CAP, WATCHES_CAP = 16, 24
CHUNK_TIMEOUT_S, WATCH_MAX_S = 4, 10
STALLED = 50
SERVICE = "prunekit.v1.OptimizerService"


def _stalled_upload(release: threading.Event) -> Iterator[pb.UploadModelRequest]:
    meta = pb.UploadMetadata(filename="m.onnx", format=model_pb2.MODEL_FORMAT_ONNX, size_bytes=1 << 20)
    yield pb.UploadModelRequest(metadata=meta)
    release.wait()


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _threads(server: ServerProcess) -> int:
    return len(list(Path(f"/proc/{server.proc.pid}/task").iterdir()))


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("storage")
    env = {
        "PRUNEKIT_WORKERS": "1",
        "PRUNEKIT_WARM_WORKERS": "0",
        "PRUNEKIT_MAX_CONCURRENT_UPLOADS": str(UPLOADS_CAP),
        "PRUNEKIT_MAX_CONCURRENT_WATCHES": str(WATCHES_CAP),
        "PRUNEKIT_UPLOAD_CHUNK_TIMEOUT_S": str(CHUNK_TIMEOUT_S),
        "PRUNEKIT_WATCH_MAX_S": str(WATCH_MAX_S),
        "PRUNEKIT_SCRATCH_DIR": str(tmp_path_factory.mktemp("scratch")),
    }
    with server_process(f"file://{root}", extra_env=env) as running:
        yield running, root


def _open_stalls(
    stubs: list[pb_grpc.OptimizerServiceStub], job_id: str, release: threading.Event
) -> tuple[list[grpc.Future], list[Any]]:
    """50 stalled uploads and 50 watches; the refused ones checked; the held ones returned."""
    uploads = [stubs[i % 4].UploadModel.future(_stalled_upload(release)) for i in range(STALLED)]
    watches = [stubs[i % 4].WatchJob(pb.WatchJobRequest(job_id=job_id)) for i in range(STALLED)]
    _until(lambda: sum(f.done() for f in uploads) == STALLED - UPLOADS_CAP, 30, "refused uploads")
    _until(lambda: sum(w.done() for w in watches) == STALLED - WATCHES_CAP + 1, 30, "refused watches")
    for call in [c for c in [*uploads, *watches] if c.done()]:
        error = status_error(call.exception())
        assert (error.code.name, error.reason) == ("RESOURCE_EXHAUSTED", "TOO_MANY_STREAMS")
        assert error.retry_after_s == pytest.approx(2.0)
    return [f for f in uploads if not f.done()], [w for w in watches if not w.done()]


def _latencies(channel: grpc.Channel, stub: pb_grpc.OptimizerServiceStub, job_id: str) -> dict[str, str]:
    """Health (the server's and the service's) and GetJob, five times each, each within 1 s."""
    health = health_pb2_grpc.HealthStub(channel)
    calls: dict[str, Callable[[], Any]] = {
        "health": lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=1.0),
        "service health": lambda: health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1.0),
        "GetJob": lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=1.0),
    }
    seen: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(5):
        for name, call in calls.items():
            seen[name].append(_timed(call))
    return {
        k: f"median {statistics.median(v) * 1e3:.1f} ms, max {max(v) * 1e3:.1f} ms" for k, v in seen.items()
    }


def _refused_upload(stub: pb_grpc.OptimizerServiceStub, data: bytes) -> None:
    meta = pb.UploadMetadata(
        filename="m.onnx",
        format=model_pb2.MODEL_FORMAT_ONNX,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadModel(iter([pb.UploadModelRequest(metadata=meta)]), timeout=5)
    error = status_error(info.value)
    assert (error.code.name, error.reason, error.metadata) == (
        "RESOURCE_EXHAUSTED",
        "TOO_MANY_STREAMS",
        {"max_concurrent_uploads": str(UPLOADS_CAP)},
    )
    assert error.retry_after_s == pytest.approx(2.0)


def test_stalled_streams_starve_nothing(server: tuple[ServerProcess, Path], models: dict[str, Path]) -> None:
    running, root = server
    channels = [grpc.insecure_channel(running.target) for _ in range(4)]
    stubs = [pb_grpc.OptimizerServiceStub(c) for c in channels]
    release = threading.Event()
    try:
        job = create(stubs[0], upload(stubs[0], models["mlp.onnx"]), labels={FAULT_LABEL: "hang@ingest"})
        followed: list[job_pb2.Job] = []
        sdk = Client(running.target, backoff=0.1)
        follower = threading.Thread(target=lambda: followed.extend(sdk.watch_job(job.id)), daemon=True)
        follower.start()
        _until(lambda: bool(followed), 30, "the SDK's watch")

        uploads, watches = _open_stalls(stubs, job.id, release)
        print(_latencies(channels[1], stubs[2], job.id))
        _refused_upload(stubs[3], models["mlp.onnx"].read_bytes())
        held = _threads(running)

        for future in uploads:
            error = status_error(future.exception(timeout=60))
            assert (error.code.name, error.reason) == ("DEADLINE_EXCEEDED", "UPLOAD_STALLED")
            assert error.metadata == {"upload_chunk_timeout_s": str(CHUNK_TIMEOUT_S)}
        assert list(root.rglob("prunekit-upload-*")) == []
        upload(stubs[3], models["mlp.onnx"])
        # Each cut upload had a reader and a writer thread: more than the writers alone must go.
        _until(lambda: _threads(running) <= held - UPLOADS_CAP * 3 // 2, 30, "the upload readers to end")

        for call in watches:
            assert {r.job.id for r in call} == {job.id}
            assert call.code() == grpc.StatusCode.OK
        stubs[0].CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=10)
        follower.join(timeout=60)
        assert not follower.is_alive()
        assert followed[-1].state == job_pb2.JOB_STATE_CANCELLED
        assert len({j.SerializeToString(deterministic=True) for j in followed}) == len(followed)
    finally:
        release.set()
        for channel in channels:
            channel.close()


def test_stream_caps_must_leave_threads_for_unary_calls() -> None:
    check_stream_caps(Settings())
    with pytest.raises(ValueError, match="below rpc_threads"):
        check_stream_caps(Settings(rpc_threads=48))
    with pytest.raises(ValueError, match=">= 1"):
        check_stream_caps(Settings(max_concurrent_watches=0))
    with pytest.raises(ValueError, match="> 0"):
        check_stream_caps(Settings(upload_chunk_timeout_s=0))
