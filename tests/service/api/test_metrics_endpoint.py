"""The Prometheus endpoint of a real server: real RPCs and a real job, scraped over HTTP and parsed with
prometheus_client's text parser."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.server import RunningServer

from .conftest import TEST_SETTINGS, file_server, start, upload
from .jobflow import run

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: RunningServer) -> Samples:
    """Every sample of ``/metrics``, keyed by name and sorted labels."""
    assert server.metrics is not None
    url = f"http://127.0.0.1:{server.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with file_server(tmp_path_factory, metrics_port=0, workers=1) as running:
        yield running


def test_rpcs_jobs_stages_storage_and_uploads_move_their_series(
    server: RunningServer, models: dict[str, Path]
) -> None:
    before = scrape(server)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.OptimizerServiceStub(channel)
        model = upload(stub, models["mlp.onnx"])
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetJob(pb.GetJobRequest(job_id="j-00000000000000000000000000000000"), timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        job = run(stub, model)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    ended = ("prunekit_jobs_ended_total", (("reason", ""), ("state", "SUCCEEDED")))
    deadline = time.monotonic() + 60  # the dispatcher counts the end just after the record says it
    after = scrape(server)
    while after.get(ended, 0.0) == before.get(ended, 0.0) and time.monotonic() < deadline:
        time.sleep(0.2)
        after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    upload_method = "OptimizerService/UploadModel"
    assert moved("prunekit_rpcs_total", method=upload_method, code="OK") == 1
    assert moved("prunekit_rpcs_total", method="OptimizerService/GetJob", code="NOT_FOUND") == 1
    assert moved("prunekit_rpcs_total", method="OptimizerService/CreateJob", code="OK") == 1
    assert moved("prunekit_rpcs_total", method="OptimizerService/WatchJob", code="OK") == 1
    histogram = "prunekit_rpc_duration_seconds_count"
    assert moved(histogram, method="OptimizerService/GetJob", code="NOT_FOUND") == 1
    assert moved("prunekit_rpc_duration_seconds_bucket", method=upload_method, code="OK", le="+Inf") == 1
    assert moved("prunekit_uploaded_bytes_total", kind="model") == models["mlp.onnx"].stat().st_size
    assert moved("prunekit_jobs_created_total") == 1
    assert moved("prunekit_jobs_ended_total", state="SUCCEEDED", reason="") == 1
    for stage in ("analyze", "prune", "benchmark"):
        assert moved("prunekit_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert moved("prunekit_storage_operation_duration_seconds_count", operation="put") > 0
    assert moved("prunekit_storage_operation_duration_seconds_count", operation="get") > 0
    assert value(after, "prunekit_jobs", state="running") == 0
    assert value(after, "prunekit_jobs", state="queued") == 0
    assert total(after, "process_resident_memory_bytes") > 0


def test_a_server_without_a_metrics_port_serves_none(tmp_path: Path) -> None:
    running = start(replace(TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}"))
    try:
        assert running.metrics is None
    finally:
        running.stop(grace=1.0)
