"""The outermost interceptor: each call's request id, log context and metrics (count and latency by
method and status code)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ..observability.logs import log_context
from ..observability.metrics import RPC_SECONDS, RPCS

REQUEST_ID_KEY = "x-request-id"
"""Metadata a caller may send to name its call in the server's log; else the server makes one up."""
MAX_REQUEST_ID = 128


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID:
            return value if value.isprintable() else uuid.uuid4().hex[:16]
    return uuid.uuid4().hex[:16]


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()
    if code is None:
        if not failed:
            return "OK"
        return "UNKNOWN" if context.is_active() else "CANCELLED"
    return str(code.name)


class ObserveInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts every call in ``prunekit_rpcs_total`` and times it in ``prunekit_rpc_duration_seconds``
    (method as ``Service/Method``, code as the status code's name), and runs its handler inside a log
    context naming its ``request_id`` (the ``x-request-id`` metadata, or a new one) and ``method``."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit(".", 1)[-1]
        request_id = _request_id(details)
        for kind, make, wrap in (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, self._unary),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, self._unary),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, self._streaming),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, self._streaming),
        ):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(
                    wrap(behavior, method, request_id),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    @staticmethod
    def _unary(behavior: Callable[..., Any], method: str, request_id: str) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            started, failed = time.perf_counter(), True
            try:
                with log_context(request_id=request_id, method=method):
                    reply = behavior(request, context)
                failed = False
                return reply
            finally:
                _observe(method, _code(context, failed), started)

        return run

    @staticmethod
    def _streaming(
        behavior: Callable[..., Iterator[Any]], method: str, request_id: str
    ) -> Callable[..., Iterator[Any]]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, failed = time.perf_counter(), True
            try:
                with log_context(request_id=request_id, method=method):
                    yield from behavior(request, context)
                failed = False
            finally:
                _observe(method, _code(context, failed), started)

        return run


def _observe(method: str, code: str, started: float) -> None:
    RPCS.labels(method, code).inc()
    RPC_SECONDS.labels(method, code).observe(time.perf_counter() - started)
