"""S3 failures beyond what the retry budget covers, and PUTs that fail a few times: each job ends
SUCCEEDED, or FAILED with UNAVAILABLE STORAGE_UNAVAILABLE, and a failed one leaves nothing stored.

The server's retry budget is a third of an outage, its lease outlasts every outage (so it keeps its
jobs and can record their failure once storage answers again).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit_server.rpc_status import from_status

from ..service.api.conftest import upload
from ..service.api.jobflow import create
from .conftest import assert_job_gone_from, assert_nothing_stored, assert_published_once, stores_of
from .harness import OUTAGE_S, Faulty, Prober, faulty_server, poll_job
from .s3_proxy import S3Proxy
from .test_s3_outages import ARTIFACT_PUT, MODEL_GET

BUDGET_S = OUTAGE_S / 3


@pytest.fixture(scope="module")
def server(proxy: S3Proxy, storage: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    env = {
        "AWS_ENDPOINT_URL": proxy.url,
        "PRUNEKIT_STORAGE_RETRY_S": str(BUDGET_S),
        "PRUNEKIT_LEASE_S": str(3 * OUTAGE_S + 30),
    }
    with faulty_server(storage, tmp_path_factory.mktemp("s3-failures"), env) as running:
        yield running


def _failed_for_storage(job: job_pb2.Job) -> str:
    assert job.state == job_pb2.JOB_STATE_FAILED
    error = from_status(job.error)
    assert job.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert error.reason == "STORAGE_UNAVAILABLE"
    return error.message


def test_an_outage_longer_than_the_budget_fails_the_job_for_storage(
    server: Faulty, proxy: S3Proxy, storage: str, fault_models: dict[str, Path]
) -> None:
    model = upload(server.stub, fault_models["mlp.onnx"])
    proxy.down_on(MODEL_GET, OUTAGE_S)
    job = create(server.stub, model)
    with Prober(server.process.target, job.id) as probe:
        done = poll_job(server.stub, job.id)
    message = _failed_for_storage(done)
    assert f"unavailable for over {BUDGET_S:g} s while staging the job's inputs" in message
    assert proxy.wait_outage_over(30).trigger.startswith("GET ")
    assert_nothing_stored(stores_of(storage), job.id)
    assert_job_gone_from(server, job.id)
    print(probe.check())


def test_puts_failing_a_few_times_are_retried(
    server: Faulty, proxy: S3Proxy, storage: str, fault_models: dict[str, Path]
) -> None:
    """Three 503s while the job is created (two inside botocore's own two tries, one answered
    UNAVAILABLE to the client, which retries with the same request id), then three 500s on artifact
    writes (left to the server's retry): one job, SUCCEEDED, published once."""
    model = upload(server.stub, fault_models["mlp.onnx"])
    proxy.fail_requests("^PUT ", count=3, status=503)
    request_id, refusals = uuid.uuid4().hex, []
    while True:
        try:
            job = create(server.stub, model, request_id=request_id)
            break
        except grpc.RpcError as exc:
            refusals.append(exc.code())
            if exc.code() != grpc.StatusCode.UNAVAILABLE or len(refusals) >= 5:
                raise
    proxy.fail_requests(ARTIFACT_PUT, count=3, status=500)
    done = poll_job(server.stub, job.id)
    assert proxy.failed == 6
    assert refusals, "the client never saw UNAVAILABLE"
    assert_published_once(stores_of(storage), done)
    assert (done.attempt, done.charged_attempts) == (1, 1)
    assert [j.id for j in server.stub.ListJobs(pb.ListJobsRequest(), timeout=30).jobs].count(job.id) == 1


def test_puts_failing_for_good_fail_the_job_and_leave_no_file(
    server: Faulty, proxy: S3Proxy, storage: str, fault_models: dict[str, Path]
) -> None:
    """Artifact writes fail with 503 until the end (job records still write): the job fails once the
    budget is spent, and the artifacts that did land are removed."""
    model = upload(server.stub, fault_models["mlp.onnx"])
    proxy.fail_requests(ARTIFACT_PUT + r"report\.md", count=None, status=503)
    try:
        done = poll_job(server.stub, create(server.stub, model).id)
    finally:
        proxy.heal()
    assert "while publishing the job's results" in _failed_for_storage(done)
    assert_nothing_stored(stores_of(storage), done.id)
    assert_job_gone_from(server, done.id)
