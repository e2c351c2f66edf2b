"""``grpc.health.v1`` on threads of its own, and a storage probe that makes the service NOT_SERVING.

Health calls run on a small pool of their own (:func:`add_health`), so a probe never waits behind the
server's other RPCs however busy they keep its pool. The whole server (service ``""``) answers SERVING
while the process serves: a liveness probe must not restart a pod, and lose its running jobs, because
storage is away. ``prunekit.v1.OptimizerService`` (readiness) is NOT_SERVING while the
:class:`StorageProbe` finds storage unreachable: a probe every ``interval`` seconds, each one that
fails or is not answered within the interval counts, and only one is in flight at a time. Checks read
the last verdict: they never touch storage themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
HEALTH_THREADS = 2
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _on_pool(behavior: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        return behavior(*args)

    # grpc runs a handler whose behaviour carries a pool of its own there, not on the server's pool.
    setattr(run, "experimental_thread_pool", pool)  # noqa: B010
    return run


def add_health(servers: Sequence[grpc.Server], pool: futures.ThreadPoolExecutor) -> health.HealthServicer:
    """Serve one health service on each of ``servers``, its calls run on ``pool``; returns its servicer."""
    servicer = health.HealthServicer(experimental_non_blocking=True, experimental_thread_pool=pool)
    request, response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            _on_pool(servicer.Check, pool),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        ),
    }
    for server in servers:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(HEALTH_SERVICE, handlers),))
    return servicer


class StorageProbe:
    """Sets ``service`` SERVING or NOT_SERVING on ``servicer`` as ``probe()`` succeeds or not."""

    def __init__(
        self, probe: Callable[[], object], servicer: health.HealthServicer, service: str, interval: float
    ) -> None:
        self._probe = probe
        self._servicer = servicer
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._reachable = True
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    @property
    def reachable(self) -> bool:
        """The last verdict (True before the first probe)."""
        return self._reachable

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            answered = threading.Event()
            failure: list[BaseException] = []
            threading.Thread(
                target=self._attempt, args=(answered, failure), name="health-probe-call", daemon=True
            ).start()
            in_time = answered.wait(self._interval)
            self._record(in_time and not failure, failure[0] if failure else None)
            while not answered.wait(self._interval):  # a hung probe: stay NOT_SERVING, start no other
                if self._stop.is_set():
                    return
            if in_time:
                self._stop.wait(self._interval)

    def _attempt(self, answered: threading.Event, failure: list[BaseException]) -> None:
        try:
            self._probe()
        except Exception as exc:
            failure.append(exc)
        finally:
            answered.set()

    def _record(self, reachable: bool, error: BaseException | None) -> None:
        if reachable != self._reachable:
            why = f" ({type(error).__name__}: {error})" if error else f" (no answer in {self._interval:g} s)"
            log.warning(
                "storage %s%s", "reachable again" if reachable else "unreachable", "" if reachable else why
            )
        self._reachable = reachable
        if not self._stop.is_set():
            self._servicer.set(self._service, _SERVING if reachable else _NOT_SERVING)
