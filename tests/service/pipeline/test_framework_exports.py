"""Models from other frameworks, exported as their users export them (scripts/framework_fixtures.py):
Keras through tf2onnx (NHWC, Transposes around the convolutions) and PaddlePaddle through paddle2onnx.
Each is converted exactly, and CHANNEL (NEURON for the MLP) at 30 % gives a smaller model with the
original's output shape and dtype, its MACs reached and its fidelity reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.pipeline import run_optimization

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "frameworks"
CASES = [
    ("keras_cnn", spec_pb2.PRUNE_METHOD_CHANNEL),
    ("keras_mlp", spec_pb2.PRUNE_METHOD_NEURON),
    ("paddle_cnn", spec_pb2.PRUNE_METHOD_CHANNEL),
]
MACS_REACHED = {"keras_cnn": 2.1, "keras_mlp": 1.2, "paddle_cnn": 1.6}
"""At least these MACs reductions at ratio 0.3 (measured: 2.18x, 1.23x, 1.64x)."""


def _feed(model: onnx.ModelProto, batch: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feed[value.name] = rng.standard_normal([batch or shape[0], *shape[1:]]).astype(np.float32)
    return feed


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


@pytest.mark.parametrize("name", [name for name, _ in CASES])
def test_the_export_converts_exactly(name: str) -> None:
    model = onnx.load(str(FIXTURES / f"{name}.onnx"))
    feed = _feed(model)
    gm = onnx_to_fx(model)
    with torch.no_grad():
        converted = gm(*(torch.from_numpy(v) for v in feed.values()))
    if isinstance(converted, (tuple, list)):
        converted = converted[0]
    np.testing.assert_allclose(converted.numpy(), _run(model, feed), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "method"), CASES, ids=[name for name, _ in CASES])
def test_structured_pruning_at_30_percent(name: str, method: int, tmp_path: Path) -> None:
    path = FIXTURES / f"{name}.onnx"
    model = onnx.load(str(path))
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=method, ratio=0.3, round_to=1),  # type: ignore[arg-type]
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.5),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )
    result = run_optimization(path, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path, lambda *a, **k: None)
    (variant,) = result.report.variants
    assert variant.macs_reduction >= MACS_REACHED[name], [w.message for w in result.report.warnings]
    assert variant.stats.quality.samples == 4
    assert 0 < variant.stats.quality.cosine_similarity <= 1.0 + 1e-6
    assert any(list(layer.shape_after) != list(layer.shape_before) for layer in result.report.layers)
    pruned = onnx.load(str(result.artifacts["pruned.onnx"]))
    feed = _feed(model)
    before, after = _run(model, feed), _run(pruned, feed)
    assert (after.shape, after.dtype) == (before.shape, before.dtype)
