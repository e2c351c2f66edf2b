"""Load on a real server process: many clients reading jobs while jobs run, every error counted.

``--clients`` client threads (spread over ``--processes`` processes, so client-side Python does not
serialise them) each loop for ``--seconds``: GetJob of a random job, ListJobs (one page of 20), and a
WatchJob stream of a random job cut off after 1 s. Meanwhile ``--jobs`` optimization jobs (a small MLP,
unstructured pruning) are created at once and run to their end. Printed: calls and errors per method, and
the p50 / p99 / max latency of each unary call as the client saw it. Goal (issue 12): 50 clients for 60 s
plus 10 jobs, 0 errors, p99 GetJob < 100 ms on this machine.

Usage: ``python bench/service_load.py [--clients 50] [--processes 5] [--seconds 60] [--jobs 10]``.
The test suite runs :func:`run` briefly (``tests/bench/test_service_load.py``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from prunekit import Client
from prunekit.v1 import job_pb2, model_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
METHODS = ("GetJob", "ListJobs", "WatchJob")


@contextmanager
def server_process(store: Path, *extra: str) -> Iterator[str]:
    """A ``prunekit-server`` process on a free port over file storage; yields its target."""
    command = [sys.executable, "-m", "prunekit_server.main", "--port", "0", "--storage", f"file://{store}"]
    env = dict(os.environ, PRUNEKIT_WORKER_MEMORY_BYTES="0", PRUNEKIT_LOG_LEVEL="INFO", PRUNEKIT_AUTH="none")
    proc = subprocess.Popen([*command, *extra], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = _LISTENING.search(line)
            if found:
                threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
                yield f"{found.group(1)}:{found.group(2)}"
                break
        else:
            raise RuntimeError("the server did not start")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@dataclass
class Tally:
    """Latencies (seconds) and errors per method, from any number of clients."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METHODS})
    errors: dict[str, list[str]] = field(default_factory=lambda: {m: [] for m in METHODS})

    def merge(self, other: Tally) -> None:
        for method in METHODS:
            self.latencies[method] += other.latencies[method]
            self.errors[method] += other.errors[method]

    def percentile(self, method: str, q: float) -> float:
        values = sorted(self.latencies[method])
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def _client_loop(target: str, job_ids: list[str], until: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.OptimizerServiceStub(channel)
        while time.monotonic() < until:
            job_id = rng.choice(job_ids)
            _unary(tally, "GetJob", stub.GetJob, pb.GetJobRequest(job_id=job_id))
            _unary(tally, "ListJobs", stub.ListJobs, pb.ListJobsRequest(page_size=20))
            _watch(stub, job_id, tally)


def _unary(tally: Tally, method: str, call: Callable[..., object], request: object) -> None:
    started = time.perf_counter()
    try:
        call(request, timeout=10)
    except grpc.RpcError as exc:
        tally.errors[method].append(f"{exc.code().name}: {exc.details()}")
        return
    tally.latencies[method].append(time.perf_counter() - started)


def _watch(stub: pb_grpc.OptimizerServiceStub, job_id: str, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=1.0):
            pass
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # the cut-off, by design
            tally.errors["WatchJob"].append(f"{exc.code().name}: {exc.details()}")
            return
    tally.latencies["WatchJob"].append(time.perf_counter() - started)


def _client_process(target: str, job_ids: list[str], seconds: float, threads: int, seed: int) -> Tally:
    until = time.monotonic() + seconds
    tallies = [Tally() for _ in range(threads)]
    workers = [
        threading.Thread(target=_client_loop, args=(target, job_ids, until, seed * 1000 + i, tallies[i]))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total


def _jobs(client: Client, model: model_pb2.ModelRef, count: int) -> list[job_pb2.Job]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.service.api.jobflow import quick_spec  # the test suite's quick job (seconds each)

    spec = quick_spec()
    return [client.optimize(model, spec, wait=False, request_id=uuid.uuid4().hex) for _ in range(count)]


def run(target: str, model: Path, *, clients: int, processes: int, seconds: float, jobs: int) -> Tally:
    """The load described in the module docstring against ``target``; every job must end SUCCEEDED."""
    with Client(target) as client:
        ref = client.upload_model(model)
        created = _jobs(client, ref, jobs)
        ids = [job.id for job in created]
        per_process = [clients // processes + (i < clients % processes) for i in range(processes)]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = [
                pool.apply_async(_client_process, (target, ids, seconds, n, i))
                for i, n in enumerate(per_process)
                if n
            ]
            tally = Tally()
            for result in results:
                tally.merge(result.get(timeout=seconds + 120))
        ended = [client.wait(job_id) for job_id in ids]
    failed = [f"{job.id}: {job_pb2.JobState.Name(job.state)}" for job in ended]
    failed = [
        line for line, job in zip(failed, ended, strict=True) if job.state != job_pb2.JOB_STATE_SUCCEEDED
    ]
    tally.errors["GetJob"] += [f"job {line}" for line in failed]
    return tally


def report(tally: Tally, seconds: float) -> str:
    lines = [f"{'method':9s} {'calls':>7s} {'errors':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}"]
    for method in METHODS:
        values = tally.latencies[method]
        lines.append(
            f"{method:9s} {len(values):7d} {len(tally.errors[method]):6d} "
            f"{tally.percentile(method, 0.5) * 1e3:8.1f} {tally.percentile(method, 0.99) * 1e3:8.1f} "
            f"{max(values, default=0.0) * 1e3:8.1f}"
        )
    calls = sum(len(v) for v in tally.latencies.values())
    lines.append(f"{calls / seconds:.0f} calls/s over {seconds:.0f} s (WatchJob streams cut off after 1 s)")
    for method in METHODS:
        for error in sorted(set(tally.errors[method]))[:5]:
            lines.append(f"  {method} error: {error}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.samples import write_sample_model  # the test suite's small MLP

    with tempfile.TemporaryDirectory(prefix="prunekit-load-") as tmp:
        model = Path(tmp) / "mlp.onnx"
        write_sample_model(model, "onnx", "mlp")
        extra = ("--workers", "2")
        with server_process(Path(tmp) / "store", *extra) as target:
            tally = run(
                target,
                model,
                clients=args.clients,
                processes=args.processes,
                seconds=args.seconds,
                jobs=args.jobs,
            )
    print(
        f"{args.clients} clients in {args.processes} processes, {args.jobs} jobs, server in its own process"
    )
    print(report(tally, args.seconds))


if __name__ == "__main__":
    main()
