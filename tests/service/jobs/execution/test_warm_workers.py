"""Warm workers: forked by the zygote, each is the worker a fresh process would be."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prunekit.v1 import model_pb2
from prunekit_server.errors import Code, ServiceError
from prunekit_server.jobs.execution.sandbox import StopRequest, WorkerOutcome, run_worker, worker_env
from prunekit_server.jobs.execution.warm import WarmProcess, WarmWorkers
from prunekit_server.jobs.worker.fence import EXIT_FENCED, Heartbeat
from tests.samples import write_sample_model

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux only")


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmWorkers]:
    workers = WarmWorkers(worker_env, tmp_path_factory.mktemp("zygote"))
    workers.start()
    yield workers
    workers.close()


def _task(workdir: Path, fault: dict[str, Any] | None = None, **limits: int) -> dict[str, Any]:
    write_sample_model(workdir / "model.onnx", "onnx", "mlp")
    task: dict[str, Any] = {
        "kind": "analyze",
        "model_path": "model.onnx",
        "model_format": model_pb2.MODEL_FORMAT_ONNX,
        "limits": {"open_files": 1024, **limits},
    }
    if fault is not None:
        task["fault"] = {**fault, "attempt": 0}
    return task


def _run(warm: WarmWorkers, workdir: Path, task: dict[str, Any], **kwargs: Any) -> WorkerOutcome:
    kwargs.setdefault("stop", StopRequest())
    kwargs.setdefault("on_progress", lambda *_: None)
    return run_worker(workdir, task, timeout=kwargs.pop("timeout", 120.0), warm=warm, **kwargs)


def _launch(warm: WarmWorkers, workdir: Path, task: dict[str, Any]) -> tuple[WarmProcess, int]:
    """A hanging worker started through the zygote directly; returns it and its progress pipe."""
    import json

    (workdir / "out").mkdir()
    (workdir / "task.json").write_text(json.dumps(task))
    read_fd, write_fd = os.pipe()
    stdin = os.open(os.devnull, os.O_RDONLY)
    with open(workdir / "worker.log", "wb") as log:
        proc = warm.launch(
            workdir, workdir / "task.json", worker_env(workdir), (write_fd, stdin, log.fileno()), 0
        )
    os.close(write_fd)
    os.close(stdin)
    assert proc is not None
    return proc, read_fd


def _wait_for_stage(read_fd: int, stage: str) -> None:
    with os.fdopen(read_fd, "rb") as pipe:
        for line in pipe:
            if json_stage(line) == stage:
                return
    raise AssertionError(f"no {stage!r} progress")


def json_stage(line: bytes) -> str:
    import json

    return str(json.loads(line)["stage"])


def test_an_analysis_runs_in_a_forked_worker(warm: WarmWorkers, tmp_path: Path) -> None:
    outcome = _run(warm, tmp_path, _task(tmp_path))
    assert outcome.error is None, outcome.log_tail
    assert (tmp_path / "out" / "analysis.json").exists()
    assert warm.enabled
    assert warm.pid is not None


def test_the_child_is_a_sandboxed_worker(
    warm: WarmWorkers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-workers")
    task = _task(tmp_path, {"action": "hang", "stage": "analyze"}, memory_bytes=6 << 30, cpu_seconds=600)
    proc, progress = _launch(warm, tmp_path, task)
    try:
        _wait_for_stage(progress, "analyze")
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert any(
            line.startswith("Max address space") and str(6 << 30) in line for line in limits.splitlines()
        )
        assert any(line.startswith("Max cpu time") and "600" in line for line in limits.splitlines())
        assert os.getsid(proc.pid) == proc.pid
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        assert int(_status(proc.pid)["PPid"]) == warm.pid
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")  # as the zygote started
        assert not any(item.startswith(b"AWS_SECRET_ACCESS_KEY=") for item in environ)
        assert any(item.startswith(b"OMP_NUM_THREADS=") for item in environ)
        assert os.readlink(f"/proc/{proc.pid}/cwd") == str(tmp_path)
    finally:
        proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_a_sigkilled_child_is_a_crashed_worker(warm: WarmWorkers, tmp_path: Path) -> None:
    outcome = _run(warm, tmp_path, _task(tmp_path, {"action": "sigkill", "stage": "analyze"}))
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.error is not None
    assert outcome.error.reason == "WORKER_CRASHED"
    assert outcome.error.metadata["signal"] == "SIGKILL"


def test_a_service_error_and_its_exit_code_come_back(warm: WarmWorkers, tmp_path: Path) -> None:
    task = _task(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    outcome = _run(warm, tmp_path, task)
    assert outcome.returncode == 3
    assert outcome.error is not None
    assert outcome.error.reason != "WORKER_CRASHED"


def test_stopping_kills_the_child(warm: WarmWorkers, tmp_path: Path) -> None:
    stop = StopRequest()
    cancelled = ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled")

    def on_progress(stage: str, *_: Any) -> None:
        if stage == "analyze":
            stop.stop(cancelled)

    started = time.monotonic()
    task = _task(tmp_path, {"action": "hang", "stage": "analyze"})
    outcome = _run(warm, tmp_path, task, stop=stop, on_progress=on_progress)
    assert outcome.error is cancelled
    assert outcome.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 60


def test_a_worker_without_heartbeats_is_fenced(warm: WarmWorkers, tmp_path: Path) -> None:
    task = _task(tmp_path, {"action": "hang", "stage": "analyze"})
    outcome = _run(warm, tmp_path, task, heartbeat=Heartbeat(lambda: None), fence_s=1.0)
    assert outcome.returncode == EXIT_FENCED
    assert outcome.error is not None
    assert outcome.error.metadata["exit_code"] == str(EXIT_FENCED)


def test_a_dead_zygote_takes_its_workers_and_is_replaced(tmp_path: Path) -> None:
    warm = WarmWorkers(worker_env, tmp_path / "zygote-home")
    (tmp_path / "zygote-home").mkdir()
    try:
        running = []
        for name in ("a", "b", "c"):
            (tmp_path / name).mkdir()
            task = _task(tmp_path / name, {"action": "hang", "stage": "analyze"})
            proc, progress = _launch(warm, tmp_path / name, task)
            _wait_for_stage(progress, "analyze")
            running.append(proc)
        zygote = warm.pid
        assert zygote is not None
        os.kill(zygote, signal.SIGKILL)
        for proc in running:
            assert proc.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while any(_alive(proc.pid) for proc in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(proc.pid) for proc in running), "a worker outlived its zygote"
        (tmp_path / "d").mkdir()
        outcome = _run(warm, tmp_path / "d", _task(tmp_path / "d"))
        assert outcome.error is None, outcome.log_tail
        assert warm.enabled, "one zygote's death counted once, not once per worker"
        assert warm.pid not in (None, zygote)
    finally:
        warm.close()


def _alive(pid: int) -> bool:
    try:
        return _status(pid)["State"][0] not in "ZX"
    except OSError:
        return False


def test_closing_falls_back_to_fresh_workers(tmp_path: Path) -> None:
    warm = WarmWorkers(worker_env, tmp_path)
    warm.close()
    (tmp_path / "w").mkdir()
    outcome = _run(warm, tmp_path / "w", _task(tmp_path / "w"))
    assert outcome.error is None, outcome.log_tail
    assert warm.pid is None
