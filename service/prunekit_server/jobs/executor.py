"""Runs jobs and analyses in sandboxed worker processes.

A bounded queue feeds ``workers`` dispatcher threads; each runs one job at a
time in its own worker process (see :mod:`.sandbox`) and publishes the
results: artifacts first, the manifest last, then the SUCCEEDED record.
Analyses run on as many slots of their own, synchronously for the caller.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from prunekit.v1 import job_pb2, model_pb2, report_pb2

from ..config import Settings
from ..errors import Code, ServiceError
from ..hashing import sha256_file
from . import record
from .sandbox import StopRequest, WorkerLimits, run_worker
from .store import JobStore, storage_errors

log = logging.getLogger(__name__)

#: Label that injects a worker fault, honoured only with ``enable_test_hooks``: "ACTION@STAGE".
FAULT_LABEL = "prunekit.dev/test-fault"
_MODEL_SUFFIX = {model_pb2.MODEL_FORMAT_ONNX: ".onnx", model_pb2.MODEL_FORMAT_TORCHSCRIPT: ".pt"}
_MAX_RESULT_BYTES = 64 << 20


def _shutting_down() -> ServiceError:
    return ServiceError(
        Code.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "the server is shutting down; retry on another"
    )


class JobExecutor:
    """The worker pool of one server process."""

    def __init__(self, jobs: JobStore, settings: Settings) -> None:
        self._jobs = jobs
        self._settings = settings
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._outstanding = 0
        self._accepting = True
        self._running: dict[str, StopRequest] = {}
        self._analysis_slots = threading.BoundedSemaphore(max(1, settings.workers))
        self._threads = [
            threading.Thread(target=self._dispatch, name=f"job-worker-{i}", daemon=True)
            for i in range(max(1, settings.workers))
        ]
        self._limits = WorkerLimits(
            memory_bytes=settings.worker_memory_bytes,
            cpu_seconds=settings.worker_cpu_seconds,
            file_bytes=settings.worker_file_bytes,
            open_files=settings.worker_open_files,
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    # -- admission ------------------------------------------------------------------------------

    def reserve(self) -> None:
        """Take a place for one more job, or raise QUEUE_FULL / SERVER_SHUTTING_DOWN."""
        with self._lock:
            if not self._accepting:
                raise _shutting_down()
            capacity = self._settings.workers + self._settings.max_queued_jobs
            if self._outstanding >= capacity:
                raise ServiceError(
                    Code.RESOURCE_EXHAUSTED,
                    "QUEUE_FULL",
                    f"{self._outstanding} jobs are queued or running (the limit); retry later",
                    retry_after_s=5.0,
                )
            self._outstanding += 1

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` that no job used."""
        with self._lock:
            self._outstanding -= 1

    def submit(self, job_id: str) -> None:
        """Queue a stored PENDING job on a place taken by :meth:`reserve`."""
        self._queue.put(job_id)

    def cancel(self, job_id: str) -> job_pb2.Job:
        """Mark the job CANCELLED and stop its worker if it runs here."""

        def to_cancelled(job: job_pb2.Job) -> bool:
            record.fail(job, ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled by CancelJob"))
            return True

        job = self._jobs.mutate(job_id, to_cancelled)
        with self._lock:
            stop = self._running.get(job_id)
        if stop is not None:
            stop.stop(ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled by CancelJob"))
        return job

    # -- jobs -----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                if self._accepting:
                    self._run(job_id)
                else:
                    self._end(job_id, _shutting_down())
            except Exception:
                log.exception("job %s: executor error", job_id)
            finally:
                with self._lock:
                    self._outstanding -= 1

    def _run(self, job_id: str) -> None:
        def to_running(job: job_pb2.Job) -> bool:
            if job.state != record.PENDING:
                return False
            record.transition(job, record.RUNNING)
            job.progress.CopyFrom(
                job_pb2.JobProgress(stage="starting", fraction=0.0, message="worker starting")
            )
            return True

        job = self._jobs.mutate(job_id, to_running)
        if job.state != record.RUNNING:
            return
        stop = StopRequest()
        with self._lock:
            self._running[job_id] = stop
        workdir = Path(tempfile.mkdtemp(prefix=f"prunekit-{job_id}-", dir=self._settings.scratch_path()))
        try:
            self._execute(job, workdir, stop)
        except ServiceError as exc:
            self._end(job_id, exc)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._end(job_id, ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self._running.pop(job_id, None)
            shutil.rmtree(workdir, ignore_errors=True)

    def _execute(self, job: job_pb2.Job, workdir: Path, stop: StopRequest) -> None:
        task: dict[str, Any] = {
            "kind": "optimize",
            "spec": json_format.MessageToDict(job.spec, preserving_proto_field_name=True),
            **self._stage_model(job.model, workdir),
        }
        fault = job.labels.get(FAULT_LABEL, "")
        if self._settings.enable_test_hooks and "@" in fault:
            action, stage = fault.split("@", 1)
            task["fault"] = {"action": action, "stage": stage}
        progress = _ProgressSink(self._jobs, job.id, stop, self._settings.progress_interval_s)
        outcome = run_worker(
            workdir,
            task,
            timeout=self._settings.job_timeout_s,
            stop=stop,
            on_progress=progress,
            poll=progress.check_cancelled,
        )
        if outcome.error is not None:
            self._end(job.id, outcome.error)
            return
        self._publish(job.id, workdir)

    def _stage_model(self, model: model_pb2.ModelRef, workdir: Path) -> dict[str, Any]:
        relative = f"input/model{_MODEL_SUFFIX.get(model.format, '.bin')}"
        (workdir / "input").mkdir()
        with storage_errors():
            self._jobs.store.get_file(self._jobs.model_key(model.sha256), workdir / relative)
        return {"model_path": relative, "model_format": int(model.format), "limits": self._limits.to_dict()}

    def _publish(self, job_id: str, workdir: Path) -> None:
        result = _read_json(workdir / "out" / "result.json")
        report = json_format.ParseDict(
            result["report"], report_pb2.OptimizationReport(), ignore_unknown_fields=True
        )
        artifacts: list[job_pb2.Artifact] = []
        for name, entry in sorted(result["artifacts"].items()):
            path = _inside(workdir, str(entry["path"]))
            artifacts.append(
                self._jobs.put_artifact(job_id, _artifact_name(name), path, str(entry["sha256"]))
            )
        by_name = {a.name: a for a in artifacts}
        for variant in report.variants:
            for file in variant.files:
                if file.artifact in by_name:
                    file.uri = by_name[file.artifact].uri
                    if file.format == variant.format and file.sha256 == variant.sha256:
                        variant.uri = file.uri
        report_path = workdir / "out" / "report.json"
        report_path.write_text(json_format.MessageToJson(report, preserving_proto_field_name=True))
        artifacts.append(
            self._jobs.put_artifact(job_id, "report.json", report_path, sha256_file(report_path))
        )
        self._jobs.write_manifest(job_id, artifacts)

        def to_succeeded(job: job_pb2.Job) -> bool:
            if job.state != record.RUNNING:
                return False
            record.transition(job, record.SUCCEEDED)
            job.report.CopyFrom(report)
            job.artifacts.extend(artifacts)
            job.progress.CopyFrom(job_pb2.JobProgress(stage="done", fraction=1.0, message="succeeded"))
            return True

        self._jobs.mutate(job_id, to_succeeded)

    def _end(self, job_id: str, error: ServiceError) -> None:
        def to_failed(job: job_pb2.Job) -> bool:
            if record.is_terminal(job.state):
                return False
            record.fail(job, error)
            return True

        try:
            self._jobs.mutate(job_id, to_failed)
        except ServiceError:
            log.exception("job %s: could not record its failure (%s)", job_id, error)

    # -- analyses -------------------------------------------------------------------------------

    def analyze(
        self,
        model: model_pb2.ModelRef,
        inputs: Sequence[model_pb2.InputSpec],
        timeout: float,
        *,
        sensitivity: bool = False,
        sensitivity_ratios: Sequence[float] = (),
    ) -> model_pb2.ModelAnalysis:
        """Analyse a stored model in a worker; waits at most ``timeout`` seconds in all.

        ``sensitivity`` adds the sensitivity analysis at ``sensitivity_ratios`` (empty: the default).
        """
        if not self._accepting:
            raise _shutting_down()
        deadline = time.monotonic() + timeout
        if not self._analysis_slots.acquire(timeout=max(0.0, min(timeout, 10.0))):
            raise ServiceError(
                Code.RESOURCE_EXHAUSTED, "QUEUE_FULL", "every analysis slot is busy; retry later"
            )
        workdir = Path(tempfile.mkdtemp(prefix="prunekit-analysis-", dir=self._settings.scratch_path()))
        try:
            task: dict[str, Any] = {
                "kind": "analyze",
                "inputs": [json_format.MessageToDict(i, preserving_proto_field_name=True) for i in inputs],
                "sensitivity": sensitivity,
                "sensitivity_ratios": [float(r) for r in sensitivity_ratios],
                **self._stage_model(model, workdir),
            }
            remaining = min(self._settings.analysis_timeout_s, deadline - time.monotonic())
            outcome = run_worker(
                workdir, task, timeout=max(1.0, remaining), stop=StopRequest(), on_progress=lambda *_: None
            )
            if outcome.error is not None:
                raise outcome.error
            data = _read_json(workdir / "out" / "analysis.json")
            return json_format.ParseDict(data, model_pb2.ModelAnalysis(), ignore_unknown_fields=True)
        finally:
            self._analysis_slots.release()
            shutil.rmtree(workdir, ignore_errors=True)

    # -- shutdown -------------------------------------------------------------------------------

    def shutdown(self, grace: float) -> None:
        """Stop taking work, let running jobs finish for ``grace`` seconds, then stop and fail them."""
        with self._lock:
            self._accepting = False
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    break
            time.sleep(0.05)
        with self._lock:
            running = list(self._running.values())
        for stop in running:
            stop.stop(
                ServiceError(
                    Code.UNAVAILABLE,
                    "SERVER_SHUTTING_DOWN",
                    "the server shut down before the job finished; submit it again",
                )
            )
        for thread in self._threads:
            thread.join(timeout=30)


class _ProgressSink:
    """Writes a job's progress to storage at most every ``interval`` seconds (stage changes at once)."""

    def __init__(self, jobs: JobStore, job_id: str, stop: StopRequest, interval: float) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._stop = stop
        self._interval = interval
        self._last_write = 0.0
        self._last_stage = ""

    def __call__(self, stage: str, fraction: float, message: str, details: dict[str, Any] | None) -> None:
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_write < self._interval:
            return
        self._last_write, self._last_stage = now, stage

        def update(job: job_pb2.Job) -> bool:
            if job.state != record.RUNNING:
                return False
            job.progress.CopyFrom(job_pb2.JobProgress(stage=stage, fraction=fraction, message=message))
            return True

        job = self._jobs.mutate(self._job_id, update)
        self._note(job)

    def check_cancelled(self) -> None:
        self._note(self._jobs.get(self._job_id))

    def _note(self, job: job_pb2.Job) -> None:
        if job.state == record.CANCELLED:
            self._stop.stop(ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled by CancelJob"))


def _read_json(path: Path) -> Any:
    if not path.is_file() or path.stat().st_size > _MAX_RESULT_BYTES:
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"the worker left no usable {path.name}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ServiceError(Code.INTERNAL, "INTERNAL_ERROR", f"the worker left a corrupt {path.name}") from exc


def _inside(workdir: Path, relative: str) -> Path:
    """A regular file the worker reported, confined to its working directory."""
    root = workdir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file() or (root / relative).is_symlink():
        raise ServiceError(
            Code.INTERNAL, "INTERNAL_ERROR", f"the worker reported an unusable artifact {relative!r}"
        )
    return path


def _artifact_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or not name.isprintable() or len(name) > 128:
        raise ServiceError(
            Code.INTERNAL, "INTERNAL_ERROR", f"the worker reported a bad artifact name {name!r}"
        )
    return name
