"""EARLY_EXIT construction and export, checked with real ONNX Runtime sessions.

A small CNN (three conv blocks) is exported to ONNX, heads are trained on inputs labelled by the model
itself, and the gated model is run: a threshold above 1 forces the full path (outputs equal the
original's), a threshold of 0 leaves at the first exit (the later blocks never run, per ORT's profile).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from prunekit.spec.dynamic_configs import DynamicConfig
from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pruning.dynamic import CalibrationRule, EarlyExit, Split, early_exit, with_threshold
from prunekit_server.pruning.dynamic.points import Graph, choose_points, classifier_output, exit_points
from prunekit_server.pruning.dynamic.torchscript import write_early_exit_torchscript


class Blocks(nn.Module):
    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.one = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.two = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.three = nn.Sequential(
            nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)
        )
        self.fc = nn.Linear(64, 5)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.three(self.two(self.one(x))).mean((2, 3)))
        return torch.softmax(y, 1) if self.softmax else y


def _export(path: Path, batch: int, softmax: bool = False) -> tuple[Path, list[model_pb2.InputSpec]]:
    torch.manual_seed(0)
    model = Blocks(softmax).eval()
    torch.onnx.export(
        model, (torch.zeros(batch, 1, 8, 8),), str(path), input_names=["x"], output_names=["y"], dynamo=False
    )
    return path, [model_pb2.InputSpec(name="x", shape=[batch, 1, 8, 8], dtype=model_pb2.DATA_TYPE_FLOAT32)]


def _data(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)


def _build(path: Path, inputs: list[model_pb2.InputSpec], tmp: Path, **config: object) -> EarlyExit:
    model = onnx.load(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = int(inputs[0].shape[0])
    x = _data(1, 96)
    labels = np.concatenate([session.run(None, {"x": x[i : i + batch]})[0] for i in range(0, 96, batch)])
    split = Split({"x": x}, labels.argmax(1))
    rule = CalibrationRule("top1_agreement", min_agreement=0.9)
    return early_exit(model, inputs, DynamicConfig(steps=60, **config), split, split, rule, tmp)  # type: ignore[arg-type]


def _ran(model: onnx.ModelProto, feed: dict[str, np.ndarray], tmp: Path) -> tuple[np.ndarray, set[str]]:
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / "profile")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = session.run(None, feed)[0]
    events = json.loads(Path(session.end_profiling()).read_text())
    return out, {e["name"] for e in events if e.get("cat") == "Node"}


def test_exit_points_are_block_ends_in_depth_order(tmp_path: Path) -> None:
    path, inputs = _export(tmp_path / "m.onnx", 1)
    graph = Graph(onnx.load(str(path)), inputs)
    points = exit_points(graph, classifier_output(graph))
    depths = [p.macs_fraction for p in points]
    assert depths == sorted(depths)
    chosen = choose_points(points, 3)
    assert 1 <= len(chosen) <= 3
    assert all(0 < p.macs_fraction <= 0.9 for p in chosen)
    assert len({p.macs_fraction for p in chosen}) == len(chosen)


def test_full_path_equals_the_original_and_an_early_exit_skips_the_later_blocks(tmp_path: Path) -> None:
    path, inputs = _export(tmp_path / "m.onnx", 1)
    built = _build(path, inputs, tmp_path, threshold=0.5, exits=["/one/one.2/MaxPool"])
    gated = built.model
    onnx.checker.check_model(gated, full_check=True)
    assert [n.op_type for n in gated.graph.node].count("If") == 1
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i, x in enumerate(_data(7, 4)):
        feed = {"x": x[None]}
        want = original.run(None, feed)[0]
        full, full_nodes = _ran(with_threshold(gated, 2.0), feed, tmp_path)
        np.testing.assert_allclose(full, want, rtol=1e-5, atol=1e-6)
        early, early_nodes = _ran(with_threshold(gated, 0.0), feed, tmp_path)
        assert (early.shape, early.dtype) == (want.shape, want.dtype)
        assert not any("three" in name for name in early_nodes), i
        assert any("three" in name for name in full_nodes)


def test_a_softmax_output_stays_a_distribution_on_every_path(tmp_path: Path) -> None:
    path, inputs = _export(tmp_path / "m.onnx", 1, softmax=True)
    built = _build(path, inputs, tmp_path, threshold=0.5)
    feed = {"x": _data(3, 1)}
    for threshold in (0.0, 2.0):
        out = ort.InferenceSession(
            with_threshold(built.model, threshold).SerializeToString(),
            providers=["CPUExecutionProvider"],
        ).run(None, feed)[0]
        assert out.shape == (1, 5)
        np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)


def test_batches_run_and_keep_the_original_shape(tmp_path: Path) -> None:
    path, inputs = _export(tmp_path / "m.onnx", 4)
    built = _build(path, inputs, tmp_path)
    assert built.calibrated
    assert abs(sum(built.shares) - 1.0) < 1e-9
    session = ort.InferenceSession(built.model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": _data(5, 4)})[0]
    assert (out.shape, out.dtype) == ((4, 5), np.float32)


def test_a_named_exit_that_is_not_an_exit_point_is_an_invalid_spec(tmp_path: Path) -> None:
    path, inputs = _export(tmp_path / "m.onnx", 1)
    with pytest.raises(ServiceError) as caught:
        _build(path, inputs, tmp_path, exits=["no_such_node"])
    assert caught.value.reason == "INVALID_SPEC"
    assert caught.value.violations[0].field == "spec.prune.dynamic.exits[0]"


def test_a_model_with_two_outputs_is_not_applicable(tmp_path: Path) -> None:
    path, inputs = _export(tmp_path / "m.onnx", 1)
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(model.graph.node[0].output[0], 1, None))
    with pytest.raises(ServiceError) as caught:
        classifier_output(Graph(model, inputs))
    assert (caught.value.code.name, caught.value.reason) == ("FAILED_PRECONDITION", "DYNAMIC_NOT_APPLICABLE")
    assert "one output" in caught.value.message


def test_the_torchscript_form_has_real_branches_and_matches_the_onnx_model(tmp_path: Path) -> None:
    path, inputs = _export(tmp_path / "m.onnx", 1)
    built = _build(path, inputs, tmp_path, threshold=0.5)
    assert built.graph is not None
    assert built.output is not None
    out = tmp_path / "dynamic.pt"
    warnings = write_early_exit_torchscript(
        built.graph, built.output, built.points, built.heads, built.model, built.threshold, out
    )
    assert warnings == []
    scripted = torch.jit.load(str(out))
    assert "if " in scripted.code
    x = torch.from_numpy(_data(11, 1))
    want = ort.InferenceSession(built.model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        scripted(x).detach().numpy(), want.run(None, {"x": x.numpy()})[0], rtol=1e-4, atol=1e-5
    )
