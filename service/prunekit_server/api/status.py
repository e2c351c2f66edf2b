"""Mapping every error of a call to a gRPC status with rich details, and logging each call."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_status import rpc_status

from ..auth import identity
from ..errors import Code, ServiceError
from ..observability.logs import log_context
from ..rpc_status import to_status

log = logging.getLogger("prunekit_server.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Svc = TypeVar("Svc")


def abort(context: grpc.ServicerContext, error: ServiceError) -> NoReturn:
    """End the call with ``error`` as a rich status (ErrorInfo, BadRequest)."""
    context.abort_with_status(rpc_status.to_status(to_status(error)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _internal(exc: BaseException) -> ServiceError:
    return ServiceError(
        Code.INTERNAL, "INTERNAL_ERROR", f"internal error ({type(exc).__name__}); see server logs"
    )


@contextlib.contextmanager
def _outcome(name: str, context: grpc.ServicerContext) -> Iterator[None]:
    """Map what the handler raises to a status, and log the call once."""
    started = time.perf_counter()
    with log_context(tenant=identity.current().tenant):
        try:
            yield
        except ServiceError as exc:
            _log(name, started, exc.code.name, exc.reason)
            abort(context, exc)
        except Exception as exc:
            if _aborted(context):
                raise
            log.exception("%s failed", name)
            abort(context, _internal(exc))
        _log(name, started, "OK", "")


def unary(
    method: Callable[[Svc, Req, grpc.ServicerContext], Resp],
) -> Callable[[Svc, Req, grpc.ServicerContext], Resp]:
    """Wrap a unary (or client-streaming) handler: ServiceError -> status, bugs -> INTERNAL, one log line."""

    @functools.wraps(method)
    def handler(self: Svc, request: Req, context: grpc.ServicerContext) -> Resp:
        with _outcome(method.__name__, context):
            return method(self, request, context)
        raise AssertionError("unreachable")  # pragma: no cover

    return handler


def streaming(
    method: Callable[[Svc, Req, grpc.ServicerContext], Iterator[Resp]],
) -> Callable[[Svc, Req, grpc.ServicerContext], Iterator[Resp]]:
    """Like :func:`unary`, for server-streaming handlers (errors before or between messages)."""

    @functools.wraps(method)
    def handler(self: Svc, request: Req, context: grpc.ServicerContext) -> Iterator[Resp]:
        with _outcome(method.__name__, context):
            yield from method(self, request, context)

    return handler


def _aborted(context: Any) -> bool:
    code = getattr(context, "code", lambda: None)()
    return code is not None and code != grpc.StatusCode.OK


def _log(method: str, started: float, code: str, reason: str) -> None:
    log.info(
        "%s %s%s %.1f ms", method, code, f" {reason}" if reason else "", (time.perf_counter() - started) * 1e3
    )
