"""The CLI's ``--json``: one stable shape for machines, written once.

Every field of a message is present, under its proto name: numbers as JSON numbers (64-bit integers
too), enums by their upper-case short name as the README and warnings use them (``SUCCEEDED``,
``BELOW_QUALITY_RULE``), an unset message or oneof member as ``null``, a non-finite float as ``null``,
timestamps as RFC 3339 strings, repeated fields as lists, maps as objects. A job's ``error`` is
``{code, reason, message, metadata, violations}``.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import descriptor as _d
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from prunekit._errors import PrunekitError
from prunekit.spec.names import enum_short_name
from prunekit.v1 import job_pb2

__all__ = ["job_event", "to_json"]

_FD = _d.FieldDescriptor


def _scalar(field: Any, value: Any) -> Any:
    if field.type == _FD.TYPE_ENUM:
        return enum_short_name(field.enum_type, value).upper()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def _error(status: status_pb2.Status) -> dict[str, Any]:
    err = PrunekitError.from_status(status)
    return {
        "code": err.code_name,
        "reason": err.reason,
        "message": err.message,
        "metadata": dict(err.metadata),
        "violations": [{"field": f, "description": d} for f, d in err.violations],
    }


def _value(field: Any, value: Any) -> Any:
    if field.type != _FD.TYPE_MESSAGE:
        return _scalar(field, value)
    return to_json(value)


def to_json(message: Message) -> Any:
    """``message`` in the CLI's JSON shape (see the module)."""
    if isinstance(message, timestamp_pb2.Timestamp):
        return message.ToJsonString() if message.seconds or message.nanos else None
    if isinstance(message, status_pb2.Status):
        return _error(message)
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.type == _FD.TYPE_MESSAGE or field.containing_oneof is not None:
            out[field.name] = _value(field, value) if message.HasField(field.name) else None
        else:
            out[field.name] = _scalar(field, value)
    return out


def job_event(job: job_pb2.Job) -> dict[str, Any]:
    """One line of ``jobs watch --json``: the job's id, state and progress, and its error once it ended."""
    progress = job.progress
    tuning = to_json(progress.finetune) if progress.HasField("finetune") else None
    return {
        "job_id": job.id,
        "state": enum_short_name(job_pb2.JobState.DESCRIPTOR, job.state).upper(),
        "stage": progress.stage,
        "fraction": progress.fraction,
        "message": progress.message,
        "attempt": job.attempt,
        "finetune": tuning,
        "error": _error(job.error) if job.HasField("error") else None,
    }
