"""What a job asks of the Ray cluster (a GPU only when the spec asks for CUDA), and what its node sets."""

from __future__ import annotations

from dataclasses import replace

from prunekit.v1 import spec_pb2
from prunekit_server.config import Settings
from prunekit_server.jobs.ray.resources import actor_name, actor_resources, bundle, on_node

from ...api.jobflow import quick_spec


def test_a_cpu_job_asks_for_one_cpu_and_no_gpu() -> None:
    assert actor_resources(quick_spec(), Settings()) == {"num_cpus": 1, "num_gpus": 0}


def test_cuda_fine_tuning_or_benchmark_asks_for_a_gpu() -> None:
    tuned = quick_spec()
    tuned.finetune.CopyFrom(spec_pb2.FinetuneSpec(steps=1, device=spec_pb2.DEVICE_CUDA))
    timed = quick_spec()
    timed.benchmark.device = spec_pb2.DEVICE_CUDA
    unspecified = quick_spec()
    unspecified.finetune.CopyFrom(spec_pb2.FinetuneSpec(steps=1))
    assert actor_resources(tuned, Settings())["num_gpus"] == 1
    assert actor_resources(timed, Settings())["num_gpus"] == 1
    assert actor_resources(unspecified, Settings())["num_gpus"] == 0


def test_a_set_worker_memory_is_asked_for() -> None:
    settings = replace(Settings(), worker_memory_bytes=3 << 30)
    assert actor_resources(quick_spec(), settings)["memory"] == 3 << 30
    assert "memory" not in actor_resources(quick_spec(), replace(settings, worker_memory_bytes=-1))


def test_each_fine_tuning_rank_asks_for_its_cpu_or_gpu_and_memory() -> None:
    spec = quick_spec()
    spec.finetune.CopyFrom(spec_pb2.FinetuneSpec(steps=1, workers=3, device=spec_pb2.DEVICE_CUDA))
    settings = replace(Settings(), worker_memory_bytes=1 << 30)
    assert actor_resources(spec, settings) == {"num_cpus": 1, "num_gpus": 1, "memory": 1 << 30}
    assert bundle(actor_resources(spec, settings)) == {"CPU": 1.0, "GPU": 1.0, "memory": float(1 << 30)}
    spec.finetune.device = spec_pb2.DEVICE_CPU
    assert actor_resources(spec, Settings()) == {"num_cpus": 1, "num_gpus": 0}
    assert bundle(actor_resources(spec, Settings())) == {"CPU": 1.0}


def test_one_actor_name_per_job() -> None:
    assert actor_name("abc") == "job-abc"


def test_a_job_takes_the_node_settings_from_its_node() -> None:
    door = replace(Settings(), scratch_dir="/tmp/prunekit-server-1-abc", worker_memory_bytes=-1, lease_s=7)
    node = on_node(door, {"PRUNEKIT_WORKER_MEMORY_BYTES": "0", "PRUNEKIT_LEASE_S": "99"})
    assert (node.scratch_dir, node.worker_memory_bytes, node.lease_s) == ("", 0, 7)
    assert on_node(door, {"PRUNEKIT_SCRATCH_DIR": "/scratch"}).scratch_dir == "/scratch"
