"""Worker process entry point: ``python -m prunekit_server.jobs.worker.main TASK --progress-fd N``.

Applies its resource limits first, then runs one task (an optimization or an
analysis) through the pipeline inside its working directory, and leaves in
``out/`` the result (``result.json`` / ``analysis.json``). Progress goes as JSON
lines to the given file descriptor, and so does the error a task ends with (a
last line ``{"error": {...}}``: it needs no disk).
Exit codes: 0 done, 3 a service error (bad model, bad spec...), 4 out of
memory, 5 a bug. On Linux the worker asks the kernel to SIGKILL it when the
server thread that started it dies (``PR_SET_PDEATHSIG``), so a worker never
outlives a killed server and keeps training a job another server resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ...errors import Code, ServiceError, is_disk_full, scratch_full
from ...hashing import sha256_file
from ...model_caps import ModelCaps
from .confine import confine
from .faults import EXIT_BUG, EXIT_OUT_OF_MEMORY, EXIT_SERVICE_ERROR, allocation_failure, out_of_memory
from .fence import watch_heartbeats
from .threads import configure_torch, worker_threads

if TYPE_CHECKING:
    from ...pipeline import StagedShard
    from .ranks import GroupReplicas, Ranks

WORKER_NICENESS = 10
"""Workers yield the CPU to their server: RPCs (GetJob, WatchJob, health) stay quick while jobs run."""
_PR_SET_PDEATHSIG = 1
FULL_BELOW_BYTES = 1 << 20
"""A scratch filesystem with less free space than this, after a failure, is taken as full."""


def die_with_parent(parent_pid: int) -> bool:
    """Be SIGKILLed when the parent goes (Linux ``prctl``); exit now if it already went.

    Returns False where prctl is unavailable (not Linux).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid and os.getppid() != parent_pid:
        os._exit(EXIT_BUG)
    return True


def apply_limits(limits: dict[str, int]) -> None:
    """Set soft and hard rlimits (0 = leave unlimited); the process cannot raise them again."""
    table = {
        "memory_bytes": resource.RLIMIT_AS,
        "cpu_seconds": resource.RLIMIT_CPU,
        "file_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
    }
    for name, which in table.items():
        value = int(limits.get(name, 0))
        if value > 0:
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))


class ProgressWriter:
    """Writes progress events as JSON lines; triggers an injected fault (tests only).

    ``fault`` is ``{action, stage, attempt}``: it fires on the first event of
    ``stage`` (stage "checkpoint": the first event announcing a checkpoint)
    when ``attempt`` is 0 or this worker start's number. Action "kill_rank" SIGKILLs the worker's
    other fine-tuning ranks (:meth:`.ranks.Ranks.kill`).
    """

    def __init__(
        self,
        stream: IO[str],
        fault: dict[str, Any] | None,
        attempt: int = 1,
        ranks: Ranks | None = None,
    ) -> None:
        self._stream = stream
        wanted = int((fault or {}).get("attempt", 0))
        self._fault = fault if fault and wanted in (0, attempt) else None
        self._ranks = ranks

    def fail(self, error: ServiceError) -> None:
        """Send the error the task ended with, as the last line ``{"error": {...}}``: the pipe needs no
        disk, so a worker whose scratch directory is full still says why it stopped."""
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(json.dumps({"error": error.to_dict()}) + "\n")
            self._stream.flush()

    def __call__(
        self, stage: str, fraction: float, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        event: dict[str, Any] = {"stage": stage, "fraction": max(0.0, min(1.0, fraction)), "message": message}
        if details:
            event["details"] = dict(details)
        self._stream.write(json.dumps(event) + "\n")
        self._stream.flush()
        if self._fault is None:
            return
        at = self._fault.get("stage")
        if at == stage or (at == "checkpoint" and details and "checkpoint" in details):
            action, self._fault = str(self._fault.get("action", "")), None
            _inject(action, self._ranks)


def _inject(action: str, ranks: Ranks | None) -> None:
    if action == "kill_rank":
        if ranks is not None:
            ranks.kill()
    elif action == "segfault":
        ctypes.string_at(0)
    elif action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(17)
    elif action == "hang":
        while True:
            time.sleep(1)
    elif action == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(256 << 20))


def run_task(
    task: dict[str, Any], workdir: Path, progress: ProgressWriter, replicas: GroupReplicas | None = None
) -> None:
    """Run ``task`` and write its result under ``workdir/out``; ``replicas``: the worker is rank 0 of
    the task's fine-tuning ranks (:mod:`.rank`)."""
    from google.protobuf import json_format

    from prunekit.v1 import model_pb2, spec_pb2

    out = workdir / "out"
    model_path = workdir / task["model_path"]
    model_format = int(task["model_format"])
    caps = task_caps(task)
    if task["kind"] == "analyze":
        from ...pipeline import run_analysis

        progress("analyze", 0.0, "analysing the model")
        inputs = [json_format.ParseDict(item, model_pb2.InputSpec()) for item in task.get("inputs", [])]
        analysis = run_analysis(
            model_path,
            model_format,
            inputs,
            workdir,
            sensitivity=bool(task.get("sensitivity", False)),
            sensitivity_ratios=[float(r) for r in task.get("sensitivity_ratios", [])],
            caps=caps,
        )
        (out / "analysis.json").write_text(
            json_format.MessageToJson(analysis, preserving_proto_field_name=True)
        )
        return
    from ...pipeline import JobData, run_optimization

    spec = json_format.ParseDict(task["spec"], spec_pb2.OptimizationSpec())
    data = task.get("data") or {}
    job_data = JobData(
        train=[_shard(workdir, item) for item in data.get("train", [])],
        eval=[_shard(workdir, item) for item in data.get("eval", [])],
    )
    checkpoints = workdir / str(task.get("checkpoint_dir", "checkpoints"))
    checkpoints.mkdir(parents=True, exist_ok=True)
    tables = task.get("latency_tables_dir")
    result = run_optimization(
        model_path,
        model_format,
        spec,
        workdir,
        progress,
        data=job_data,
        checkpoint_dir=checkpoints,
        latency_tables=workdir / str(tables) if tables else None,
        caps=caps,
        provenance=_provenance(task),
        replicas=replicas,
    )
    artifacts = {}
    for name, path in result.artifacts.items():
        artifacts[name] = {
            "path": str(path.resolve().relative_to(workdir.resolve())),
            "sha256": sha256_file(path),
        }
    body = {
        "report": json_format.MessageToDict(result.report, preserving_proto_field_name=True),
        "artifacts": artifacts,
    }
    (out / "result.json").write_text(json.dumps(body))


