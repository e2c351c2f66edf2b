"""``python -m prunekit_server.healthcheck [HOST:PORT]``: exit 0 when the server reports SERVING.

For container HEALTHCHECKs and exec probes; the target defaults to ``127.0.0.1:$PRUNEKIT_HEALTH_PORT``
(the plaintext health port) when that is set and not -1, else ``127.0.0.1:$PRUNEKIT_PORT`` (50051).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, timeout: float = 3.0) -> bool:
    """Whether the gRPC health service at ``target`` answers SERVING for the whole server."""
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    health_port = os.environ.get("PRUNEKIT_HEALTH_PORT", "-1") or "-1"
    port = os.environ.get("PRUNEKIT_PORT", "50051") if health_port.strip() == "-1" else health_port
    target = args[0] if args else f"127.0.0.1:{port}"
    return 0 if check(target) else 1


if __name__ == "__main__":
    sys.exit(main())
