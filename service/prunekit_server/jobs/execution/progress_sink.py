"""A running job's progress, from the worker's progress lines to the job record."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from prunekit.v1 import job_pb2

from ...errors import Code, ServiceError
from ...observability.metrics import STAGE_SECONDS
from ..durable import record
from ..durable.job_store import JobStore
from ..durable.storage_errors import OUTAGES, is_unavailable
from .sandbox import StopRequest

log = logging.getLogger(__name__)
CheckpointFn = Callable[[str, str], None]
"""Called with ``(phase, name)`` for each checkpoint the worker announces."""


def finetune_progress(details: Mapping[str, Any]) -> job_pb2.FinetuneProgress | None:
    """``JobProgress.finetune`` from a progress line's ``details["finetune"]`` (None if malformed)."""
    try:
        progress = job_pb2.FinetuneProgress(
            phase=str(details.get("phase", "")),
            step=int(details.get("step", 0)),
            total_steps=int(details.get("total_steps", 0)),
            epoch=int(details.get("epoch", 0)),
            loss=float(details.get("loss", 0.0)),
            metric=str(details.get("metric", "")),
        )
        if details.get("eval_metric") is not None:
            progress.eval_metric = float(details["eval_metric"])
    except (TypeError, ValueError, OverflowError):
        return None
    return progress


class ProgressSink:
    """Writes a job's progress to storage at most every ``interval`` seconds.

    Stage changes are written at once. A line whose details carry
    ``"checkpoint"`` is handed to ``on_checkpoint`` whatever the throttle
    (it only queues an upload); :meth:`checkpoint_uploaded` then records the
    step in ``progress.finetune.checkpoint_step`` at once; the checkpoints the start was restored
    from (``restored``, phase -> step) count as stored from the start. Writes only while
    the job is RUNNING and leased to ``owner``; a CANCELLED record stops the
    worker with JOB_CANCELLED. Updates that meet a storage outage are dropped.
    """

    def __init__(
        self,
        jobs: JobStore,
        job_id: str,
        stop: StopRequest,
        interval: float,
        owner: str,
        on_checkpoint: CheckpointFn,
        restored: Mapping[str, int] | None = None,
    ) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._stop = stop
        self._interval = interval
        self._owner = owner
        self._on_checkpoint = on_checkpoint
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._last_stage = ""
        self._checkpoint_steps: dict[str, int] = dict(restored or {})
        self._finetune: job_pb2.FinetuneProgress | None = None
        self._stage = ""
        self._stage_since = time.monotonic()

    def __call__(self, stage: str, fraction: float, message: str, details: dict[str, Any] | None) -> None:
        details = details or {}
        checkpoint = details.get("checkpoint")
        if isinstance(checkpoint, dict):
            phase, name = checkpoint.get("phase"), checkpoint.get("name")
            if isinstance(phase, str) and isinstance(name, str):
                self._on_checkpoint(phase, name)
        tuning = details.get("finetune")
        with self._lock:
            if isinstance(tuning, dict):
                self._finetune = finetune_progress(tuning)
            elif stage != "finetune":
                self._finetune = None
            now = time.monotonic()
            if stage != self._stage:
                self._end_stage(now)
                self._stage, self._stage_since = stage, now
                log.debug("job %s: stage %s (%.0f %%)", self._job_id, stage, fraction * 100)
            if stage == self._last_stage and now - self._last_write < self._interval:
                return
            self._last_write, self._last_stage = now, stage
            progress = self._progress(stage, fraction, message)
        self._write(progress)

    def finish(self) -> None:
        """The worker ended: its last stage's time goes to ``prunekit_stage_duration_seconds``."""
        with self._lock:
            self._end_stage(time.monotonic())
            self._stage = ""

    def _end_stage(self, now: float) -> None:
        if self._stage:
            STAGE_SECONDS.labels(self._stage).observe(now - self._stage_since)

    def checkpoint_uploaded(self, phase: str, step: int) -> None:
        """Record that ``phase``'s checkpoint of ``step`` is in storage."""
        with self._lock:
            self._checkpoint_steps[phase] = step
        phase_step = step

        def update(job: job_pb2.Job) -> bool:
            if not self._writable(job):
                return False
            if job.progress.stage == "finetune" and job.progress.finetune.phase in ("", phase):
                job.progress.finetune.phase = phase
                job.progress.finetune.checkpoint_step = phase_step
            return True

        self._note(lambda: self._jobs.mutate(self._job_id, update))

    def check_cancelled(self) -> None:
        self._note(lambda: self._jobs.get(self._job_id))

    def _progress(self, stage: str, fraction: float, message: str) -> job_pb2.JobProgress:
        progress = job_pb2.JobProgress(stage=stage, fraction=fraction, message=message)
        if self._finetune is not None:
            progress.finetune.CopyFrom(self._finetune)
            progress.finetune.checkpoint_step = self._checkpoint_steps.get(self._finetune.phase, 0)
        return progress

    def _writable(self, job: job_pb2.Job) -> bool:
        return job.state == record.RUNNING and job.lease.owner == self._owner

    def _write(self, progress: job_pb2.JobProgress) -> None:
        def update(job: job_pb2.Job) -> bool:
            if not self._writable(job):
                return False
            job.progress.CopyFrom(progress)
            return True

        self._note(lambda: self._jobs.mutate(self._job_id, update))

    def _note(self, read: Callable[[], job_pb2.Job]) -> None:
        """Stop the worker when the record ``read()`` returns is CANCELLED. During a storage outage
        the update is skipped, without a call (the next one is written once storage answers): a
        reader stuck in failing calls would stall the worker's progress pipe."""
        if OUTAGES.down:
            return
        try:
            job = read()
        except ServiceError as exc:
            if not is_unavailable(exc):
                raise
            return
        if job.state == record.CANCELLED:
            self._stop.stop(ServiceError(Code.CANCELLED, "JOB_CANCELLED", "cancelled by CancelJob"))
