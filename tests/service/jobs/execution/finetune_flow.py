"""A fine-tuning job on the digits task through the raw gRPC API: model, dataset, spec, checks."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from scripts.digits import SmallCNN, export_onnx, write_shards

from prunekit.v1 import job_pb2, model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.jobs.durable.stores import TenantStores

from ...api.conftest import upload


def digits_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A small, untrained digits CNN as ONNX and one labelled shard of 600 digits."""
    torch.manual_seed(0)
    model = export_onnx(SmallCNN(8, 16, 16), tmp_path / "digits.onnx")
    from scripts.digits import digits_arrays

    x, y = digits_arrays()
    (shard,) = write_shards(tmp_path / "shards", x[:600], y[:600], shards=1)
    return model, shard


def upload_dataset(stub: pb_grpc.OptimizerServiceStub, path: Path) -> model_pb2.DatasetRef:
    data = path.read_bytes()
    meta = pb.DatasetMetadata(
        filename=path.name, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    requests = [pb.UploadDatasetRequest(metadata=meta), pb.UploadDatasetRequest(chunk=data)]
    return stub.UploadDataset(iter(requests), timeout=60).dataset


def upload_inputs(stub: pb_grpc.OptimizerServiceStub, tmp_path: Path) -> tuple[model_pb2.ModelRef, str]:
    """Upload the digits model and shard; the model's ref and the shard's URI."""
    model, shard = digits_inputs(tmp_path)
    return upload(stub, model), upload_dataset(stub, shard).uri


def finetune_spec(train_uri: str, steps: int = 60, every: int = 20) -> spec_pb2.OptimizationSpec:
    """Channel-prune to half the channels, then fine-tune ``steps`` steps, a checkpoint every ``every``."""
    return spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=0.5, round_to=1),
        data=spec_pb2.DataSpec(train=[train_uri], eval_fraction=0.2),
        finetune=spec_pb2.FinetuneSpec(
            steps=steps, batch_size=32, checkpoint_every_steps=every, seed=1, device=spec_pb2.DEVICE_CPU
        ),
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.5),
        evaluation=spec_pb2.EvaluationSpec(samples=8),
    )


def single_manifest(stores: TenantStores, job: job_pb2.Job) -> list[job_pb2.Artifact]:
    """The job's one manifest, checked to list exactly the job's artifacts, all from one worker start."""
    stored = stores.artifacts.manifest(job.id)
    assert stored is not None
    assert stored == list(job.artifacts)
    assert len(artifact_attempts(job)) == 1
    return stored


def wait_cleaned(stores: TenantStores, job_id: str, timeout: float = 30) -> list[str]:
    """What is left of an ended job's checkpoints and active-index entry once its server cleaned
    up ([] when it did within ``timeout`` s)."""
    deadline = time.monotonic() + timeout

    def left() -> list[str]:
        return checkpoint_keys(stores, job_id) + [i for i in stores.jobs.active_job_ids() if i == job_id]

    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    return left()


def checkpoint_keys(stores: TenantStores, job_id: str) -> list[str]:
    return stores.store.list_keys(stores.artifacts.checkpoint_prefix(job_id))


def artifact_attempts(job: job_pb2.Job) -> set[str]:
    """The worker starts whose files the job's artifacts are (``attempts/<n>/`` in their URIs)."""
    return {a.uri.split("/attempts/")[1].split("/")[0] for a in job.artifacts}
