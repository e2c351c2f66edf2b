"""Small jobs through the ``local`` executor against the ``ray`` executor, on this machine.

``--jobs`` (20) quick jobs (unstructured pruning of the sample MLP, a 0.5 s benchmark) are created at
once on one server over a file store and waited for:

- ``local``: a ``prunekit-server`` with ``PRUNEKIT_WORKERS=--workers`` (2) worker processes;
- ``ray``: a local Ray cluster of ``--workers`` CPUs (started and stopped here) and one
  ``prunekit-server --executor ray`` front door.

Printed per executor: the total wall time (first create to last end), and from the job records the
mean and largest wait from create to the worker's start (queueing plus the executor's own overhead:
for ``ray``, the actor's placement and process start) and the mean run time (start to end). The
machine's load adds to every number: say what else ran.

Usage: ``python bench/executors.py [--jobs 20] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]

import grpc  # noqa: E402
from tests.samples import write_sample_model  # noqa: E402
from tests.service.api.conftest import upload  # noqa: E402
from tests.service.api.jobflow import create, wait  # noqa: E402
from tests.service.jobs.ray.conftest import front_door  # noqa: E402
from tests.service.jobs.ray.local_cluster import local_ray  # noqa: E402
from tests.service.server_process import ServerProcess, server_process  # noqa: E402

from prunekit.v1 import job_pb2  # noqa: E402
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc  # noqa: E402


def _seconds(job: job_pb2.Job, start: str, end: str) -> float:
    return (getattr(job, end).ToNanoseconds() - getattr(job, start).ToNanoseconds()) / 1e9


def _run_jobs(door: ServerProcess, model_path: Path, count: int) -> tuple[float, list[job_pb2.Job]]:
    with grpc.insecure_channel(door.target) as channel:
        stub = pb_grpc.OptimizerServiceStub(channel)
        model = upload(stub, model_path)
        started = time.monotonic()
        jobs = [create(stub, model) for _ in range(count)]
        with futures.ThreadPoolExecutor(count) as pool:
            ended = list(pool.map(lambda job: wait(stub, job.id, 1800)[-1], jobs))
        total = time.monotonic() - started
    failed = [job.id for job in ended if job.state != job_pb2.JOB_STATE_SUCCEEDED]
    assert not failed, f"jobs did not succeed: {failed}"
    return total, ended


def _line(name: str, total: float, jobs: list[job_pb2.Job]) -> str:
    waits = [_seconds(j, "create_time", "start_time") for j in jobs]
    runs = [_seconds(j, "start_time", "end_time") for j in jobs]
    return (
        f"{name:6s} {len(jobs)} jobs in {total:6.1f} s ({total / len(jobs):5.2f} s/job); "
        f"create->start mean {statistics.mean(waits):5.2f} s, max {max(waits):5.2f} s; "
        f"start->end mean {statistics.mean(runs):5.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "mlp.onnx"
        write_sample_model(model, "onnx", "mlp")
        env = {
            "PRUNEKIT_WORKERS": str(args.workers),
            "PRUNEKIT_MAX_QUEUED_JOBS": str(args.jobs),
            "PRUNEKIT_WORKER_MEMORY_BYTES": "0",
        }
        with server_process(f"file://{root / 'local'}", extra_env=env) as door:
            print(_line("local", *_run_jobs(door, model, args.jobs)), flush=True)
        with local_ray(cpus=args.workers) as address, front_door(f"file://{root / 'ray'}", address) as door:
            deadline = time.monotonic() + 120
            while True:
                try:
                    print(_line("ray", *_run_jobs(door, model, args.jobs)), flush=True)
                    break
                except grpc.RpcError as exc:  # RAY_UNAVAILABLE until the front door's driver connected
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    time.sleep(1)


if __name__ == "__main__":
    main()
