"""Warm workers: one pre-started zygote per server forks each task's worker (see :mod:`..worker.zygote`).

:class:`WarmWorkers` starts the zygote in the sandbox's environment and
hands it tasks over a ``SOCK_SEQPACKET`` socket pair, with the worker's file
descriptors attached (``SCM_RIGHTS``). :meth:`WarmWorkers.launch` answers a
:class:`WarmProcess` once the zygote reports the child's pid, or None when
no zygote can take the task (the sandbox then starts a fresh worker). A
zygote that died is started again on the next task; one that cannot fork
safely, or keeps dying before answering, turns warm workers off for good.
The zygote exits when this process closes its end of the socket (or dies).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

ZYGOTE_MODULE = "prunekit_server.jobs.worker.zygote"
WORKER_MODULE = "prunekit_server.jobs.worker.main"
"""The worker's entry point: ``python -m WORKER_MODULE TASK ...``, or the zygote's forked children."""
_EXIT_NOT_FORK_SAFE = 7  # worker.zygote.EXIT_NOT_FORK_SAFE (not imported: the server loads no worker code)
_MAX_FAILURES = 3


class WarmProcess:
    """A worker forked by the zygote, with the bits of :class:`subprocess.Popen` the sandbox uses."""

    def __init__(
        self, pid: int, reply: socket.socket, stdin: IO[bytes] | None, on_lost: Callable[[], None]
    ) -> None:
        self.pid = pid
        self.stdin = stdin
        self.returncode: int | None = None
        self._reply = reply
        self._on_lost = on_lost

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: the signal); raises TimeoutExpired after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._reply], [], [], left)[0]:
                raise subprocess.TimeoutExpired(ZYGOTE_MODULE, timeout or 0.0)
            try:
                data = self._reply.recv(4096)
            except OSError:
                data = b""
            if not data:  # the zygote died: its children got SIGKILL (PR_SET_PDEATHSIG)
                self.returncode = -signal.SIGKILL
                self._on_lost()
            else:
                body = json.loads(data)
                if "exit" in body:
                    self.returncode = int(body["exit"])
        self._reply.close()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the worker's process group (it leads a session of its own), or the worker itself when it
        has not called ``setsid`` yet; nothing once its exit was reported (its pid may be reused)."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


class WarmWorkers:
    """The zygote of one server: started by :meth:`start`, stopped by :meth:`close`."""

    def __init__(self, env_for: Callable[[Path], dict[str, str]], scratch: Path | None = None) -> None:
        self._env_for = env_for
        self._scratch = scratch
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._home: Path | None = None
        self._failures = 0
        self.enabled = True

    @property
    def pid(self) -> int | None:
        """The zygote's pid, None when none runs."""
        with self._lock:
            return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        """Start the zygote now (it imports in the background); a task sent meanwhile waits for it."""
        with self._lock:
            self._ensure()

    def launch(
        self,
        workdir: Path,
        task_path: Path,
        env: dict[str, str],
        fds: tuple[int, int, int],
        fence_s: float,
        start_timeout: float = 120.0,
    ) -> WarmProcess | None:
        """Have the zygote fork a worker for ``task_path``; None when it cannot.

        ``fds`` are the progress pipe's write end, the worker's stdin and its
        log file; the caller keeps and closes them. Waits for the child's pid.
        """
        request = {"task": str(task_path), "cwd": str(workdir), "env": env, "fence_s": fence_s}
        for _ in range(2):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with ours, theirs:
                zygote = self._send(json.dumps(request).encode(), [theirs.fileno(), *fds])
                if zygote is None:
                    return None
                theirs.close()
                answer = _await_answer(ours, start_timeout)
                if isinstance(answer.get("pid"), int):
                    with self._lock:
                        self._failures = 0
                    on_lost = partial(self._lost, zygote, died=True)
                    return WarmProcess(int(answer["pid"]), ours.dup(), None, on_lost)
            died = answer.get("eof") is True
            self._lost(zygote, fork_safe=answer.get("error") != "not fork-safe", died=died)
            if self.pid is not None:  # alive but unable (or too slow) to start it: a fresh worker instead
                return None
        return None

    def _send(self, message: bytes, fds: list[int]) -> int | None:
        """Send a request to the zygote (started if none runs); its pid, or None when it cannot take it."""
        with self._lock:
            control = self._ensure()
            if control is None or self._proc is None:
                return None
            try:
                socket.send_fds(control, [message], fds)
                return self._proc.pid
            except OSError:
                self._stop_locked()
                return None

    def _lost(self, zygote: int, fork_safe: bool = True, died: bool = False) -> None:
        """Zygote ``zygote`` could not start a task, or ``died``: count it; replace it when dead."""
        with self._lock:
            if self._proc is None or self._proc.pid != zygote:
                return  # already replaced (its other workers saw it die too)
            self._failures += 1
            if died:  # its sockets close before it can be reaped
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
            dead = self._proc.poll() is not None
            if not fork_safe or (self._proc is not None and self._proc.poll() == _EXIT_NOT_FORK_SAFE):
                log.warning("the warm worker cannot fork safely; a fresh worker per task from now on")
                self.enabled = False
            elif self._failures >= _MAX_FAILURES and self.enabled:
                log.warning(
                    "the warm worker failed %d times running; a fresh worker per task", self._failures
                )
                self.enabled = False
            if dead:
                self._stop_locked()
                self._ensure()

    def _ensure(self) -> socket.socket | None:
        if not self.enabled:
            return None
        if self._proc is not None and self._proc.poll() is None and self._control is not None:
            return self._control
        self._stop_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._home = Path(tempfile.mkdtemp(prefix="prunekit-zygote-", dir=self._scratch))
        (self._home / "tmp").mkdir()
        env = self._env_for(self._home)
        env["OPENBLAS_NUM_THREADS"] = "1"  # OpenBLAS starts its threads when loaded; the zygote runs none
        with theirs:
            self._proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", ZYGOTE_MODULE, "--control-fd", str(theirs.fileno())),
                    *("--worker-module", WORKER_MODULE),
                ],
                cwd=self._home,
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        self._control = ours
        log.info("warm worker started (pid %d)", self._proc.pid)
        return ours

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()  # EOF: the zygote kills its workers and exits
            self._control = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            self._proc = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def close(self) -> None:
        """Stop the zygote (and any worker it still runs); no more warm tasks."""
        with self._lock:
            self.enabled = False
            self._stop_locked()


def _await_answer(reply: socket.socket, timeout: float) -> dict[str, Any]:
    """The zygote's first answer (``{"pid": P}`` or ``{"error": ...}``); ``{"eof": True}`` when it
    died, empty on a timeout."""
    if not select.select([reply], [], [], timeout)[0]:
        return {}
    try:
        body = json.loads(reply.recv(4096) or b'{"eof": true}')
    except (OSError, ValueError):
        return {"eof": True}
    return body if isinstance(body, dict) else {}
