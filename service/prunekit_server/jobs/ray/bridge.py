"""The front door's side of its Ray driver process (:mod:`.driver`): started, watched, restarted.

:class:`RayBridge` keeps one driver running on a thread of its own: it starts it, waits for it to
connect (for as long as that takes), then pings it every ``probe_s`` seconds. A driver that does not
answer within ``probe_s`` (at least :data:`MIN_ANSWER_S`), or that died, is killed and started again;
``on_change(reachable)`` is called each time the verdict changes. Requests go one at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import IO, Any

from ...config import Settings
from ...errors import Code, ServiceError

log = logging.getLogger(__name__)

DRIVER_MODULE = "prunekit_server.jobs.ray.driver"
#: The least time a request is given to be answered, seconds.
MIN_ANSWER_S = 5.0


def ray_unavailable(message: str, retry_after_s: float) -> ServiceError:
    """UNAVAILABLE RAY_UNAVAILABLE, with when to retry."""
    return ServiceError(
        Code.UNAVAILABLE,
        "RAY_UNAVAILABLE",
        f"the Ray cluster that runs this server's jobs does not answer ({message}); retry later",
        retry_after_s=retry_after_s,
    )


class RayBridge:
    """This server's Ray driver process, connected to ``address``."""

    def __init__(
        self, address: str, settings: Settings, on_change: Callable[[bool], None], probe_s: float
    ) -> None:
        self._address = address
        self._settings = settings
        self._on_change = on_change
        self._probe_s = probe_s if probe_s > 0 else 5.0
        self._answer_s = max(MIN_ANSWER_S, self._probe_s)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._ready = False
        self._why = "not connected yet"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="ray-bridge", daemon=True)

    @property
    def reachable(self) -> bool:
        """Whether the driver is connected and answered its last ping."""
        return self._ready

    def unavailable(self) -> ServiceError:
        """The error for a request made while the cluster is not reachable."""
        return ray_unavailable(self._why, self._answer_s)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching and end the driver (the jobs it submitted run on)."""
        self._stopping.set()
        self._thread.join(timeout=10)
        with self._lock:
            self._kill()

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Ask the driver; its answer, or RAY_UNAVAILABLE when it is not connected or does not answer
        in time (it is then started again). A request the driver tried and Ray refused raises
        RAY_UNAVAILABLE too, with Ray's message."""
        with self._lock:
            proc = self._proc
            if not self._ready or proc is None:
                raise self.unavailable()
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
                proc.stdin.flush()
                answer = _read_line(proc.stdout, self._answer_s)
            except OSError as exc:
                answer = None
                self._why = f"its driver is gone: {exc}"
            if answer is None:
                self._lost(f"its driver did not answer {op!r} within {self._answer_s:g} s")
                raise self.unavailable()
        reply = _parsed(answer)
        if not reply.get("ok"):
            raise ray_unavailable(str(reply.get("error", "")), self._answer_s)
        return dict(reply)

    def _keep(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self._ready:
                    self._connect()
                    continue
                if self._stopping.wait(self._probe_s):
                    return
                try:
                    self.request("ping")
                except ServiceError as exc:  # not answered: already lost; answered with an error: lost now
                    with self._lock:
                        if self._ready:
                            self._lost(f"its driver's ping failed: {exc.message}")
            except Exception:
                log.exception("Ray driver watch failed; starting the driver again")
                with self._lock:
                    self._lost("the driver watch failed")
                self._stopping.wait(self._probe_s)

    def _connect(self) -> None:
        """Start a driver and wait until it connected, the server stops, or it died (then wait a while)."""
        config = {"address": self._address, "settings": asdict(self._settings)}
        command = [sys.executable, "-m", DRIVER_MODULE, str(os.getpid())]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None
        assert proc.stdout is not None
        with self._lock:
            self._proc = proc
        try:
            proc.stdin.write(json.dumps(config) + "\n")
            proc.stdin.flush()
        except OSError:
            pass
        while not self._stopping.is_set():
            line = _read_line(proc.stdout, 0.5)
            if line is not None and _parsed(line).get("ready"):
                with self._lock:
                    self._ready = True
                log.info("connected to the Ray cluster at %s", self._address)
                self._on_change(True)
                return
            if proc.poll() is not None:
                with self._lock:
                    self._why = f"its driver exited with code {proc.returncode}"
                    self._kill()
                self._stopping.wait(self._probe_s)
                return

    def _lost(self, why: str) -> None:
        """Called under the lock: the driver is killed and the cluster reported unreachable."""
        was = self._ready
        self._why = why
        self._kill()
        if was:
            log.warning("the Ray cluster at %s is unreachable: %s", self._address, why)
            self._on_change(False)

    def _kill(self) -> None:
        self._ready = False
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()


def _parsed(line: str) -> dict[str, Any]:
    """A JSON object line of the driver; {} for anything else."""
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _read_line(stream: IO[str], timeout: float) -> str | None:
    """One line from ``stream`` within ``timeout`` seconds; None when none came or the stream ended."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        readable, _, _ = select.select([stream], [], [], left)
        if readable:
            line = stream.readline()
            return line if line else None
