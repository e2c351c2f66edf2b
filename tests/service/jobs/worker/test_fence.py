"""Fencing: a worker process stops itself when lease renewals stop reaching it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from prunekit_server.errors import Code, ServiceError
from prunekit_server.jobs.worker.faults import is_fenced, is_retryable
from prunekit_server.jobs.worker.fence import EXIT_FENCED, Heartbeat

_CHILD = """
import sys, time
from prunekit_server.jobs.worker.fence import watch_heartbeats
watch_heartbeats(float(sys.argv[1]))
print("watching", flush=True)
time.sleep(30)
"""


def _child(fence_s: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(fence_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"watching\n"
    return proc


def test_a_worker_without_heartbeats_stops_itself_within_the_fence() -> None:
    proc = _child(0.5)
    started = time.monotonic()
    assert proc.wait(timeout=10) == EXIT_FENCED
    assert time.monotonic() - started < 3.0
    assert proc.stderr is not None
    assert b"no lease renewal" in proc.stderr.read()


def test_heartbeats_keep_a_worker_running_and_eof_stops_it_at_once() -> None:
    proc = _child(0.5)
    beat = Heartbeat(time.monotonic)
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        beat.pulse(proc.stdin)
        time.sleep(0.1)
    assert proc.poll() is None, "the worker stopped although renewals kept coming"
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=5) == EXIT_FENCED
    assert proc.stderr is not None
    assert b"closed the heartbeat pipe" in proc.stderr.read()


def test_heartbeat_writes_once_per_renewal_and_never_for_a_job_not_held() -> None:
    read_end, write_end = os.pipe()
    stamps: list[float | None] = [None, 1.0, 1.0, 2.0, None]
    beat = Heartbeat(lambda: stamps.pop(0))
    with open(write_end, "wb") as stream:
        for _ in range(5):
            beat.pulse(stream)
    with open(read_end, "rb") as source:
        assert source.read() == b"1.000000\n2.000000\n"


def test_a_starved_worker_drains_the_heartbeats_that_waited_before_it_judges() -> None:
    """A worker stopped (no CPU) longer than the fence, while renewals went on, keeps running."""
    proc = _child(1.0)
    beat = Heartbeat(time.monotonic)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            beat.pulse(proc.stdin)
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        beat.pulse(proc.stdin)
        time.sleep(0.1)
    assert proc.poll() is None, "the worker stopped although every renewal reached its pipe"
    proc.kill()
    proc.wait(timeout=5)


def test_heartbeats_of_old_renewals_do_not_keep_a_worker_running() -> None:
    """The fence follows the renewals' age, not the arrival of bytes: the lease is at risk."""
    proc = _child(0.5)
    stale = [time.monotonic() - 10.0]
    beat = Heartbeat(lambda: stale[0])
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < 10:
        stale[0] += 0.01
        beat.pulse(proc.stdin)
        time.sleep(0.05)
    assert proc.wait(timeout=5) == EXIT_FENCED
    assert time.monotonic() - started < 5.0


def test_a_fenced_worker_is_an_infrastructure_stop_at_any_stage_not_a_charged_crash() -> None:
    def fenced(stage: str) -> ServiceError:
        meta = {"stage": stage, "exit_code": str(EXIT_FENCED)}
        return ServiceError(Code.INTERNAL, "WORKER_CRASHED", "fenced", metadata=meta)

    assert is_fenced(fenced("finetune"))
    assert is_fenced(fenced("ingest"))
    assert not is_retryable(fenced("finetune"))
    crashed = ServiceError(
        Code.INTERNAL, "WORKER_CRASHED", "died", metadata={"stage": "finetune", "exit_code": "1"}
    )
    assert not is_fenced(crashed)
