"""Retries, deadlines and error parsing against a real gRPC server on a real port."""

from __future__ import annotations

import time

import grpc
import pytest

from prunekit import Client, PrunekitError
from prunekit._retry import RetryPolicy, is_retryable
from prunekit.v1 import job_pb2, model_pb2, spec_pb2

from .conftest import FakeService, make_status, unavailable

MODEL = model_pb2.ModelRef(uri="mem://m", sha256="ab" * 32, size_bytes=10, format=model_pb2.MODEL_FORMAT_ONNX)
SPEC = spec_pb2.OptimizationSpec(
    prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5)
)


def test_get_job_retries_unavailable_then_succeeds(service: FakeService, client: Client) -> None:
    service.jobs["job-9"] = job_pb2.Job(id="job-9", state=job_pb2.JOB_STATE_RUNNING)
    service.fail["GetJob"] = [unavailable(), unavailable()]
    job = client.get_job("job-9")
    assert job.id == "job-9"
    assert len(service.requests["GetJob"]) == 3


def test_every_call_has_a_deadline(service: FakeService, client: Client) -> None:
    service.jobs["job-9"] = job_pb2.Job(id="job-9")
    service.fail["GetJob"] = [unavailable()]
    client.get_job("job-9")
    client.get_job("job-9", timeout=2.0)
    client.list_jobs()
    created = client.create_job(MODEL, SPEC)
    list(client.watch_job(created.id))
    deadlines = [d for method in service.deadlines.values() for d in method]
    assert deadlines
    assert all(d is not None and d > 0 for d in deadlines)
    first, last = service.deadlines["GetJob"][0], service.deadlines["GetJob"][-1]
    assert first is not None
    assert first > 3.0
    assert last is not None
    assert last < 2.5


def test_create_job_retries_reuse_the_request_id(service: FakeService, client: Client) -> None:
    service.fail["CreateJob"] = [unavailable(), unavailable()]
    job = client.create_job(MODEL, SPEC)
    ids = [r.request_id for r in service.requests["CreateJob"]]
    assert len(ids) == 3
    assert len(set(ids)) == 1
    assert ids[0]
    assert job.request_id == ids[0]


def test_create_job_keeps_a_caller_request_id(service: FakeService, client: Client) -> None:
    service.fail["CreateJob"] = [unavailable()]
    client.create_job(MODEL, SPEC, request_id="req-42", labels={"team": "vision"})
    assert [r.request_id for r in service.requests["CreateJob"]] == ["req-42", "req-42"]
    assert dict(service.requests["CreateJob"][0].labels) == {"team": "vision"}


def test_invalid_argument_is_raised_once_with_details(service: FakeService, client: Client) -> None:
    violations = [("spec.prune.ratio", "must be in (0, 1)"), ("spec.inputs[0].shape", "must be > 0")]
    service.fail["CreateJob"] = [
        make_status(grpc.StatusCode.INVALID_ARGUMENT, "invalid spec", "INVALID_SPEC", violations)
    ]
    with pytest.raises(PrunekitError) as info:
        client.create_job(MODEL, SPEC)
    err = info.value
    assert len(service.requests["CreateJob"]) == 1
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.code_name == "INVALID_ARGUMENT"
    assert err.reason == "INVALID_SPEC"
    assert err.domain == "prunekit.dev"
    assert err.message == "invalid spec"
    assert err.violations == violations
    assert err.metadata == {"k": "v"}
    assert str(err) == "INVALID_ARGUMENT INVALID_SPEC: invalid spec"


def test_retries_are_bounded(service: FakeService, target: str) -> None:
    service.jobs["job-1"] = job_pb2.Job(id="job-1")
    service.fail["GetJob"] = [unavailable() for _ in range(10)]
    with Client(target, timeout=5.0, retries=2, backoff=0.01) as c, pytest.raises(PrunekitError) as info:
        c.get_job("job-1")
    assert info.value.code_name == "UNAVAILABLE"
    assert info.value.reason == "SERVER_SHUTTING_DOWN"
    assert len(service.requests["GetJob"]) == 3


