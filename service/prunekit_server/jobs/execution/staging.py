"""Copying a job's inputs from storage into a worker's empty working directory, and its task."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from prunekit.v1 import job_pb2, model_pb2

from ...config import Settings
from ..durable.dataset_store import DatasetStore
from ..durable.latency_tables import stage_tables
from ..durable.model_store import ModelStore
from ..durable.storage_errors import storage_errors
from ..durable.stores import TenantStores
from ..worker.faults import FAULT_LABEL, parse_fault
from .sandbox import sandbox_task

_MODEL_SUFFIX = {model_pb2.MODEL_FORMAT_ONNX: ".onnx", model_pb2.MODEL_FORMAT_TORCHSCRIPT: ".pt"}


def stage_model(models: ModelStore, model: model_pb2.ModelRef, workdir: Path) -> dict[str, Any]:
    """Download the model to ``workdir/input/model.<ext>``; the task's model_path and model_format."""
    relative = f"input/model{_MODEL_SUFFIX.get(model.format, '.bin')}"
    (workdir / "input").mkdir(exist_ok=True)
    with storage_errors():
        models.store.get_file(models.key(model.sha256), workdir / relative)
    return {"model_path": relative, "model_format": int(model.format)}


def stage_data(stores: TenantStores, settings: Settings, job: job_pb2.Job, workdir: Path) -> dict[str, Any]:
    """Download the job's dataset shards into ``workdir``; the task's ``data`` entry."""
    return DatasetStore.for_tenant(stores, settings).stage(job.spec.data, workdir)


def optimize_task(
    stores: TenantStores,
    settings: Settings,
    job: job_pb2.Job,
    workdir: Path,
    checkpoint_dir: str,
    limits: dict[str, int],
    rendezvous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The worker's task for one start of ``job``, its model and data staged into ``workdir``.

    With ``finetune.workers`` > 1 the task's ``ranks`` is that count (the worker starts its ranks) or
    ``rendezvous``, the group of ranks Ray placed (:mod:`..ray.ranks`).

    The FAULT_LABEL fault is passed on only with ``settings.enable_test_hooks``.
    """
    task: dict[str, Any] = {
        "kind": "optimize",
        "spec": json_format.MessageToDict(job.spec, preserving_proto_field_name=True),
        **stage_model(stores.models, job.model, workdir),
        "limits": limits,
        "data": stage_data(stores, settings, job, workdir),
        "checkpoint_dir": checkpoint_dir,
        "attempt": job.attempt,
        "job": {"id": job.id, "model_filename": job.model.filename, "model_sha256": job.model.sha256},
    }
    sandbox = sandbox_task(settings, stores.store.uri)
    if sandbox is not None:
        task["sandbox"] = sandbox
    if job.spec.finetune.workers > 1:
        task["ranks"] = dict(rendezvous) if rendezvous is not None else job.spec.finetune.workers
    if job.spec.HasField("target"):
        task["latency_tables_dir"] = stage_tables(stores.store, workdir)
    fault = parse_fault(job.labels.get(FAULT_LABEL, ""))
    if settings.enable_test_hooks and fault is not None:
        task["fault"] = fault
    return task
