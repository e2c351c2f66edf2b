"""Run one worker process under limits and watch it.

The worker is ``python -m prunekit_server.jobs.worker.main TASK`` in a fresh
session (its own process group), with an empty scratch directory as its
home, no storage credentials in its environment, resource limits it applies
to itself before touching any model, and a wall-clock deadline enforced
here. Progress arrives as JSON lines on a dedicated pipe. The worker dies
with the thread that started it (``PR_SET_PDEATHSIG``): start workers from
long-lived threads only. Its threads match the CPUs it may use (see
:mod:`..worker.threads`). With a :class:`~.warm.WarmWorkers` the worker is
forked by the server's zygote instead (the same worker, started without
importing torch again); it then dies with the zygote, which exits with the
server process.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import prunekit
import prunekit_server

from ...config import Settings
from ...errors import Code, ServiceError
from ..worker.fence import EXIT_FENCED, Heartbeat
from ..worker.memory import worker_memory_limits
from ..worker.threads import thread_env, usable_cpus
from .warm import WORKER_MODULE, WarmProcess, WarmWorkers
from .worker_exit import outcome_error

log = logging.getLogger(__name__)

__all__ = [
    "WORKER_MODULE",
    "StopRequest",
    "WarmWorkers",
    "WorkerLimits",
    "WorkerOutcome",
    "run_worker",
    "sandbox_task",
    "worker_env",
]

ProgressCallback = Callable[[str, float, str, dict[str, Any] | None], None]
"""Called per progress line: stage, fraction, message and the line's ``details`` (or None)."""

#: Environment variables a worker inherits; everything else (credentials included) is dropped.
_INHERITED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "SYSTEMROOT",
)


