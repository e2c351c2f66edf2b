"""What a job asks of the Ray cluster, the names it has there, and the settings of its node."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from prunekit.v1 import spec_pb2

from ...config import Settings

#: The Ray namespace of prunekit's actors (named actors are looked up within it).
NAMESPACE = "prunekit"
#: The owner job records name while Ray runs them (no lease is renewed; see :mod:`.task`).
RAY_OWNER = "ray"
#: The placement strategies of a job's fine-tuning ranks (``ray_rank_strategy``), as Ray names them.
RANK_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


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
    """The Ray resources of the job's actor, and of each of its other fine-tuning ranks
    (``finetune.workers``; see :mod:`.ranks`): a CPU, a GPU when the spec asks for CUDA, and the
    worker's memory when ``worker_memory_bytes`` sets it (Ray places an actor where they are free)."""
    resources: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1 if wants_gpu(spec) else 0}
    if settings.worker_memory_bytes > 0:
        resources["memory"] = settings.worker_memory_bytes
    return resources


def bundle(resources: dict[str, Any]) -> dict[str, float]:
    """The placement-group bundle that holds an actor of ``resources`` (:func:`actor_resources`)."""
    names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
    return {names[key]: float(value) for key, value in resources.items() if value}


#: Settings of the node a job runs on, not of the front door that submitted it.
NODE_SETTINGS = ("scratch_dir", "worker_memory_bytes", "worker_threads", "worker_uid", "worker_gid")


def on_node(settings: Settings, env: Mapping[str, str] | None = None) -> Settings:
    """The front door's ``settings`` with those of this node (:data:`NODE_SETTINGS`) from its own
    ``PRUNEKIT_*`` environment: set there, or the defaults (the front door's scratch directory is not
    on this node)."""
    env = os.environ if env is None else env
    node = Settings.from_env(env)
    values = {
        name: getattr(node, name)
        for name in NODE_SETTINGS
        if name == "scratch_dir" or env.get(f"PRUNEKIT_{name.upper()}")
    }
    return replace(settings, **values)
