"""run_optimization with CHANNEL and NEURON: a smaller model, its layers' widths, TorchScript out."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.pipeline import run_optimization
from tests.service.pruning.structured_zoo import feeds, run_ort
from tests.zoo import ZOO, cached, export, number_tensors


def _spec(name: str, **prune: object) -> spec_pb2.OptimizationSpec:
    return spec_pb2.OptimizationSpec(
        inputs=list(ZOO[name].inputs),
        prune=spec_pb2.PruneSpec(**prune),  # type: ignore[arg-type]
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.5),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )


def _quiet(stage: str, fraction: float, message: str) -> None:
    """A progress callback that drops the updates."""


def _codes(report: report_pb2.OptimizationReport) -> set[str]:
    return {w.code for w in report.warnings}


def test_channel_job_halves_the_macs_and_reports_every_layer_width(tmp_path: Path) -> None:
    spec = _spec("resnet18", method=spec_pb2.PRUNE_METHOD_CHANNEL, target_macs_reduction=2.0, round_to=8)
    result = run_optimization(
        cached("resnet18", "legacy"), model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path, print
    )
    report = result.report
    (variant,) = report.variants
    assert abs(variant.macs_reduction / 2.0 - 1) <= 0.05
    assert variant.stats.parameters < report.baseline.parameters
    assert variant.stats.size_bytes < report.baseline.size_bytes
    assert variant.stats.latency.p50_ms > 0
    assert variant.stats.quality.samples == 4
    assert "UNSTRUCTURED_NO_SPEEDUP" not in _codes(report)
    narrower = [layer for layer in report.layers if list(layer.shape_after) != list(layer.shape_before)]
    assert len(narrower) >= 10
    for layer in narrower:
        assert layer.parameters_after < layer.parameters_before
        assert 0 < layer.macs_after < layer.macs_before, layer.name
        assert layer.shape_after[0] % 8 == 0 or layer.shape_after[0] == layer.shape_before[0]
    pruned = onnx.load(str(result.artifacts["pruned.onnx"]))
    feed = feeds(list(spec.inputs), 1)[0]
    assert run_ort(pruned, feed)[0].shape == (2, 10)


def test_channel_job_on_tensors_named_by_numbers(tmp_path: Path) -> None:
    """A valid opset-13 CNN whose tensors are ``0``, ``1``... (older exporters) prunes like any other."""
    entry = ZOO["resnet"]
    source = export(entry.build(), entry, tmp_path / "resnet-13.onnx", "legacy", 13)
    numbered = tmp_path / "numbered.onnx"
    onnx.save(number_tensors(onnx.load(str(source))), str(numbered))
    spec = _spec("resnet", method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=0.3, round_to=1)
    spec.inputs[0].name = "0"
    result = run_optimization(numbered, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "job", _quiet)
    (variant,) = result.report.variants
    assert variant.macs_reduction > 1.2
    assert any(list(layer.shape_after) != list(layer.shape_before) for layer in result.report.layers)
    pruned = onnx.load(str(result.artifacts["pruned.onnx"]))
    assert run_ort(pruned, feeds(list(spec.inputs), 1)[0])[0].shape == (2, 10)


@pytest.mark.parametrize("fmt", ["legacy", "dynamo", "script"])
def test_channel_job_on_a_scalar_input_with_a_fixed_value(fmt: str, tmp_path: Path) -> None:
    """The voice-activity model frames its audio by ``sr``: random data cannot feed it, its ``value`` can."""
    model_format = model_pb2.MODEL_FORMAT_TORCHSCRIPT if fmt == "script" else model_pb2.MODEL_FORMAT_ONNX
    spec = _spec("vad", method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=0.3, round_to=1)
    result = run_optimization(cached("vad", fmt), model_format, spec, tmp_path, _quiet)
    (variant,) = result.report.variants
    assert variant.macs_reduction > 1.2
    assert variant.stats.quality.samples == 4
    pruned = onnx.load(str(result.artifacts["pruned.onnx"]))
    assert [v.name for v in pruned.graph.input] == ["audio", "sr"]
    assert [d.dim_value for d in pruned.graph.input[1].type.tensor_type.shape.dim] == []
    audio, rate = ZOO["vad"].sample()
    assert run_ort(pruned, {"audio": audio.numpy(), "sr": rate.numpy()})[0].shape == (2, 2)


@pytest.mark.parametrize(
    ("method", "ratio", "warning"),
    [
        (spec_pb2.PRUNE_METHOD_CHANNEL, 0.3, "GROUP_SKIPPED"),
        (spec_pb2.PRUNE_METHOD_ATTENTION_HEAD, 0.25, "HEADS_PRUNED"),
    ],
)
def test_torchscript_with_the_fused_attention_fast_paths(
    method: int, ratio: float, warning: str, tmp_path: Path
) -> None:
    """``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` traced without gradients."""
    spec = _spec("torchvit", method=method, ratio=ratio)
    result = run_optimization(
        cached("torchvit", "trace"), model_pb2.MODEL_FORMAT_TORCHSCRIPT, spec, tmp_path, _quiet
    )
    (variant,) = result.report.variants
    assert variant.macs_reduction > 1.1
    assert warning in _codes(result.report)
    module = torch.jit.load(str(result.artifacts["pruned.pt"]))
    with torch.no_grad():
        assert module(*ZOO["torchvit"].sample()).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "fmt", "method", "kept"),
    [
        ("mlp", "script", spec_pb2.PRUNE_METHOD_NEURON, "your TorchScript module"),
        ("mobilenetv2", "trace", spec_pb2.PRUNE_METHOD_CHANNEL, "a trace of the pruned graph"),
    ],
)
def test_torchscript_in_torchscript_out(name: str, fmt: str, method: int, kept: str, tmp_path: Path) -> None:
    spec = _spec(name, method=method, ratio=0.5, round_to=1, importance=spec_pb2.IMPORTANCE_ACTIVATION)
    result = run_optimization(cached(name, fmt), model_pb2.MODEL_FORMAT_TORCHSCRIPT, spec, tmp_path, _quiet)
    report = result.report
    (variant,) = report.variants
    assert [f.format for f in variant.files] == [
        model_pb2.MODEL_FORMAT_TORCHSCRIPT,
        model_pb2.MODEL_FORMAT_ONNX,
    ]
    assert variant.macs_reduction > 1.2
    notes = [w.message for w in report.warnings if w.code == "TORCHSCRIPT_OUTPUT"]
    assert len(notes) == 1
    assert kept in notes[0]
    assert {"SYNTHETIC_IMPORTANCE", "SYNTHETIC_INPUTS"} <= _codes(report)
    module = torch.jit.load(str(result.artifacts["pruned.pt"]))
    sample = ZOO[name].sample()
    with torch.no_grad():
        assert module(*sample).shape == ZOO[name].build()(*sample).shape


@pytest.mark.parametrize("fmt", ["trace", "legacy"])
def test_heads_of_an_encoder_whose_widths_come_from_its_input(fmt: str, tmp_path: Path) -> None:
    """Head width ``d // heads`` and merged width ``d`` computed from the attention's input (traced code)."""
    model_format = model_pb2.MODEL_FORMAT_TORCHSCRIPT if fmt == "trace" else model_pb2.MODEL_FORMAT_ONNX
    spec = _spec("encoder", method=spec_pb2.PRUNE_METHOD_ATTENTION_HEAD, ratio=0.5)
    result = run_optimization(cached("encoder", fmt), model_format, spec, tmp_path, _quiet)
    (variant,) = result.report.variants
    assert "HEADS_PRUNED" in _codes(result.report)
    assert variant.macs_reduction > 1.1
    sample = ZOO["encoder"].sample()
    if fmt == "trace":
        module = torch.jit.load(str(result.artifacts["pruned.pt"]))
        with torch.no_grad():
            assert module(*sample).shape == (2, 4)
    pruned = onnx.load(str(result.artifacts["pruned.onnx"]))
    assert run_ort(pruned, {"ids": sample[0].numpy()})[0].shape == (2, 4)


def test_iterative_channel_job_reports_every_step(tmp_path: Path) -> None:
    spec = _spec(
        "resnet",
        method=spec_pb2.PRUNE_METHOD_CHANNEL,
        ratio=0.5,
        round_to=1,
        schedule=spec_pb2.PRUNE_SCHEDULE_ITERATIVE,
        steps=2,
    )
    report = run_optimization(
        cached("resnet", "legacy"), model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path, _quiet
    ).report
    assert [s.step for s in report.schedule] == [1, 2]
    assert report.schedule[0].macs > report.schedule[1].macs == report.variants[0].stats.macs
    assert "SYNTHETIC_RECOVERY" in _codes(report)
