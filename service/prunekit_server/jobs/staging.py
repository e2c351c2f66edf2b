"""Copying a job's inputs from storage into a worker's empty working directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunekit.v1 import job_pb2, model_pb2

from ..config import Settings
from .dataset_store import DatasetStore
from .store import JobStore, storage_errors

_MODEL_SUFFIX = {model_pb2.MODEL_FORMAT_ONNX: ".onnx", model_pb2.MODEL_FORMAT_TORCHSCRIPT: ".pt"}


def stage_model(jobs: JobStore, model: model_pb2.ModelRef, workdir: Path) -> dict[str, Any]:
    """Download the model to ``workdir/input/model.<ext>``; the task's model_path and model_format."""
    relative = f"input/model{_MODEL_SUFFIX.get(model.format, '.bin')}"
    (workdir / "input").mkdir(exist_ok=True)
    with storage_errors():
        jobs.store.get_file(jobs.model_key(model.sha256), workdir / relative)
    return {"model_path": relative, "model_format": int(model.format)}


def stage_data(jobs: JobStore, settings: Settings, job: job_pb2.Job, workdir: Path) -> dict[str, Any]:
    """Download the job's dataset shards into ``workdir``; the task's ``data`` entry."""
    return DatasetStore.for_jobs(jobs, settings).stage(job.spec.data, workdir)
