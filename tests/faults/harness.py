"""Driving a real ``prunekit-server`` process through faults, and checking what each fault left.

``PRUNEKIT_FAULT_OUTAGE_S`` sets how long storage stays down: a few seconds in ``make test``, 60 s in
``make soak``. Servers get retry budgets and leases sized from it, so each test means the same at
either length.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.errors import ServiceError
from prunekit_server.jobs.execution.sandbox import WORKER_MODULE
from prunekit_server.jobs.execution.warm import ZYGOTE_MODULE

from ..service.api.conftest import status_error
from ..service.api.jobflow import TERMINAL
from ..service.server_process import ServerProcess, server_process

OUTAGE_S = float(os.environ.get("PRUNEKIT_FAULT_OUTAGE_S", "3"))
"""How long storage stays down in these tests."""
BUDGET_S = 2 * OUTAGE_S + 10
"""A storage retry budget that outlasts one outage with room to spare."""
QUICK_ENV = {
    "PRUNEKIT_WORKERS": "1",
    "PRUNEKIT_WORKER_MEMORY_BYTES": "0",
    "PRUNEKIT_PROGRESS_INTERVAL_S": "0.1",
    "PRUNEKIT_WATCH_POLL_S": "0.1",
    "PRUNEKIT_SHUTDOWN_GRACE_S": "5",
    "PRUNEKIT_STORAGE_RETRY_S": str(BUDGET_S),
    "AWS_MAX_ATTEMPTS": "2",  # botocore's own retries end well within an outage: the server's must act
}
_OUTAGE_LINE = re.compile(r"object storage unavailable: ")


@dataclass
class Faulty:
    """A running server process under test, its stub and where its log and scratch directories are."""

    process: ServerProcess
    stub: pb_grpc.OptimizerServiceStub
    channel: grpc.Channel
    log: Path
    scratch: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def outage_lines(self) -> int:
        """How many times the server logged that object storage stopped answering."""
        return len(_OUTAGE_LINE.findall(self.log_text()))


@contextmanager
def faulty_server(storage: str, tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[Faulty]:
    """A server process over ``storage`` with a scratch directory of its own under ``tmp_path``.

    On exit the server gets SIGTERM, and then nothing of it may be left: no worker or zygote
    process, no job's scratch directory (checked by :func:`assert_nothing_left`).
    """
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    log = tmp_path / "server.log"
    full_env = {**QUICK_ENV, "PRUNEKIT_SCRATCH_DIR": str(scratch), **(env or {})}
    with server_process(storage, extra_env=full_env, log=log) as process:
        with grpc.insecure_channel(process.target) as channel:
            yield Faulty(process, pb_grpc.OptimizerServiceStub(channel), channel, log, scratch)
        family = descendants(process.proc.pid)
        process.proc.send_signal(signal.SIGTERM)
        process.proc.wait(timeout=120)
    assert_nothing_left(family, scratch)


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (workers, the zygote and its children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive_workers(pids: set[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in "ZX" and (WORKER_MODULE.encode() in command or ZYGOTE_MODULE.encode() in command):
            alive.append(pid)
    return alive


def assert_nothing_left(family: set[int], scratch: Path, timeout: float = 20) -> None:
    """No worker or zygote of the stopped server still runs, and its scratch directory holds no job's
    working directory (nor an analysis's, nor an upload being received)."""
    deadline = time.monotonic() + timeout
    while _alive_workers(family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive_workers(family) == [], "worker processes outlived their server"
    left = sorted(p.name for p in scratch.iterdir() if p.name.startswith("prunekit-"))
    assert left == [], f"scratch directories left behind: {left}"


def wait_for(condition: Callable[[], object], timeout: float = 60) -> object:
    """Poll ``condition()`` until it is truthy or ``timeout`` s passed; its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def poll_job(stub: pb_grpc.OptimizerServiceStub, job_id: str, timeout: float = 300) -> job_pb2.Job:
    """GetJob until the job ends; GetJob answering UNAVAILABLE (storage down) is waited out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job
            if job.state in TERMINAL:
                return job
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, f"job {job_id} did not end within {timeout} s"
        time.sleep(0.2)


def wait_stage(
    stub: pb_grpc.OptimizerServiceStub, job_id: str, reached: Callable[[job_pb2.Job], bool]
) -> job_pb2.Job:
    """GetJob until ``reached(job)``; fails if the job ends first."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job
        if reached(job):
            return job
        assert job.state not in TERMINAL, f"the job ended first: {job}"
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached the awaited point")


@dataclass
class Prober:
    """Asks the server for its health and a job's record every ``interval`` s on a thread of its own:
    whatever storage does, each call must answer (OK, or UNAVAILABLE STORAGE_UNAVAILABLE for GetJob)
    within ``bound_s``."""

    target: str
    job_id: str
    bound_s: float = 30.0
    interval: float = 0.25
    answers: list[tuple[str, str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.bound_s * 3)

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = pb_grpc.OptimizerServiceStub(channel)
            while not self._stop.wait(self.interval):
                started = time.monotonic()
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=self.bound_s)
                self.answers.append(("health", str(reply.status), time.monotonic() - started))
                started = time.monotonic()
                try:
                    stub.GetJob(pb.GetJobRequest(job_id=self.job_id), timeout=self.bound_s)
                    outcome = "OK"
                except grpc.RpcError as exc:
                    error: ServiceError = status_error(exc)
                    outcome = f"{error.code.name} {error.reason}"
                self.answers.append(("GetJob", outcome, time.monotonic() - started))

    def check(self) -> str:
        """Assert every answer came, in time, with an allowed outcome; a one-line summary."""
        assert self.answers, "the server was never asked"
        outcomes = {(kind, outcome) for kind, outcome, _ in self.answers}
        allowed = {("GetJob", "OK"), ("GetJob", "UNAVAILABLE STORAGE_UNAVAILABLE")}
        allowed |= {("health", str(s)) for s in (1, 2)}  # SERVING, or NOT_SERVING while storage is down
        assert outcomes <= allowed, outcomes - allowed
        slowest = max(seconds for _, _, seconds in self.answers)
        assert slowest < self.bound_s
        unavailable = sum(1 for _, outcome, _ in self.answers if outcome.startswith("UNAVAILABLE"))
        return f"{len(self.answers)} probes, slowest {slowest:.2f} s, {unavailable} GetJob UNAVAILABLE"
