"""The search on converted zoo models: depthwise and grouped layers, levels, the path, the choice."""

from __future__ import annotations

import itertools
from pathlib import Path

import onnx
import pytest

from prunekit.spec.structured_configs import ChannelConfig
from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pipeline import run_optimization
from prunekit_server.pruning.base import PruneContext
from prunekit_server.pruning.structured import channel
from prunekit_server.pruning.structured.engine import Run
from prunekit_server.pruning.structured.groups import dependency_graph
from prunekit_server.search.build import group_spaces
from prunekit_server.search.layers import layers_of
from prunekit_server.search.run import node_kind
from prunekit_server.search.space import Space, greedy_path
from prunekit_server.search.table import load_table
from prunekit_server.search.timing import time_models
from tests.zoo import ZOO, ResNet18, ZooEntry, export

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _space(tmp_path: Path, name: str) -> Space:
    entry = ZOO[name]
    path = export(entry.build(), entry, tmp_path / f"{name}.onnx", "legacy", 17)
    model = onnx.load(str(path))
    inputs = tuple(entry.inputs)
    context = PruneContext(inputs=inputs, feeds=tuple(synthetic_inputs(inputs, 4, 0)))
    run = Run(model, ChannelConfig(ratio=0.5), context, channel.METHOD)
    groups = run.groups()
    graph = dependency_graph(run.gm, run.args)
    spaces, _ = group_spaces(run.gm, graph, groups, run.batches, ignore=(), max_layer_ratio=0.9, budget_s=60)
    baseline = time_models({"m": path}, synthetic_inputs(inputs, 1, 0)[0], threads=1, device="cpu")["m"]
    table = load_table(None, node_kind(1, "cpu", int(inputs[0].shape[0])))
    space = Space(spaces, layers_of(run.gm, run.args), table, baseline, threads=1, device="cpu")
    space.fill_levels()
    return space


@pytest.mark.parametrize("name", ["mobilenetv2", "shufflenet", "resnet"])
def test_levels_drop_in_latency_and_the_path_only_gets_faster(tmp_path: Path, name: str) -> None:
    space = _space(tmp_path, name)
    assert space.groups
    for group in space.groups:
        assert group.levels[0] == group.width
        assert list(group.levels) == sorted(group.levels, reverse=True)
        assert all(level >= group.floor for level in group.levels)
        costs = [space.estimate({group.key: w}) for w in group.levels]
        assert all(later < earlier for earlier, later in itertools.pairwise(costs))
    path = greedy_path(space)
    predicted = [state.predicted_ms for state in path]
    assert predicted == sorted(predicted, reverse=True)
    assert [s.loss for s in path] == sorted(s.loss for s in path)


def test_a_depthwise_model_reaches_a_modest_target_end_to_end(tmp_path: Path) -> None:
    entry = ZOO["mobilenetv2"]
    path = export(entry.build(), entry, tmp_path / "m.onnx", "legacy", 17)
    spec = spec_pb2.OptimizationSpec(
        inputs=[model_pb2.InputSpec(name="image", shape=[1, 3, 32, 32])],
        target=spec_pb2.TargetSpec(latency_speedup=1.3, techniques=["channel"], budget_seconds=60),
        benchmark=spec_pb2.BenchmarkSpec(max_seconds=2.0),
        evaluation=spec_pb2.EvaluationSpec(samples=8, min_cosine_similarity=0.5, min_top1_agreement=0.1),
    )
    tables = tmp_path / "tables"
    report = run_optimization(
        path, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "w", lambda *a, **k: None, latency_tables=tables
    ).report
    search = report.search
    assert search.candidates
    assert sum(c.selected for c in search.candidates) == 1
    assert any(c.widths for c in search.candidates)
    assert list(tables.glob("*.json"))


def _target_job(
    tmp_path: Path, name: str, target: spec_pb2.TargetSpec, size: int = 32
) -> report_pb2.OptimizationReport:
    entry = ZOO[name]
    if size != 32:
        image = model_pb2.InputSpec(name="image", shape=[1, 3, size, size])
        entry = ZooEntry(name, lambda: ResNet18(width=32), (image,))
    path = export(entry.build(), entry, tmp_path / f"{name}.onnx", "legacy", 17)
    spec = spec_pb2.OptimizationSpec(
        inputs=[model_pb2.InputSpec(name="image", shape=[1, 3, size, size])],
        target=target,
        benchmark=spec_pb2.BenchmarkSpec(max_seconds=1.0),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )
    return run_optimization(
        path, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "w", lambda *a, **k: None
    ).report


def test_a_quantization_only_target_prunes_nothing(tmp_path: Path) -> None:
    target = spec_pb2.TargetSpec(latency_speedup=1.2, techniques=["static_int8"], budget_seconds=30)
    report = _target_job(tmp_path, "resnet18", target)
    assert report.search.candidates
    assert all(not c.widths for c in report.search.candidates)
    assert all(layer.shape_after == layer.shape_before for layer in report.layers)
    first = report.search.candidates[0]
    assert first.predicted_p50_ms == pytest.approx(first.table_p50_ms)


def test_the_budget_bounds_the_search(tmp_path: Path) -> None:
    target = spec_pb2.TargetSpec(latency_speedup=3.0, techniques=["channel"], budget_seconds=10)
    report = _target_job(tmp_path, "resnet18", target, size=64)
    assert report.search.candidates
    assert report.search.seconds < 10 * 3
