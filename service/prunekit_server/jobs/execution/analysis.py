"""Model analyses in worker processes, on slots of their own, synchronously for the caller."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from prunekit.v1 import model_pb2

from ...config import Settings
from ...errors import Code, ServiceError
from ..durable.model_store import ModelStore
from ..durable.publish import read_json
from .sandbox import StopRequest, WorkerLimits, run_worker, sandbox_task
from .staging import stage_model
from .starts import local_error
from .warm import WarmWorkers


class Analyzer:
    """Runs at most ``settings.workers`` analyses at a time."""

    def __init__(self, settings: Settings, limits: WorkerLimits, warm: WarmWorkers | None = None) -> None:
        self._warm = warm
        self._settings = settings
        self._limits = limits
        self._slots = threading.BoundedSemaphore(max(1, settings.workers))

    def analyze(
        self,
        models: ModelStore,
        model: model_pb2.ModelRef,
        inputs: Sequence[model_pb2.InputSpec],
        timeout: float,
        *,
        sensitivity: bool = False,
        sensitivity_ratios: Sequence[float] = (),
    ) -> model_pb2.ModelAnalysis:
        """Analyse a model of ``models`` in a worker; waits at most ``timeout`` seconds in all.

        ``sensitivity`` adds the sensitivity analysis at ``sensitivity_ratios`` (empty: the default).
        QUEUE_FULL when no slot frees up within ``min(timeout, 10)`` seconds.
        """
        deadline = time.monotonic() + timeout
        if not self._slots.acquire(timeout=max(0.0, min(timeout, 10.0))):
            raise ServiceError(
                Code.RESOURCE_EXHAUSTED, "QUEUE_FULL", "every analysis slot is busy; retry later"
            )
        try:
            workdir = Path(tempfile.mkdtemp(prefix="prunekit-analysis-", dir=self._settings.scratch_path()))
            try:
                return self._run(models, workdir, model, inputs, deadline, sensitivity, sensitivity_ratios)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        except OSError as exc:
            raise local_error(exc) from exc
        finally:
            self._slots.release()

    def _run(
        self,
        models: ModelStore,
        workdir: Path,
        model: model_pb2.ModelRef,
        inputs: Sequence[model_pb2.InputSpec],
        deadline: float,
        sensitivity: bool,
        sensitivity_ratios: Sequence[float],
    ) -> model_pb2.ModelAnalysis:
        task: dict[str, Any] = {
            "kind": "analyze",
            "inputs": [json_format.MessageToDict(i, preserving_proto_field_name=True) for i in inputs],
            "sensitivity": sensitivity,
            "sensitivity_ratios": [float(r) for r in sensitivity_ratios],
            "limits": self._limits.to_dict(),
            **stage_model(models, model, workdir),
        }
        sandbox = sandbox_task(self._settings, models.store.uri)
        if sandbox is not None:
            task["sandbox"] = sandbox
        remaining = min(self._settings.analysis_timeout_s, deadline - time.monotonic())
        outcome = run_worker(
            workdir,
            task,
            timeout=max(1.0, remaining),
            stop=StopRequest(),
            on_progress=lambda *_: None,
            warm=self._warm,
        )
        if outcome.error is not None:
            raise outcome.error
        data = read_json(workdir / "out" / "analysis.json")
        return json_format.ParseDict(data, model_pb2.ModelAnalysis(), ignore_unknown_fields=True)
