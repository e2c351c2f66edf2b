"""The server's Prometheus metrics: one registry per process, served over HTTP at ``/metrics``.

Every server of a process adds to the same series (like :data:`..jobs.durable.storage_errors.OUTAGES`,
metrics describe the process). Names follow Prometheus conventions: ``prunekit_`` prefix, base units
(seconds, bytes), ``_total`` for counters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STAGES = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

RPCS = Counter(
    "prunekit_rpcs", "RPCs handled, by method and status code", ("method", "code"), registry=REGISTRY
)
RPC_SECONDS = Histogram(
    "prunekit_rpc_duration_seconds",
    "Time from an RPC's start to its status (whole streams for streaming calls)",
    ("method", "code"),
    buckets=_FAST,
    registry=REGISTRY,
)
JOBS_CREATED = Counter("prunekit_jobs_created", "Jobs created by CreateJob on this server", registry=REGISTRY)
JOBS_ENDED = Counter(
    "prunekit_jobs_ended",
    "Jobs this server saw end, by final state and reason (empty for SUCCEEDED)",
    ("state", "reason"),
    registry=REGISTRY,
)
JOBS = Gauge(
    "prunekit_jobs", "Jobs of this server now, by state: queued or running", ("state",), registry=REGISTRY
)
STAGE_SECONDS = Histogram(
    "prunekit_stage_duration_seconds",
    "Wall time of each stage of a job's worker",
    ("stage",),
    buckets=_STAGES,
    registry=REGISTRY,
)
WORKER_FAILURES = Counter(
    "prunekit_worker_failures",
    "Worker starts that ended in an error, by reason (WORKER_CRASHED, WORKER_TIMEOUT...)",
    ("reason",),
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "prunekit_job_retries",
    "Worker starts again after a failed one, by whether max_attempts was charged",
    ("charged",),
    registry=REGISTRY,
)
STORAGE_SECONDS = Histogram(
    "prunekit_storage_operation_duration_seconds",
    "Time of each object-storage call, by operation",
    ("operation",),
    buckets=_FAST,
    registry=REGISTRY,
)
STORAGE_ERRORS = Counter(
    "prunekit_storage_errors",
    "Object-storage calls that failed, by operation and error (ObjectNotFound is not an error)",
    ("operation", "error"),
    registry=REGISTRY,
)
UPLOADED_BYTES = Counter(
    "prunekit_uploaded_bytes",
    "Bytes received by UploadModel and UploadDataset, by kind (model, dataset)",
    ("kind",),
    registry=REGISTRY,
)
DOWNLOADED_BYTES = Counter("prunekit_downloaded_bytes", "Bytes sent by DownloadArtifact", registry=REGISTRY)


@dataclass
class MetricsEndpoint:
    """The HTTP server of ``/metrics`` (any path answers the same text)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(host: str, port: int) -> MetricsEndpoint:
    """Serve :data:`REGISTRY` in the Prometheus text format on ``host:port`` (0: a free port)."""
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    return MetricsEndpoint(server, thread)
