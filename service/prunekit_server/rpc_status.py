"""ServiceError <-> ``google.rpc.Status`` (protobuf only, no grpc).

A status carries exactly one ``ErrorInfo`` (domain :data:`ERROR_DOMAIN`, the
error's reason and metadata), one ``BadRequest`` listing every field violation
when there are any, and a ``RetryInfo`` when the error says when to retry.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from .errors import Code, FieldViolation, ServiceError
from .redact import redact

ERROR_DOMAIN = "prunekit.dev"


def to_status(error: ServiceError) -> status_pb2.Status:
    """The rich status of ``error``, its texts :func:`.redact.redact`-ed (what clients read of it)."""
    status = status_pb2.Status(code=error.code.value, message=redact(error.message))
    metadata = {key: redact(value) for key, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    status.details.append(packed)
    if error.retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        packed = any_pb2.Any()
        packed.Pack(retry)
        status.details.append(packed)
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=redact(v.description))
                for v in error.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
    return status


def from_status(status: status_pb2.Status) -> ServiceError:
    """Inverse of :func:`to_status`; a status without ErrorInfo gets reason INTERNAL_ERROR."""
    try:
        code = Code(status.code)
    except ValueError:
        code = Code.INTERNAL
    error = ServiceError(code, "INTERNAL_ERROR", status.message)
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            error.reason = info.reason
            error.metadata = dict(info.metadata)
        elif detail.Unpack(bad):
            error.violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(retry):
            error.retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
    return error
