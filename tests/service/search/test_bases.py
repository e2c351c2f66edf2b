"""The ``layer`` and ``low_rank`` techniques: bases without the least important units, or with layers
factorized, searched like the original."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from scripts.digits import INPUT_NAME, export_onnx

from prunekit.spec.structured_configs import ChannelConfig
from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pipeline import run_optimization
from prunekit_server.pruning.base import PruneContext
from prunekit_server.pruning.structured import channel
from prunekit_server.pruning.structured.engine import Run
from prunekit_server.search.bases import LOW_RANK_ENERGIES, low_rank_bases, unit_bases
from tests.service.training.digits import teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGE = model_pb2.InputSpec(name=INPUT_NAME, shape=[64, 1, 8, 8])


def _convs(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "Conv" for node in model.graph.node)


def test_the_digits_cnn_has_one_base_without_its_identity_shaped_conv(tmp_path: Path) -> None:
    model = onnx.load(str(export_onnx(teacher(), tmp_path / "digits.onnx")))
    context = PruneContext(inputs=(IMAGE,), feeds=tuple(synthetic_inputs([IMAGE], 2, 0)))
    bases = unit_bases(model, context, tmp_path)
    assert len(bases) == 1
    (base,) = bases
    assert len(base.removed) == 1
    assert _convs(base.model) == _convs(model) - 1
    assert base.path.exists()
    assert [o.name for o in base.model.graph.output] == [o.name for o in model.graph.output]


def test_a_search_with_the_layer_technique_measures_candidates_of_both_bases(tmp_path: Path) -> None:
    path = export_onnx(teacher(), tmp_path / "digits.onnx")
    spec = spec_pb2.OptimizationSpec(
        inputs=[IMAGE],
        target=spec_pb2.TargetSpec(latency_speedup=1.5, techniques=["layer", "channel"], budget_seconds=40),
        benchmark=spec_pb2.BenchmarkSpec(max_seconds=1.0),
        evaluation=spec_pb2.EvaluationSpec(samples=4, min_cosine_similarity=0.1, min_top1_agreement=0.1),
    )
    result = run_optimization(path, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "w", lambda *a, **k: None)
    report = result.report
    candidates = report.search.candidates
    assert any(not c.removed_layers for c in candidates)
    assert any(c.removed_layers for c in candidates)
    assert "layer" in report.search.techniques
    chosen = next(c for c in candidates if c.selected)
    removed = [w for w in report.warnings if w.code == "LAYERS_REMOVED"]
    assert bool(removed) == bool(chosen.removed_layers)
    onnx_files = [p for name, p in result.artifacts.items() if name.endswith(".onnx") and "pruned" in name]
    assert onnx_files
    if chosen.removed_layers and chosen.quantization == "none":
        assert all(_convs(onnx.load(str(p))) < 3 for p in onnx_files)


def test_the_digits_cnn_has_factorized_bases_at_each_energy(tmp_path: Path) -> None:
    model = onnx.load(str(export_onnx(teacher(), tmp_path / "digits.onnx")))
    context = PruneContext(inputs=(IMAGE,), feeds=tuple(synthetic_inputs([IMAGE], 2, 0)))
    bases, why_not = low_rank_bases(model, context, tmp_path)
    assert why_not == []
    assert [b.energy for b in bases] == list(LOW_RANK_ENERGIES)
    assert len(bases[0].factorized) <= len(bases[1].factorized), "lower energy factorizes more"
    groups = len(Run(model, ChannelConfig(ratio=0.5), context, channel.METHOD).groups())
    for base in bases:
        assert base.derived
        assert _convs(base.model) == _convs(model) + len(base.factorized)
        run = Run(base.model, ChannelConfig(ratio=0.5), context, channel.METHOD)
        assert len(run.groups()) == groups + len(base.factorized), "each rank is a group the search narrows"
        assert [o.name for o in base.model.graph.output] == [o.name for o in model.graph.output]


def test_a_model_without_factorizable_layers_is_searched_without_them(tmp_path: Path) -> None:
    model = onnx.load(str(export_onnx(teacher(), tmp_path / "digits.onnx")))
    context = PruneContext(inputs=(IMAGE,), feeds=tuple(synthetic_inputs([IMAGE], 2, 0)))
    bases, why_not = low_rank_bases(model, context, tmp_path, ignore=["*"])
    assert bases == []
    assert [w.split(":")[0] for w in why_not] == ["LOW_RANK_NOT_SEARCHED"]


def test_a_search_with_the_low_rank_technique_narrows_factorized_bases(tmp_path: Path) -> None:
    path = export_onnx(teacher(), tmp_path / "digits.onnx")
    spec = spec_pb2.OptimizationSpec(
        inputs=[IMAGE],
        target=spec_pb2.TargetSpec(
            latency_speedup=1.5, techniques=["low_rank", "channel"], budget_seconds=45
        ),
        benchmark=spec_pb2.BenchmarkSpec(max_seconds=1.0),
        evaluation=spec_pb2.EvaluationSpec(samples=4, min_cosine_similarity=0.1, min_top1_agreement=0.1),
    )
    result = run_optimization(path, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "w", lambda *a, **k: None)
    report = result.report
    candidates = report.search.candidates
    assert any(not c.factorized_layers for c in candidates)
    factorized = [c for c in candidates if c.factorized_layers]
    assert factorized
    assert "low_rank" in report.search.techniques
    first, *later = candidates
    assert first.predicted_p50_ms == pytest.approx(first.table_p50_ms), "nothing to calibrate by yet"
    assert all(c.predicted_p50_ms != c.table_p50_ms for c in later), "calibrated across bases and modes"
    chosen = next(c for c in candidates if c.selected)
    warned = [w for w in report.warnings if w.code == "LAYERS_FACTORIZED"]
    assert bool(warned) == bool(chosen.factorized_layers)
    pruned = onnx.load(str(result.artifacts["pruned.onnx"]))
    if chosen.factorized_layers:
        assert _convs(pruned) == 3 + len(chosen.factorized_layers)
    original = onnx.load(str(path))
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
