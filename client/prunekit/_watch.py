"""Watching a job: the re-subscribing loop behind :meth:`prunekit.Client.watch_job`."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from prunekit._errors import PrunekitError
from prunekit._retry import RetryPolicy, is_retryable
from prunekit.v1 import job_pb2, optimizer_service_pb2_grpc
from prunekit.v1 import optimizer_service_pb2 as pb

__all__ = ["TERMINAL_STATES", "is_terminal", "watch"]

TERMINAL_STATES = frozenset(
    {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
)


def is_terminal(state: job_pb2.JobState.ValueType) -> bool:
    """Whether a job in ``state`` has ended (``SUCCEEDED``, ``FAILED`` or ``CANCELLED``)."""
    return state in TERMINAL_STATES


def watch(
    stub: optimizer_service_pb2_grpc.OptimizerServiceStub,
    job_id: str,
    deadline: float | None,
    retry: RetryPolicy,
) -> Iterator[job_pb2.Job]:
    """The job now and at every change until it ends, re-subscribing as ``Client.watch_job`` says."""
    request = pb.WatchJobRequest(job_id=job_id)
    last: job_pb2.Job | None = None
    failures = 0
    while True:
        delivered = False
        failure: PrunekitError | None = None
        call = stub.WatchJob(request, timeout=deadline)
        try:
            for response in call:
                delivered = True
                job: job_pb2.Job = response.job
                if job != last:
                    last = job
                    yield job
                if is_terminal(job.state):
                    return
        except grpc.RpcError as exc:
            failure = PrunekitError.from_rpc_error(exc)
            resumable = is_retryable(failure) or failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
            if not resumable:
                raise failure from exc
        finally:
            call.cancel()
        if delivered:
            failures = 0
            if failure is None or failure.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                retry.sleep(retry.delay(0))
            continue
        if failure is None:
            failure = PrunekitError(
                grpc.StatusCode.UNAVAILABLE, f"watch of job {job_id} ended before sending the job"
            )
        if failures >= retry.retries:
            raise failure
        retry.pause(failures, failure)
        failures += 1
