"""``prunekit-server``: run the service until SIGTERM or SIGINT, then drain and stop."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .config import EXECUTORS, Settings
from .observability.logs import FORMATS, configure_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prunekit-server",
        description="The prunekit gRPC service. Options also read PRUNEKIT_<OPTION> from the environment.",
    )
    parser.add_argument("--host", help="address to listen on (PRUNEKIT_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port, 0 for any free one (PRUNEKIT_PORT, default 50051)")
    parser.add_argument(
        "--storage",
        help="file:///dir, a directory, or s3://bucket/prefix (PRUNEKIT_STORAGE, default ./.prunekit-data)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="what runs jobs: local worker processes or the Ray cluster at RAY_ADDRESS (PRUNEKIT_EXECUTOR)",
    )
    parser.add_argument("--workers", type=int, help="concurrent job workers (PRUNEKIT_WORKERS, default 2)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (PRUNEKIT_LOG_LEVEL, default INFO)")
    parser.add_argument(
        "--log-format", choices=FORMATS, help="text or json lines (PRUNEKIT_LOG_FORMAT, default text)"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port, 0 any, -1 none (PRUNEKIT_METRICS_PORT)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env(
            host=args.host,
            port=args.port,
            storage=args.storage,
            executor=args.executor,
            workers=args.workers,
            log_level=args.log_level,
            log_format=args.log_format,
            metrics_port=args.metrics_port,
        )
        configure_logging(settings.log_level, settings.log_format)
    except ValueError as exc:
        print(f"prunekit-server: {exc}", file=sys.stderr)
        return 2
    try:
        from .server import start_server

        running = start_server(settings)
    except ImportError as exc:
        print(
            f"prunekit-server: missing server dependencies ({exc}); pip install 'prunekit[server]'",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        print(f"prunekit-server: cannot start: {exc}", file=sys.stderr)
        return 1
    print(f"prunekit-server listening on {settings.host}:{running.port}", flush=True)
    if running.metrics is not None:
        print(f"prunekit-server metrics on http://{settings.host}:{running.metrics.port}/metrics", flush=True)
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop_requested.wait(0.5):
        pass
    running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
