"""Errors every layer raises, mapped to gRPC status codes only at the API edge.

A :class:`ServiceError` carries a canonical status code name, a stable reason
(an ``ErrorReason`` name from ``protos/prunekit/v1/errors.proto``), a message
for people and, for bad requests, every field violation found. Nothing here
imports grpc, so the pipeline and the worker can raise these too.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass, field
from typing import Any

from prunekit.spec.violation import FieldViolation

__all__ = [
    "Code",
    "FieldViolation",
    "ServiceError",
    "invalid_model",
    "invalid_spec",
    "is_disk_full",
    "scratch_full",
    "storage_full",
    "unsupported_model",
]

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class Code(enum.Enum):
    """Canonical status codes (the names of ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    CANCELLED = 1
    UNAUTHENTICATED = 16


@dataclass
class ServiceError(Exception):
    """An error with a status code and a stable reason."""

    code: Code
    reason: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    #: When set, clients should wait this long before retrying (sent as google.rpc.RetryInfo).
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name} ({self.reason}): {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, used to pass an error from a worker to the server."""
        return {
            "code": self.code.name,
            "reason": self.reason,
            "message": self.message,
            "violations": [{"field": v.field, "description": v.description} for v in self.violations],
            "metadata": dict(self.metadata),
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceError:
        """Inverse of :meth:`to_dict`; unknown codes become INTERNAL."""
        try:
            code = Code[str(data.get("code", "INTERNAL"))]
        except KeyError:
            code = Code.INTERNAL
        return cls(
            code=code,
            reason=str(data.get("reason", "INTERNAL_ERROR")),
            message=str(data.get("message", "")),
            violations=[
                FieldViolation(str(v.get("field", "")), str(v.get("description", "")))
                for v in data.get("violations", [])
            ],
            metadata={str(k): str(v) for k, v in dict(data.get("metadata", {})).items()},
            retry_after_s=float(data["retry_after_s"]) if data.get("retry_after_s") is not None else None,
        )


def invalid_model(message: str, **metadata: str) -> ServiceError:
    """The bytes are not a valid model of the declared format."""
    return ServiceError(Code.INVALID_ARGUMENT, "INVALID_MODEL", message, metadata=metadata)


def unsupported_model(message: str, **metadata: str) -> ServiceError:
    """A valid model this server cannot process (an op, an opset...)."""
    return ServiceError(Code.FAILED_PRECONDITION, "UNSUPPORTED_MODEL", message, metadata=metadata)


def invalid_spec(violations: list[FieldViolation]) -> ServiceError:
    """The spec breaks rules; every violation is listed."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ServiceError(Code.INVALID_ARGUMENT, "INVALID_SPEC", f"invalid spec: {summary}", violations)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is an ``OSError`` for a full disk or quota."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def storage_full(space: str, detail: str) -> ServiceError:
    """No space left in ``space`` ("store": the object store or its upload spool; "scratch": a job's
    working directory): RESOURCE_EXHAUSTED, STORAGE_FULL. An operator frees space; retrying later helps."""
    where = "the server's object store" if space == "store" else "the server's scratch space"
    return ServiceError(
        Code.RESOURCE_EXHAUSTED, "STORAGE_FULL", f"{where} is full: {detail}", metadata={"space": space}
    )


def scratch_full(exc: BaseException) -> ServiceError:
    """STORAGE_FULL for a job's working directory, from the error that met the full disk."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return storage_full("scratch", f"{detail} (writing the job's working directory)")
