"""What a job asks of the Ray cluster, and the names it has there."""

from __future__ import annotations

from typing import Any

from prunekit.v1 import spec_pb2

from ...config import Settings

#: The Ray namespace of prunekit's actors (named actors are looked up within it).
NAMESPACE = "prunekit"
#: The owner job records name while Ray runs them (no lease is renewed; see :mod:`.task`).
RAY_OWNER = "ray"


def actor_name(job_id: str) -> str:
    """The name of the job's actor: at most one exists per job at a time (job ids are unique)."""
    return f"job-{job_id}"


def wants_gpu(spec: spec_pb2.OptimizationSpec) -> bool:
    """Whether the spec asks for CUDA (fine-tuning or the benchmark on ``DEVICE_CUDA``)."""
    cuda = spec_pb2.DEVICE_CUDA
    return (spec.HasField("finetune") and spec.finetune.device == cuda) or (
        spec.HasField("benchmark") and spec.benchmark.device == cuda
    )


def actor_resources(spec: spec_pb2.OptimizationSpec, settings: Settings) -> dict[str, Any]:
    """The Ray resources of the job's actor: a CPU per fine-tuning rank (``finetune.workers``, at least
    one), as many GPUs when the spec asks for CUDA, and the workers' memory when ``worker_memory_bytes``
    sets it (Ray places the actor where they are free; the ranks run on its node)."""
    ranks = max(1, spec.finetune.workers)
    resources: dict[str, Any] = {"num_cpus": ranks, "num_gpus": ranks if wants_gpu(spec) else 0}
    if settings.worker_memory_bytes > 0:
        resources["memory"] = settings.worker_memory_bytes * ranks
    return resources