def _provenance(task: dict[str, Any]) -> Any:
    """What the server told the worker of its job, as the report's ``Provenance`` to complete."""
    from prunekit.v1 import report_pb2

    job = task.get("job") or {}
    return report_pb2.Provenance(
        job_id=str(job.get("id", "")),
        model_filename=str(job.get("model_filename", "")),
        model_sha256=str(job.get("model_sha256", "")),
        attempt=int(task.get("attempt", 0)),
    )


def task_caps(task: dict[str, Any]) -> ModelCaps:
    """The model caps of the memory the server gave this worker (``limits.budget_bytes``)."""
    budget = int(task.get("limits", {}).get("budget_bytes", 0))
    return ModelCaps(memory_bytes=budget) if budget > 0 else ModelCaps()


def task_failure(exc: BaseException, workdir: Path | None = None) -> tuple[ServiceError, int]:
    """The error a task that raised ``exc`` ends with, and the worker's exit code: an allocation that
    failed is WORKER_OUT_OF_MEMORY, a service error its own verdict, a full scratch directory
    STORAGE_FULL (see :func:`task_error`), anything else a bug (its traceback on stderr)."""
    cause = exc.__cause__ if isinstance(exc, ServiceError) else exc
    detail = allocation_failure(cause)
    if detail is not None:
        return out_of_memory(detail), EXIT_OUT_OF_MEMORY
    if isinstance(exc, ServiceError):
        return exc, EXIT_SERVICE_ERROR
    error = task_error(exc, workdir) if isinstance(exc, Exception) and workdir is not None else None
    if error is not None and error.reason == "STORAGE_FULL":
        return error, EXIT_SERVICE_ERROR
    with contextlib.suppress(OSError):  # the log lives in the working directory, maybe full
        traceback.print_exc(file=sys.stderr)
    message = f"unexpected {type(exc).__name__}: {str(exc)[:500]}"
    return ServiceError(Code.INTERNAL, "INTERNAL_ERROR", message), EXIT_BUG


def _shard(workdir: Path, item: dict[str, Any]) -> StagedShard:
    from ...pipeline import StagedShard

    return StagedShard(
        path=workdir / str(item["path"]),
        uri=str(item.get("uri", "")),
        sha256=str(item.get("sha256", "")),
    )


def task_error(exc: Exception, workdir: Path) -> ServiceError:
    """The error an unexpected exception of the task reports: a full scratch directory (an ``OSError``
    for a full disk in the chain, or a library's own error with the disk found full) is
    RESOURCE_EXHAUSTED (STORAGE_FULL); anything else a bug (INTERNAL)."""
    if is_disk_full(exc) or _nearly_full(workdir):
        return scratch_full(exc)
    return ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"unexpected {type(exc).__name__}: {str(exc)[:500]}")


def _nearly_full(path: Path) -> bool:
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES


def _ranks(ranks: object, task_path: Path) -> Ranks | None:
    """The fine-tuning group of a task's ``ranks``: a count of ranks this worker starts on its machine,
    or the rendezvous of ranks placed by Ray (:func:`.ranks.join_remote`); None for one process."""
    if isinstance(ranks, dict):
        from .ranks import join_remote

        return join_remote(ranks)
    if isinstance(ranks, int) and ranks > 1:
        from .ranks import start_ranks

        return start_ranks(task_path, ranks)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prunekit-worker")
    parser.add_argument("task", type=Path)
    parser.add_argument("--progress-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--fence-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    watch_heartbeats(args.fence_s)
    task = json.loads(args.task.read_text())
    workdir = args.task.parent
    ranks = _ranks(task.get("ranks"), args.task)
    if isinstance(task.get("sandbox"), dict):
        applied = confine(task["sandbox"], workdir)
        print(f"prunekit worker sandbox: {json.dumps(applied)}", file=sys.stderr, flush=True)
        die_with_parent(args.parent_pid)  # a changed uid clears the parent-death signal
    apply_limits(task.get("limits", {}))
    os.nice(WORKER_NICENESS)
    configure_torch(int(task.get("limits", {}).get("threads", 0)) or worker_threads())
    with os.fdopen(args.progress_fd, "w") as stream:
        progress = ProgressWriter(stream, task.get("fault"), int(task.get("attempt", 1)), ranks)
        try:
            run_task(task, workdir, progress, ranks.replicas if ranks is not None else None)
            code = 0
        except Exception as exc:
            error, code = task_failure(exc, workdir)
            progress.fail(error)
    if ranks is not None:
        ranks.release(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
