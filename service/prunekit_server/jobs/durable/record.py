"""The job record and its state machine.

A job is the ``prunekit.v1.Job`` message itself; this module owns the legal
transitions and the bookkeeping (times, error) that goes with them.

    PENDING -> RUNNING -> SUCCEEDED
       |          |  \\-> FAILED
       \\----------+----> CANCELLED / FAILED
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

from google.protobuf import timestamp_pb2

from prunekit.v1 import job_pb2, model_pb2, spec_pb2

from ...errors import Code, ServiceError
from ...rpc_status import to_status

PENDING = job_pb2.JOB_STATE_PENDING
RUNNING = job_pb2.JOB_STATE_RUNNING
SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
FAILED = job_pb2.JOB_STATE_FAILED
CANCELLED = job_pb2.JOB_STATE_CANCELLED

TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
_ALLOWED: dict[int, frozenset[int]] = {
    PENDING: frozenset({RUNNING, FAILED, CANCELLED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED}),
}
JOB_ID_PREFIX = "job-"
_ID_HEX = 20


def is_terminal(state: int) -> bool:
    """True for SUCCEEDED, FAILED and CANCELLED."""
    return state in TERMINAL_STATES


def new_job_id() -> str:
    """A random, unguessable job id (``job-`` and 20 hex digits)."""
    return JOB_ID_PREFIX + secrets.token_hex(_ID_HEX // 2)


def is_valid_job_id(job_id: str) -> bool:
    """Whether ``job_id`` has the shape :func:`new_job_id` gives."""
    digits = job_id[len(JOB_ID_PREFIX) :]
    return (
        job_id.startswith(JOB_ID_PREFIX)
        and len(digits) == _ID_HEX
        and all(c in "0123456789abcdef" for c in digits)
    )


def state_name(state: int) -> str:
    """``SUCCEEDED`` for JOB_STATE_SUCCEEDED, and so on."""
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")  # type: ignore[arg-type]


def now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def new_job(
    job_id: str,
    model: model_pb2.ModelRef,
    spec: spec_pb2.OptimizationSpec,
    request_id: str,
    labels: Mapping[str, str],
) -> job_pb2.Job:
    """A PENDING job created now."""
    job = job_pb2.Job(id=job_id, state=PENDING, model=model, spec=spec, request_id=request_id, labels=labels)
    job.create_time.CopyFrom(now())
    job.progress.stage = "queued"
    return job


def request_fingerprint(
    model: model_pb2.ModelRef, spec: spec_pb2.OptimizationSpec, labels: Mapping[str, str]
) -> str:
    """A digest of what a CreateJob asked for, to tell a retry from a different request."""
    digest = hashlib.sha256()
    digest.update(model.sha256.encode())
    digest.update(model.format.to_bytes(4, "big"))
    digest.update(spec.SerializeToString(deterministic=True))
    for key in sorted(labels):
        digest.update(f"\0{key}\0{labels[key]}".encode())
    return digest.hexdigest()


def transition(job: job_pb2.Job, state: int) -> None:
    """Move ``job`` to ``state``, stamping start and end times (an ended job has no lease).

    Raises FAILED_PRECONDITION (JOB_ALREADY_FINISHED) when the job has ended,
    and INTERNAL for any other illegal move.
    """
    if is_terminal(job.state):
        raise ServiceError(
            Code.FAILED_PRECONDITION,
            "JOB_ALREADY_FINISHED",
            f"job {job.id} already ended as {state_name(job.state)}",
            metadata={"job_id": job.id, "state": state_name(job.state)},
        )
    if state not in _ALLOWED.get(job.state, frozenset()):
        raise ServiceError(
            Code.INTERNAL,
            "INTERNAL_ERROR",
            f"illegal job transition {state_name(job.state)} -> {state_name(state)}",
        )
    job.state = state  # type: ignore[assignment]
    if state == RUNNING:
        job.start_time.CopyFrom(now())
    if is_terminal(state):
        job.end_time.CopyFrom(now())
        job.ClearField("lease")


def fail(job: job_pb2.Job, error: ServiceError) -> None:
    """End ``job`` as FAILED (or CANCELLED when the error's code is CANCELLED) with ``error``."""
    transition(job, CANCELLED if error.code is Code.CANCELLED else FAILED)
    job.error.CopyFrom(to_status(error))
    job.progress.message = error.message