@dataclass(frozen=True)
class WorkerLimits:
    """Resource limits a worker sets on itself (0 = unlimited), and the memory its model caps come from."""

    memory_bytes: int = 0
    #: The worker's memory budget: its model caps are derived from it (:mod:`...model_caps`); 0 = defaults.
    budget_bytes: int = 0
    cpu_seconds: int = 0
    file_bytes: int = 0
    open_files: int = 1024
    #: Intra-op threads of the worker's torch (0: every CPU it may use).
    threads: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerLimits:
        """The server's worker limits: memory from :func:`~..worker.memory.worker_memory_limits`, threads
        the usable CPUs shared among its workers unless set."""
        address_space, budget = worker_memory_limits(settings.worker_memory_bytes, settings.workers)
        return cls(
            memory_bytes=address_space,
            budget_bytes=budget,
            cpu_seconds=settings.worker_cpu_seconds,
            file_bytes=settings.worker_file_bytes,
            open_files=settings.worker_open_files,
            threads=settings.worker_threads or max(1, usable_cpus() // max(1, settings.workers)),
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class StopRequest:
    """Asks a running worker to stop; carries the error the job should end with."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: ServiceError | None = None

    def stop(self, error: ServiceError) -> None:
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass
class WorkerOutcome:
    """How a worker ended, and the error its job should carry (None on success)."""

    returncode: int
    error: ServiceError | None
    log_tail: str
    seconds: float


def run_worker(
    workdir: Path,
    task: dict[str, Any],
    *,
    timeout: float,
    stop: StopRequest,
    on_progress: ProgressCallback,
    poll: Callable[[], None] | None = None,
    poll_interval: float = 1.0,
    heartbeat: Heartbeat | None = None,
    fence_s: float = 0.0,
    warm: WarmWorkers | None = None,
) -> WorkerOutcome:
    """Run a worker on ``task`` in ``workdir`` until it exits, is stopped or times out.

    ``poll`` is called about every ``poll_interval`` seconds while the worker
    runs (the executor uses it to notice a cancellation made elsewhere). With
    ``heartbeat`` and ``fence_s`` > 0 the worker is fenced (see :mod:`..worker.fence`):
    it stops itself when lease renewals stop reaching it for ``fence_s`` seconds.
    With ``warm`` the worker is forked by its zygote (see :mod:`.warm`) when it can be.
    """
    fenced = heartbeat is not None and fence_s > 0
    (workdir / "out").mkdir(exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    task_path = workdir / "task.json"
    task_path.write_text(json.dumps(task))
    read_fd, write_fd = os.pipe()
    log_path = workdir / "worker.log"
    started = time.monotonic()
    last_stage = ["starting"]
    with open(log_path, "wb") as log_file:
        try:
            proc = _start(workdir, task_path, write_fd, fence_s if fenced else 0.0, log_file, warm)
        finally:
            os.close(write_fd)
    reported: list[ServiceError] = []
    reader = threading.Thread(  # in this context: its log lines name the job as this thread's do
        target=contextvars.copy_context().run,
        args=(_read_progress, read_fd, on_progress, last_stage, reported),
        name="worker-progress",
        daemon=True,
    )
    reader.start()
    timed_out = False
    next_poll = time.monotonic() + poll_interval
    try:
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if heartbeat is not None:
                heartbeat.pulse(proc.stdin)
            now = time.monotonic()
            if stop.is_set():
                _kill_group(proc)
            elif now - started > timeout:
                timed_out = True
                _kill_group(proc)
            elif poll is not None and now >= next_poll:
                next_poll = now + poll_interval
                try:
                    poll()
                except Exception:
                    log.exception("worker poll failed")
    finally:
        _kill_group(proc)
        returncode = proc.wait()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        reader.join(timeout=5)
    seconds = time.monotonic() - started
    tail = _tail(log_path)
    _relay(log_path)
    error = outcome_error(returncode, reported[-1:], stop, timed_out, timeout, last_stage[0], tail)
    if error is not None and error.code is Code.INTERNAL and returncode != EXIT_FENCED:
        log.warning("worker failed (%s): %s\n%s", returncode, error.message, tail)
    return WorkerOutcome(returncode, error, tail, seconds)


def _start(
    workdir: Path,
    task_path: Path,
    progress_fd: int,
    fence_s: float,
    log_file: IO[bytes],
    warm: WarmWorkers | None,
) -> subprocess.Popen[bytes] | WarmProcess:
    """The worker, forked by the zygote when there is one that can, else a fresh process."""
    if warm is None or not warm.enabled:
        return _spawn(workdir, task_path, progress_fd, fence_s, log_file)
    stdin_r, stdin_w = os.pipe() if fence_s > 0 else (os.open(os.devnull, os.O_RDONLY), -1)
    try:
        fds = (progress_fd, stdin_r, log_file.fileno())
        proc = warm.launch(workdir, task_path, worker_env(workdir), fds, fence_s)
    finally:
        os.close(stdin_r)
    if proc is None:
        if stdin_w >= 0:
            os.close(stdin_w)
        return _spawn(workdir, task_path, progress_fd, fence_s, log_file)
    if stdin_w >= 0:
        proc.stdin = os.fdopen(stdin_w, "wb")
    return proc


def _spawn(
    workdir: Path, task_path: Path, progress_fd: int, fence_s: float, log_file: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start the worker in a session of its own; with ``fence_s`` > 0 its stdin is the heartbeat pipe."""
    command = [sys.executable, "-m", WORKER_MODULE, str(task_path), "--progress-fd", str(progress_fd)]
    command += ["--parent-pid", str(os.getpid()), "--fence-s", str(fence_s)]
    return subprocess.Popen(
        command,
        cwd=workdir,
        env=worker_env(workdir),
        stdin=subprocess.PIPE if fence_s > 0 else subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        pass_fds=(progress_fd,),
        start_new_session=True,
    )


def sandbox_task(settings: Settings, store_uri: str) -> dict[str, Any] | None:
    """The task's ``sandbox`` entry (see :mod:`..worker.confine`): the uid/gid to drop to and the file
    store's root to hide; None with ``worker_sandbox`` off."""
    if not settings.worker_sandbox:
        return None
    hide = [store_uri.removeprefix("file://")] if store_uri.startswith("file://") else []
    return {"uid": settings.worker_uid, "gid": settings.worker_gid, "hide": hide}


def worker_env(workdir: Path) -> dict[str, str]:
    """A worker's environment: the allow-list, its paths and thread settings (:mod:`..worker.threads`)."""
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    roots = {
        str(Path(prunekit_server.__file__).resolve().parent.parent),
        str(Path(prunekit.__file__).resolve().parent.parent),
    }
    env["PYTHONPATH"] = os.pathsep.join(sorted(roots))
    env["HOME"] = str(workdir)
    env["TMPDIR"] = str(workdir / "tmp")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(thread_env(os.environ))
    return env


def _read_progress(
    fd: int, on_progress: ProgressCallback, last_stage: list[str], reported: list[ServiceError]
) -> None:
    """Hand each progress line to ``on_progress``; an ``{"error": {...}}`` line goes to ``reported``."""
    with os.fdopen(fd, "rb") as pipe:
        for line in pipe:
            try:
                event = json.loads(line)
                if isinstance(event, dict) and isinstance(event.get("error"), dict):
                    reported.append(ServiceError.from_dict(event["error"]))
                    continue
                stage, fraction, message = (
                    str(event["stage"]),
                    float(event["fraction"]),
                    str(event["message"]),
                )
                details = event.get("details")
                if not isinstance(details, dict):
                    details = None
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            last_stage[0] = stage
            try:
                on_progress(stage, fraction, message, details)
            except Exception:
                log.exception("progress callback failed")


def _relay(path: Path, limit: int = 2000) -> None:
    """The worker's own output, a log line each (logger ``prunekit_server.worker``), in the caller's
    log context: a job's lines name the job. At most ``limit`` lines; beyond, one line says how many."""
    worker_log = logging.getLogger("prunekit_server.worker")
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return
    for line in lines[:limit]:
        if line.strip():
            worker_log.info("%s", line)
    if len(lines) > limit:
        worker_log.info("... %d more lines of the worker's output not relayed", len(lines) - limit)


def _kill_group(proc: subprocess.Popen[bytes] | WarmProcess) -> None:
    if isinstance(proc, WarmProcess):
        proc.kill()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")
