"""The SDK's exceptions: :class:`PrunekitError` for the service, :class:`SpecError` for spec files."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from prunekit.v1 import job_pb2

__all__ = ["PrunekitError", "SpecError", "format_error", "status_code"]

_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` for a canonical code number; ``UNKNOWN`` for numbers gRPC does not define."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


class PrunekitError(Exception):
    """An error reported by the service, or a job that ended without succeeding.

    Attributes:
        code: the canonical ``grpc.StatusCode``.
        code_name: its name, e.g. ``"INVALID_ARGUMENT"``.
        reason: the ``ErrorInfo.reason`` (an ``ErrorReason`` name such as ``"INVALID_SPEC"``); ``""`` when
            the status carried no ``ErrorInfo`` (errors from proxies or from gRPC itself).
        domain: the ``ErrorInfo.domain`` (``"prunekit.dev"`` for the service's own errors).
        message: the human-readable message.
        violations: every ``(field, description)`` of a ``BadRequest`` detail, in order.
        metadata: the ``ErrorInfo.metadata``.
        retry_delay: seconds from a ``RetryInfo`` detail, when the server sent one.
        job: the job, when this error describes a job that ended ``FAILED`` or ``CANCELLED``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        violations: Sequence[tuple[str, str]] = (),
        metadata: Mapping[str, str] | None = None,
        retry_delay: float | None = None,
        job: job_pb2.Job | None = None,
    ) -> None:
        super().__init__(message)
        self.code: grpc.StatusCode = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.violations: list[tuple[str, str]] = list(violations)
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_delay = retry_delay
        self.job = job

    def __reduce__(self) -> tuple[Any, ...]:
        state: dict[str, Any] = {
            "reason": self.reason,
            "domain": self.domain,
            "violations": self.violations,
            "metadata": self.metadata,
            "retry_delay": self.retry_delay,
            "job": self.job,
        }
        return (functools.partial(PrunekitError, **state), (self.code, self.message))

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``"NOT_FOUND"``."""
        return str(self.code.name)

    def __str__(self) -> str:
        head = f"{self.code_name} {self.reason}" if self.reason else self.code_name
        return f"{head}: {self.message}"

    def __repr__(self) -> str:
        return f"PrunekitError({self.code_name}, reason={self.reason!r}, message={self.message!r})"

    @classmethod
    def from_status(cls, status: status_pb2.Status, *, job: job_pb2.Job | None = None) -> PrunekitError:
        """Builds the error a ``google.rpc.Status`` describes (as sent in trailers or in ``Job.error``)."""
        return cls._build(status_code(status.code), status.message, status.details, job=job)

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> PrunekitError:
        """Builds the error a failed call raised, reading its rich status when it has one.

        Works for unary and streaming calls. A call without ``grpc-status-details-bin`` trailers, or whose
        rich status disagrees with its code, gives an error with only ``code`` and ``message``.
        """
        code = _call_attr(exc, "code") or grpc.StatusCode.UNKNOWN
        message = _call_attr(exc, "details") or str(code.name)
        try:
            rich = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
        except (ValueError, TypeError):
            rich = None
        if rich is not None:
            return cls._build(code, rich.message or message, rich.details)
        return cls(code, message)

    @classmethod
    def from_job(cls, job: job_pb2.Job) -> PrunekitError:
        """The error of a job that ended ``FAILED`` or ``CANCELLED``: ``job.error``, or a default if unset."""
        if job.HasField("error") and job.error.code != 0:
            return cls.from_status(job.error, job=job)
        if job.state == job_pb2.JOB_STATE_CANCELLED:
            return cls(
                grpc.StatusCode.CANCELLED, f"job {job.id} was cancelled", reason="JOB_CANCELLED", job=job
            )
        return cls(grpc.StatusCode.UNKNOWN, f"job {job.id} failed without an error", job=job)

    @classmethod
    def _build(
        cls,
        code: grpc.StatusCode,
        message: str,
        details: Iterable[any_pb2.Any],
        *,
        job: job_pb2.Job | None = None,
    ) -> PrunekitError:
        reason = domain = ""
        metadata: dict[str, str] = {}
        violations: list[tuple[str, str]] = []
        retry_delay: float | None = None
        for detail in details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            hint = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                if not reason:
                    reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Unpack(bad):
                violations.extend((v.field, v.description) for v in bad.field_violations)
            elif detail.Unpack(hint):
                retry_delay = hint.retry_delay.seconds + hint.retry_delay.nanos / 1e9
        return cls(
            code,
            message,
            reason=reason,
            domain=domain,
            violations=violations,
            metadata=metadata,
            retry_delay=retry_delay,
            job=job,
        )


def _call_attr(exc: object, name: str) -> Any:
    method = getattr(exc, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except Exception:
        return None


class SpecError(ValueError):
    """A spec that cannot be turned into an ``OptimizationSpec``.

    ``problems`` lists every ``(field path, description)`` found, e.g.
    ``("prune.ratoi", "unknown field (did you mean 'ratio'?)")``; ``source`` names the file, if any.
    """

    code_name = "INVALID_ARGUMENT"
    reason = "INVALID_SPEC"

    def __init__(self, problems: Sequence[tuple[str, str]], *, source: str = "") -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        self.message = f"invalid spec{where}: {count} problem{'s' if count != 1 else ''}"
        lines = [self.message, *(f"  - {field}: {text}" for field, text in self.problems)]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(SpecError, source=self.source), (self.problems,))

    @property
    def violations(self) -> list[tuple[str, str]]:
        """The same as ``problems``, under the name :class:`PrunekitError` uses."""
        return self.problems


def _headline(message: str, violations: Sequence[tuple[str, str]]) -> str:
    """``message`` without the violations it repeats (the server's ``invalid spec: a: x; b: y``)."""
    summary = "; ".join(f"{field}: {text}" for field, text in violations)
    if not summary or not message.endswith(summary):
        return message
    count = f"{len(violations)} problem{'s' if len(violations) != 1 else ''}"
    lead = message[: -len(summary)].rstrip().removesuffix(":").rstrip()
    return f"{lead}: {count}" if lead else count


def format_error(err: PrunekitError | SpecError) -> str:
    """``error: <CODE_NAME> <REASON>: <message>`` then one ``  - field: description`` line per violation.

    Each violation is printed once: a message that lists them all (as the server's INVALID_SPEC does) is
    shortened to a count.
    """
    head = f"{err.code_name} {err.reason}" if err.reason else err.code_name
    lines = [f"error: {head}: {_headline(err.message, err.violations)}"]
    lines.extend(f"  - {field}: {text}" for field, text in err.violations)
    return "\n".join(lines)
