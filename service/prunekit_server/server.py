"""Assembling and running the gRPC server: service, health, reflection, graceful stop.

The stream caps (``max_concurrent_uploads``, ``..._watches``, ``..._downloads``) must leave some of the
``rpc_threads`` to the unary calls; health has threads of its own (:mod:`.api.health`).
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from prunekit.v1 import optimizer_service_pb2, optimizer_service_pb2_grpc

from .api.health import HEALTH_SERVICE, HEALTH_THREADS, StorageProbe, add_health
from .api.servicer import OptimizerServicer
from .config import Settings
from .jobs.durable.lease import new_server_id
from .jobs.durable.stores import TenantStores
from .jobs.execution.executor import JobExecutor
from .storage import open_store

log = logging.getLogger(__name__)

SERVICE_NAME = optimizer_service_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name
DEFAULT_TENANT = "default"
PROBE_PREFIX = "health/"
"""The prefix the storage probe lists (one key at most): nothing is written there, an empty answer is
reachable; a missing bucket or a store that does not answer is not."""


@dataclass
class RunningServer:
    """A started server. :meth:`stop` drains it; safe to call more than once."""

    server: grpc.Server
    port: int
    settings: Settings
    stores: TenantStores
    executor: JobExecutor
    health: health.HealthServicer
    probe: StorageProbe
    _stopped: threading.Event

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


def start_server(settings: Settings) -> RunningServer:
    """Open storage, start workers and serve on ``settings.host:settings.port`` (0 picks a free port).

    The server leases the jobs it creates or takes over under ``settings.server_id`` (or a
    generated hostname-pid-random id); its sweeper's first scan for abandoned jobs runs now.
    A ``scratch_dir`` that does not exist is created. ValueError for stream caps that
    :func:`check_stream_caps` refuses.
    """
    check_stream_caps(settings)
    scratch = settings.scratch_path()
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.storage)
    owner = new_server_id(settings.server_id)
    stores = TenantStores.open(store, DEFAULT_TENANT, owner=owner, lease_s=settings.lease_s)
    executor = JobExecutor(stores, settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.rpc_threads, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=settings.rpc_threads * 4,
        options=[
            ("grpc.max_receive_message_length", 4 << 20),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.max_connection_age_ms", 30 * 60_000),
            ("grpc.max_connection_age_grace_ms", 60_000),
        ],
    )
    optimizer_service_pb2_grpc.add_OptimizerServiceServicer_to_server(
        OptimizerServicer(stores, executor, settings), server
    )
    health_pool = futures.ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="health")
    health_servicer = add_health(server, health_pool)
    probe = StorageProbe(
        lambda: store.list_keys(PROBE_PREFIX, limit=1), health_servicer, SERVICE_NAME, settings.health_probe_s
    )
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    address = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.add_insecure_port(f"{address}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    executor.start()
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    probe.start()
    log.info(
        "listening on %s:%d, storage %s, %d workers, server id %s",
        settings.host,
        port,
        store.uri,
        settings.workers,
        stores.jobs.owner,
    )
    return RunningServer(server, port, settings, stores, executor, health_servicer, probe, threading.Event())
