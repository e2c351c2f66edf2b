"""Assembling and running the gRPC server: service, health, reflection, graceful stop.

The stream caps (``max_concurrent_uploads``, ``..._watches``, ``..._downloads``) must leave some of the
``rpc_threads`` to the unary calls; health has threads of its own (:mod:`.api.health`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from prunekit.v1 import optimizer_service_pb2, optimizer_service_pb2_grpc

from .api.health import HEALTH_SERVICE, HEALTH_THREADS, StorageProbe, add_health
from .api.observe import ObserveInterceptor
from .api.servicer import OptimizerServicer
from .auth.authenticator import Authenticator
from .auth.interceptor import AuthInterceptor
from .auth.tls import server_credentials
from .config import EXECUTORS, Settings
from .jobs.durable.keys import DEFAULT_TENANT
from .jobs.durable.lease import new_server_id
from .jobs.durable.stores import TenantStores
from .jobs.durable.tenants import Tenants
from .jobs.execution.executor import JobExecutor
from .jobs.execution.seam import Executor
from .jobs.worker.confine import protect_server
from .observability.measured_store import MeasuredStore
from .observability.metrics import MetricsEndpoint, serve_metrics
from .redact import hide, hide_store
from .scratch import ServerScratch
from .storage import S3Store, open_store

log = logging.getLogger(__name__)

SERVICE_NAME = optimizer_service_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
SUBMISSION_SERVICE = f"{SERVICE_NAME}/CreateJob"
"""The health service name of job submission: NOT_SERVING while the executor cannot take jobs (the Ray
cluster of executor ``ray`` does not answer) though the rest of the API serves."""
PROBE_PREFIX = "health/"
"""The prefix the storage probe lists (one key at most): nothing is written there, an empty answer is
reachable; a missing bucket or a store that does not answer is not."""


@dataclass
class RunningServer:
    """A started server. :meth:`stop` drains it; safe to call more than once."""

    server: grpc.Server
    port: int
    settings: Settings
    #: The stores of tenant "default" (every caller's when authentication is off).
    stores: TenantStores
    tenants: Tenants
    executor: Executor
    health: health.HealthServicer
    probe: StorageProbe
    health_server: grpc.Server | None
    #: The plaintext health-only port (``health_port``), None without one.
    health_port: int | None
    #: The Prometheus endpoint (``metrics_port``), None without one.
    metrics: MetricsEndpoint | None
    _stopped: threading.Event
    #: This server's own scratch directory (``settings.scratch_dir`` points into it).
    scratch: ServerScratch | None = None

    @property
    def target(self) -> str:
        host = "127.0.0.1" if self.settings.host in {"0.0.0.0", "::", "[::]"} else self.settings.host
        return f"{host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new jobs, give running ones ``grace`` seconds, then stop serving."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.shutdown_grace_s if grace is None else grace
        log.info("stopping: health NOT_SERVING, draining jobs for up to %.0f s", grace)
        self.probe.stop()
        self.health.enter_graceful_shutdown()
        self.executor.shutdown(grace)
        self.server.stop(grace=2.0).wait()
        if self.health_server is not None:
            self.health_server.stop(grace=None)
        if self.scratch is not None:
            self.scratch.release()
        if self.metrics is not None:
            self.metrics.stop()
        log.info("stopped")

    def wait(self) -> None:
        """Block until the server has stopped."""
        self.server.wait_for_termination()


def check_stream_caps(settings: Settings) -> None:
    """ValueError unless the stream caps are positive and leave unary calls some of ``rpc_threads``, and
    the stream timeouts are positive."""
    caps = (
        settings.max_concurrent_uploads,
        settings.max_concurrent_watches,
        settings.max_concurrent_downloads,
    )
    if min(caps) < 1 or sum(caps) >= settings.rpc_threads:
        raise ValueError(
            f"max_concurrent_uploads, _watches and _downloads ({', '.join(map(str, caps))}) must each be "
            f">= 1 and together below rpc_threads ({settings.rpc_threads}), which unary calls need too"
        )
    if not min(settings.upload_chunk_timeout_s, settings.upload_timeout_s, settings.watch_max_s) > 0:
        raise ValueError("upload_chunk_timeout_s, upload_timeout_s and watch_max_s must be > 0")


def _listen(server: grpc.Server, settings: Settings, port: int, credentials: Any) -> int:
    address = f"[{settings.host}]" if ":" in settings.host else settings.host
    if credentials is None:
        bound = server.add_insecure_port(f"{address}:{port}")
    else:
        bound = server.add_secure_port(f"{address}:{port}", credentials)
    if bound == 0:
        raise OSError(f"cannot listen on {settings.host}:{port}")
    return int(bound)


def _grpc_server(settings: Settings, interceptors: list[grpc.ServerInterceptor]) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.rpc_threads, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=settings.rpc_threads * 4,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", 4 << 20),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.max_connection_age_ms", 30 * 60_000),
            ("grpc.max_connection_age_grace_ms", 60_000),
        ],
    )


def _identity(settings: Settings) -> tuple[Any, list[grpc.ServerInterceptor]]:
    """The TLS credentials (None: plaintext) and the interceptors of authentication."""
    credentials = server_credentials(settings)
    authenticator = Authenticator.from_settings(settings)
    if authenticator is not None and credentials is None:
        log.warning("bearer tokens travel in clear text: set PRUNEKIT_TLS_CERT_FILE and _KEY_FILE")
    return credentials, [] if authenticator is None else [AuthInterceptor(authenticator)]


def _shield(store_uri: str) -> None:
    """What workers must not reach of this process: it turns non-dumpable (its /proc files and memory
    are root's), and a file store's root, when this server is root, is made ``0700`` (workers drop to
    another uid)."""
    if not protect_server():
        log.warning("could not make the server non-dumpable: workers of its uid may read its /proc files")
    if os.geteuid() == 0 and store_uri.startswith("file://"):
        os.chmod(store_uri.removeprefix("file://"), 0o700)


def _enable_reflection(server: grpc.Server) -> None:
    """Server reflection as ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1`` (what grpcurl asks
    first): the two protocols' messages are the same on the wire, so one servicer answers both."""
    names = (SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME, REFLECTION_V1)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    request, response = reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=request.FromString,
        response_serializer=response.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )


