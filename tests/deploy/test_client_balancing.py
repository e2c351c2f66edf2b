"""The SDK call of README "Deploy on Kubernetes": a dns:/// target balanced per pod with round_robin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import prunekit
from prunekit_server.config import Settings
from prunekit_server.server import RunningServer, start_server

#: What the README passes as channel_options for the headless Service.
ROUND_ROBIN = [("grpc.lb_policy_name", "round_robin")]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    settings = Settings(
        host="127.0.0.1", port=0, storage=f"file://{tmp_path}", shutdown_grace_s=0, auth="none"
    )
    running = start_server(settings)
    yield running
    running.stop(grace=0)


def test_a_dns_target_with_round_robin_reaches_the_server(server: RunningServer) -> None:
    target = f"dns:///127.0.0.1:{server.port}"
    with prunekit.Client(target, timeout=10, channel_options=ROUND_ROBIN) as client:
        assert client.list_jobs() == ([], "")
