"""What a worker's exit means for its job: the error (a stop, a timeout, a crash, a signal) or none."""

from __future__ import annotations

import signal
from typing import Protocol

from ...errors import Code, ServiceError
from ..worker.fence import EXIT_FENCED


class Stopped(Protocol):
    """A stop request (:class:`.sandbox.StopRequest`): the error it carries once set."""

    error: ServiceError | None


def outcome_error(
    returncode: int,
    reported: list[ServiceError],
    stop: Stopped,
    timed_out: bool,
    timeout: float,
    stage: str,
    tail: str,
) -> ServiceError | None:
    """The error a job ends with after its worker exited with ``returncode`` (None: it succeeded): the
    stop's error when it was stopped, a timeout, the error the worker reported, else what the exit says."""
    if stop.error is not None:
        return stop.error
    if timed_out:
        return ServiceError(
            Code.DEADLINE_EXCEEDED,
            "WORKER_TIMEOUT",
            f"the worker ran past its {timeout:g} s limit during stage {stage!r}",
            metadata={"stage": stage},
        )
    if returncode != 0 and reported:
        return reported[0]
    if returncode == 0:
        return None
    meta = {"stage": stage, "exit_code": str(returncode)}
    if returncode == EXIT_FENCED:
        return ServiceError(
            Code.INTERNAL,
            "WORKER_CRASHED",
            f"the worker stopped itself during stage {stage!r}: its server stopped renewing the job's lease",
            metadata=meta,
        )
    if returncode < 0:
        signame = signal.Signals(-returncode).name
        meta["signal"] = signame
        if -returncode == signal.SIGXCPU:
            return ServiceError(
                Code.DEADLINE_EXCEEDED,
                "WORKER_TIMEOUT",
                f"the worker used up its CPU-time limit during stage {stage!r}",
                metadata=meta,
            )
        if -returncode == signal.SIGXFSZ:
            return ServiceError(
                Code.RESOURCE_EXHAUSTED,
                "WORKER_OUT_OF_MEMORY",
                f"the worker exceeded its file-size limit during stage {stage!r}",
                metadata=meta,
            )
        hint = " (the usual cause is running out of memory)" if -returncode == signal.SIGKILL else ""
        return ServiceError(
            Code.INTERNAL,
            "WORKER_CRASHED",
            f"the worker died of {signame} during stage {stage!r}{hint}",
            metadata=meta,
        )
    last = tail.strip().splitlines()[-1:] or [""]
    return ServiceError(
        Code.INTERNAL,
        "WORKER_CRASHED",
        f"the worker exited with code {returncode} during stage {stage!r}: {last[0][:300]}",
        metadata=meta,
    )
