"""Jobs with a latency ``target`` on a real server: the search's report, the tables reused, bad targets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2, model_pb2, report_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.rpc_status import from_status
from prunekit_server.server import RunningServer
from tests.zoo import ResNet18, ZooEntry, export

from .conftest import file_server, status_error, upload
from .jobflow import create, run

SIZE = 48
ENTRY = ZooEntry(
    "resnet18-48", lambda: ResNet18(width=32), (model_pb2.InputSpec(name="image", shape=[1, 3, SIZE, SIZE]),)
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with file_server(tmp_path_factory, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def model(stub: pb_grpc.OptimizerServiceStub, tmp_path_factory: pytest.TempPathFactory) -> model_pb2.ModelRef:
    path = export(ENTRY.build(), ENTRY, tmp_path_factory.mktemp("m") / "resnet.onnx", "legacy", 17)
    return upload(stub, Path(path))


def _spec(**target: object) -> spec_pb2.OptimizationSpec:
    return spec_pb2.OptimizationSpec(
        inputs=list(ENTRY.inputs),
        target=spec_pb2.TargetSpec(techniques=["channel"], budget_seconds=90, **target),  # type: ignore[arg-type]
        benchmark=spec_pb2.BenchmarkSpec(max_seconds=3.0),
        evaluation=spec_pb2.EvaluationSpec(samples=8),
    )


def _succeeded(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> report_pb2.OptimizationReport:
    final = run(stub, model, _spec(latency_speedup=1.6))
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, from_status(final.error)
    pages = {}
    for name in ("report.md", "report.html"):
        chunks = stub.DownloadArtifact(pb.DownloadArtifactRequest(job_id=final.id, name=name), timeout=60)
        pages[name] = b"".join(c.chunk for c in chunks).decode()
    assert "## Latency-target search" in pages["report.md"]
    assert final.report.search.selected in pages["report.md"]
    assert "<h2>Latency-target search</h2>" in pages["report.html"]
    assert 'id="plot-search"' in pages["report.html"]
    return final.report


def test_a_target_job_reports_its_search_and_flags_the_chosen_model(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    report = _succeeded(stub, model)
    search = report.search
    assert search.baseline_p50_ms > 0
    assert search.target_speedup == pytest.approx(1.6)
    assert search.target_p50_ms == pytest.approx(search.baseline_p50_ms / 1.6)
    assert search.candidates
    for candidate in search.candidates:
        assert candidate.predicted_p50_ms > 0
        assert candidate.measured_p50_ms > 0
        assert candidate.measured_speedup > 0
        assert candidate.quality.samples > 0
    (chosen,) = [c for c in search.candidates if c.selected]
    assert chosen.name == search.selected
    assert search.met == any(c.meets_target for c in search.candidates)
    (table,) = search.tables
    assert not table.reused
    assert table.entries_timed == table.entries_used > 0
    assert "thread" in table.description
    variant = next(v for v in report.variants if v.name == "pruned")
    assert report_pb2.VARIANT_FLAG_SELECTED in variant.flags
    met = report_pb2.VARIANT_FLAG_MEETS_TARGET in variant.flags
    assert met != (report_pb2.VARIANT_FLAG_MISSES_TARGET in variant.flags)
    assert met == ("TARGET_NOT_MET" not in {w.code for w in report.warnings})
    narrowed = {w.layer: w.width_after for w in chosen.widths}
    layers = {layer.name: layer for layer in report.layers}
    for name, width in narrowed.items():
        assert layers[name].shape_after[0] == width


def test_the_second_job_on_this_node_reuses_the_stored_table(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    (table,) = _succeeded(stub, model).search.tables
    assert table.reused
    assert table.entries_timed < table.entries_used / 2


def test_a_required_target_out_of_reach_fails_the_job_with_target_not_met(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    spec = _spec(latency_speedup=19.0, required=True)
    spec.prune.CopyFrom(spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_CHANNEL, max_layer_ratio=0.3))
    final = run(stub, model, spec)
    assert final.state == job_pb2.JOB_STATE_FAILED
    error = from_status(final.error)
    assert error.reason == "TARGET_NOT_MET"
    assert final.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert float(error.metadata["reached_speedup"]) < 19.0


def test_a_contradictory_target_is_refused_before_any_worker(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, _spec(latency_speedup=2.0, latency_ms=1.0))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.target.latency_ms" in {v.field for v in status_error(caught.value).violations}


def test_a_device_this_node_lacks_is_refused_before_any_worker(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef
) -> None:
    spec = _spec(latency_speedup=2.0)
    spec.benchmark.device = spec_pb2.DEVICE_CUDA
    with pytest.raises(grpc.RpcError) as caught:
        create(stub, model, spec)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    error = status_error(caught.value)
    assert error.reason == "RUNTIME_UNAVAILABLE"
    assert [v.field for v in error.violations] == ["spec.benchmark.device"]
