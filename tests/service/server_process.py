"""Starting ``prunekit-server`` as a real child process for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prunekit_server.jobs.execution.sandbox import WORKER_MODULE

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    target: str

    def health(self) -> int:
        with grpc.insecure_channel(self.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return int(reply.status)

    def worker_pids(self, job_id: str) -> list[int]:
        """Live worker processes running ``job_id`` (found by their working directory)."""
        return worker_pids(job_id)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def worker_pids(job_id: str) -> list[int]:
    """Worker processes (any server's) whose working directory belongs to ``job_id``; zombies excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if WORKER_MODULE.encode() in command and f"prunekit-{job_id}-" in cwd and state not in "ZX":
            found.append(int(entry.name))
    return found


@contextmanager
def server_process(
    storage: str,
    *,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
    log: Path | None = None,
) -> Iterator[ServerProcess]:
    """A server process on a free port over ``storage``; killed if still running at the end.

    Its log (stderr) goes to ``log`` when given, else nowhere.
    """
    env = {**os.environ, "PRUNEKIT_ENABLE_TEST_HOOKS": "1", "PRUNEKIT_AUTH": "none", **(extra_env or {})}
    command = [
        sys.executable,
        "-m",
        "prunekit_server.main",
        "--port",
        "0",
        "--storage",
        storage,
        *(args or []),
    ]
    stderr = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = _LISTENING.search(line)
        assert match, f"server did not start: {line!r}"
        assert time.monotonic() < deadline
        yield ServerProcess(proc, f"127.0.0.1:{match.group(2)}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        if log is not None and not isinstance(stderr, int):
            stderr.close()
