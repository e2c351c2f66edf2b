"""The server interceptor: every call but health and reflection runs as the caller's identity."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ..api.status import abort
from ..errors import ServiceError
from .authenticator import Authenticator
from .identity import bind, unbind

log = logging.getLogger(__name__)

#: Services any caller may use without a credential (probes, tooling).
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Resolves the identity of each call (see :class:`Authenticator`) and binds it while the handler
    runs (:func:`.identity.current`); a call without an accepted credential ends UNAUTHENTICATED
    before its handler starts."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        metadata = tuple(details.invocation_metadata or ())
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return None  # no bidirectional streams in this API: unimplemented rather than unauthenticated

    def _bind(self, metadata: tuple[Any, ...], context: grpc.ServicerContext) -> Any:
        try:
            identity = self._authenticator.identify(metadata, context.auth_context())
        except ServiceError as exc:
            log.info("refused a call from %s: %s", context.peer(), exc.reason)
            abort(context, exc)
        return bind(identity)

    def _unary(self, behavior: Callable[..., Any], metadata: tuple[Any, ...]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            token = self._bind(metadata, context)
            try:
                return behavior(request, context)
            finally:
                unbind(token)

        return run

    def _streaming(
        self, behavior: Callable[..., Iterator[Any]], metadata: tuple[Any, ...]
    ) -> Callable[..., Iterator[Any]]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            token = self._bind(metadata, context)
            try:
                yield from behavior(request, context)
            finally:
                unbind(token)

        return run