def _executor(tenants: Tenants, settings: Settings, servicer: health.HealthServicer) -> Executor:
    """The executor ``settings.executor`` names; ValueError for another name (or ``ray`` without
    ``RAY_ADDRESS``). Job submission's health is SERVING from the start with ``local``, and follows
    the cluster's with ``ray``."""
    if settings.executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {settings.executor!r}")
    if settings.executor == "local":
        servicer.set(SUBMISSION_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        return JobExecutor(tenants, settings)
    from .jobs.ray.executor import RayExecutor

    def on_reachable(reachable: bool) -> None:
        status = health_pb2.HealthCheckResponse
        servicer.set(SUBMISSION_SERVICE, status.SERVING if reachable else status.NOT_SERVING)

    on_reachable(False)
    return RayExecutor(tenants, settings, on_reachable)


def start_server(settings: Settings) -> RunningServer:
    """Open storage, start workers and serve on ``settings.host:settings.port`` (0 picks a free port).

    The server leases the jobs it creates or takes over under ``settings.server_id`` (or a
    generated hostname-pid-random id); its sweeper's first scan for abandoned jobs runs now.
    A ``scratch_dir`` that does not exist is created; the server works in a directory of its own under
    it, after removing those of servers that are gone (:mod:`.scratch`). Calls run as the caller's identity
    (:mod:`.auth`), on the stores of its tenant; TLS when the settings name a certificate.
    ValueError for stream caps that :func:`check_stream_caps` refuses, or authentication or
    TLS settings that do not hold together.
    """
    check_stream_caps(settings)
    credentials, auth = _identity(settings)
    interceptors: list[grpc.ServerInterceptor] = [ObserveInterceptor(), *auth]
    scratch_root = (settings.scratch_path() or Path(tempfile.gettempdir())).resolve()
    raw = open_store(settings.storage)
    hide_store(raw.uri, raw.client.meta.endpoint_url if isinstance(raw, S3Store) else "")
    hide(str(scratch_root), "<scratch>")
    scratch = ServerScratch.claim(scratch_root)
    if settings.worker_sandbox:
        _shield(raw.uri)
    settings = replace(settings, scratch_dir=str(scratch.path))
    store = MeasuredStore(raw)
    tenants = Tenants(store, owner=new_server_id(settings.server_id), lease_s=settings.lease_s)
    server = _grpc_server(settings, interceptors)
    health_pool = futures.ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="health")
    health_server = None if settings.health_port < 0 else grpc.server(health_pool, maximum_concurrent_rpcs=64)
    health_servicer = add_health([server] if health_server is None else [server, health_server], health_pool)
    executor = _executor(tenants, settings, health_servicer)
    optimizer_service_pb2_grpc.add_OptimizerServiceServicer_to_server(
        OptimizerServicer(tenants, executor, settings), server
    )
    probe = StorageProbe(
        lambda: store.list_keys(PROBE_PREFIX, limit=1), health_servicer, SERVICE_NAME, settings.health_probe_s
    )
    _enable_reflection(server)
    port = _listen(server, settings, settings.port, credentials)
    health_port = None
    if health_server is not None:
        health_port = _listen(health_server, settings, settings.health_port, None)
        health_server.start()
    metrics = None if settings.metrics_port < 0 else serve_metrics(settings.host, settings.metrics_port)
    executor.start()
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    probe.start()
    log.info(
        "listening on %s:%d (%s), storage %s, executor %s, %d workers, server id %s",
        settings.host,
        port,
        "plaintext" if credentials is None else "TLS",
        store.uri,
        settings.executor,
        settings.workers,
        tenants.owner,
    )
    default = tenants.stores(DEFAULT_TENANT)
    parts = (server, port, settings, default, tenants, executor, health_servicer, probe, health_server)
    return RunningServer(*parts, health_port, metrics, threading.Event(), scratch)