def test_queue_full_is_retried_but_other_exhaustion_is_not(service: FakeService, client: Client) -> None:
    service.fail["CreateJob"] = [make_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", "QUEUE_FULL")]
    client.create_job(MODEL, SPEC)
    assert len(service.requests["CreateJob"]) == 2
    service.fail["AnalyzeModel"] = [
        make_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big", "MODEL_TOO_LARGE"),
    ]
    with pytest.raises(PrunekitError) as info:
        client.analyze(MODEL)
    assert info.value.reason == "MODEL_TOO_LARGE"
    assert len(service.requests["AnalyzeModel"]) == 1


def test_retry_info_delay_is_honoured_within_the_cap(service: FakeService, target: str) -> None:
    service.jobs["job-1"] = job_pb2.Job(id="job-1")
    service.fail["GetJob"] = [
        make_status(grpc.StatusCode.UNAVAILABLE, "busy", "STORAGE_UNAVAILABLE", retry_delay=0.3)
    ]
    with Client(target, timeout=5.0, backoff=0.01) as c:
        started = time.monotonic()
        c.get_job("job-1")
        assert time.monotonic() - started >= 0.3


def test_deadline_exceeded_is_not_retried(service: FakeService, target: str) -> None:
    service.jobs["job-1"] = job_pb2.Job(id="job-1")
    service.delay["GetJob"] = 0.5
    with Client(target, timeout=0.1, backoff=0.01) as c, pytest.raises(PrunekitError) as info:
        c.get_job("job-1")
    assert info.value.code_name == "DEADLINE_EXCEEDED"
    time.sleep(0.6)
    assert len(service.requests["GetJob"]) == 1


def test_plain_status_without_details(service: FakeService, client: Client) -> None:
    service.fail["GetJob"] = [(grpc.StatusCode.PERMISSION_DENIED, "go away")]
    with pytest.raises(PrunekitError) as info:
        client.get_job("x")
    assert info.value.code_name == "PERMISSION_DENIED"
    assert info.value.reason == ""
    assert info.value.violations == []
    assert info.value.message == "go away"


def test_connection_refused_is_unavailable_after_retries() -> None:
    with (
        Client("127.0.0.1:1", timeout=2.0, retries=1, backoff=0.01) as c,
        pytest.raises(PrunekitError) as info,
    ):
        c.get_job("x")
    assert info.value.code_name == "UNAVAILABLE"


def test_cancel_after_a_lost_response_returns_the_cancelled_job(service: FakeService, client: Client) -> None:
    job = client.create_job(MODEL, SPEC)
    service.lose_cancel_response = True
    cancelled = client.cancel_job(job.id)
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert len(service.requests["CancelJob"]) == 2
    with pytest.raises(PrunekitError) as info:
        client.cancel_job(job.id)
    assert info.value.code_name == "FAILED_PRECONDITION"
    assert info.value.reason == "JOB_ALREADY_FINISHED"


def test_retry_policy_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(retries=10, backoff=0.5, max_backoff=4.0)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (8, 4.0)]:
        for _ in range(20):
            assert cap / 2 <= policy.delay(retry) <= cap
    assert policy.delay(0, hint=3.0) == 3.0
    assert policy.delay(0, hint=60.0) == 4.0


def test_is_retryable() -> None:
    def err(code: grpc.StatusCode, reason: str = "") -> PrunekitError:
        return PrunekitError(code, "m", reason=reason)

    assert is_retryable(err(grpc.StatusCode.UNAVAILABLE))
    assert is_retryable(err(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL"))
    assert not is_retryable(err(grpc.StatusCode.RESOURCE_EXHAUSTED, "WORKER_OUT_OF_MEMORY"))
    assert not is_retryable(err(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert not is_retryable(err(grpc.StatusCode.INTERNAL, "INTERNAL_ERROR"))
