"""Health follows storage: a hung S3 makes the service NOT_SERVING (the process stays SERVING), and back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.tcp_proxy import freezing_proxy

from ..server_process import server_process

SERVICE = "prunekit.v1.OptimizerService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _wait_for(health: health_pb2_grpc.HealthStub, service: str, status: int, timeout: float) -> float:
    """Seconds until ``service`` reports ``status``; every check must answer within 1 s."""
    started = time.monotonic()
    while True:
        checked = time.monotonic()
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        assert time.monotonic() - checked < 1.0
        if reply.status == status:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{service or 'the server'} never became {status}"
        time.sleep(0.2)


def test_health_says_not_serving_while_storage_hangs(s3_endpoint: str, s3_admin: Any, tmp_path: Path) -> None:
    bucket = f"prunekit-health-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=bucket)
    upstream = urlparse(s3_endpoint)
    env = {"PRUNEKIT_HEALTH_PROBE_S": "1", "PRUNEKIT_WARM_WORKERS": "0"}
    with freezing_proxy((upstream.hostname or "127.0.0.1", upstream.port or 80)) as proxy:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
        with (
            server_process(f"s3://{bucket}/p", extra_env=env, log=tmp_path / "server.log") as running,
            grpc.insecure_channel(running.target) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            _wait_for(health, SERVICE, SERVING, 30)
            proxy.freeze()
            took = _wait_for(health, SERVICE, NOT_SERVING, 15)
            _wait_for(health, "", SERVING, 0)
            proxy.thaw()
            back = _wait_for(health, SERVICE, SERVING, 60)
            print(f"NOT_SERVING {took:.1f} s after the hang began; SERVING {back:.1f} s after it ended")
