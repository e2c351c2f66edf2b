"""Helpers that drive a job through the raw gRPC API."""

from __future__ import annotations

import time
import uuid

from prunekit.v1 import job_pb2, model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc

TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def quick_spec(ratio: float = 0.5, **prune: object) -> spec_pb2.OptimizationSpec:
    """An unstructured spec with a short benchmark, so a job takes seconds."""
    return spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=ratio, **prune),  # type: ignore[arg-type]
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.5),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )


def create(
    stub: pb_grpc.OptimizerServiceStub,
    model: model_pb2.ModelRef,
    spec: spec_pb2.OptimizationSpec | None = None,
    *,
    labels: dict[str, str] | None = None,
    request_id: str | None = None,
) -> job_pb2.Job:
    request = pb.CreateJobRequest(
        model=model, spec=spec or quick_spec(), request_id=request_id or uuid.uuid4().hex, labels=labels or {}
    )
    return stub.CreateJob(request, timeout=30).job


def wait(stub: pb_grpc.OptimizerServiceStub, job_id: str, timeout: float = 240) -> list[job_pb2.Job]:
    """Every job update WatchJob sends until the job ends, subscribing again when the server closes a
    watch (its ``watch_max_s``) before; grpc's DEADLINE_EXCEEDED after ``timeout`` s in all."""
    deadline = time.monotonic() + timeout
    updates: list[job_pb2.Job] = []
    while not updates or updates[-1].state not in TERMINAL:
        left = max(deadline - time.monotonic(), 0.001)
        updates += [r.job for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=left)]
    return updates


def run(
    stub: pb_grpc.OptimizerServiceStub,
    model: model_pb2.ModelRef,
    spec: spec_pb2.OptimizationSpec | None = None,
    **kwargs: object,
) -> job_pb2.Job:
    job = create(stub, model, spec, **kwargs)  # type: ignore[arg-type]
    return wait(stub, job.id)[-1]
