"""Structured pruning all through the service: upload, job, report, artifacts (raw gRPC).

A representative subset of model x format x method; the full matrix is
bench/structured_pruning.py's coverage table.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import torch

from prunekit.v1 import job_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.server import RunningServer
from tests.service.pruning.structured_zoo import graph_input_names, run_ort
from tests.zoo import ZOO, cached

from .conftest import download, file_server, upload
from .jobflow import run

CASES = [
    (
        "resnet",
        "legacy",
        spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_CHANNEL, target_macs_reduction=2.0, round_to=1),
    ),
    ("mlp", "script", spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_NEURON, ratio=0.5, round_to=1)),
    ("senet", "trace", spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=0.3)),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server on the file backend (the storage backends have their own tests)."""
    with file_server(tmp_path_factory) as running:
        yield running


@pytest.mark.parametrize(("name", "fmt", "prune"), CASES, ids=[f"{n}-{f}" for n, f, _ in CASES])
def test_structured_job(
    stub: pb_grpc.OptimizerServiceStub, name: str, fmt: str, prune: spec_pb2.PruneSpec, tmp_path: Path
) -> None:
    entry = ZOO[name]
    source = cached(name, fmt)
    spec = spec_pb2.OptimizationSpec(
        prune=prune,
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.5),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )
    if source.suffix == ".pt":
        spec.inputs.extend(entry.inputs)
    job = run(stub, upload(stub, source), spec)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    report = job.report
    (variant,) = report.variants
    assert variant.macs_reduction > 1.3
    if prune.target_macs_reduction:
        assert abs(variant.macs_reduction / prune.target_macs_reduction - 1) <= 0.05
    assert variant.stats.parameters < report.baseline.parameters
    assert variant.stats.latency.p50_ms > 0
    assert any(list(layer.shape_after) != list(layer.shape_before) for layer in report.layers)
    assert "UNSTRUCTURED_NO_SPEEDUP" not in {w.code for w in report.warnings}

    pruned = onnx.load_from_string(download(stub, job.id, "pruned.onnx"))
    names = graph_input_names(pruned)
    sample = entry.sample()
    feed = {n: t.numpy() for n, t in zip(names, sample, strict=True)}
    original = entry.build()
    with torch.no_grad():
        expected_shape = tuple(original(*sample).shape)
    assert run_ort(pruned, feed)[0].shape == expected_shape
    if source.suffix == ".pt":
        assert "TORCHSCRIPT_OUTPUT" in {w.code for w in report.warnings}
        module = torch.jit.load(io.BytesIO(download(stub, job.id, "pruned.pt")))
        with torch.no_grad():
            assert tuple(module(*sample).shape) == expected_shape
