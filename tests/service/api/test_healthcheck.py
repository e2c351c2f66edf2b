"""The container health probe against a live server and a closed port."""

from __future__ import annotations

import socket

from prunekit_server.healthcheck import main
from prunekit_server.server import RunningServer


def test_probe_passes_on_a_serving_server(server: RunningServer) -> None:
    assert main([server.target]) == 0


def test_probe_fails_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main([f"127.0.0.1:{port}"]) == 1
