"""TorchScript that took torch's fused attention fast paths exports to ONNX and converts, same outputs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.modelio.torchscript import load_torchscript, torchscript_to_onnx
from tests.zoo import ZOO, cached

FUSED = {"aten::_native_multi_head_attention", "aten::_transformer_encoder_layer_fwd"}


def test_the_fast_paths_export_and_convert_with_the_same_outputs(tmp_path: Path) -> None:
    path = cached("torchvit", "trace")
    module = load_torchscript(path)
    assert {node.kind() for node in module.inlined_graph.nodes()} >= FUSED
    entry = ZOO["torchvit"]
    model = torchscript_to_onnx(module, list(entry.inputs), tmp_path / "vit.onnx")
    assert {"Softmax", "LayerNormalization"} <= {node.op_type for node in model.graph.node}
    (image,) = entry.sample(seed=7)
    with torch.no_grad():
        expected = module(image).numpy()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": image.numpy()})[0], expected, rtol=1e-4, atol=1e-5)
    gm = onnx_to_fx(model, inputs=list(entry.inputs))
    with torch.no_grad():
        np.testing.assert_allclose(gm(image).numpy(), expected, rtol=1e-4, atol=1e-5)
    linears = [name for name, layer in gm.named_modules() if isinstance(layer, torch.nn.Linear)]
    assert len(linears) >= 3 * 4 + 2 * 2 + 1  # q, k, v, out per attention; two FFN layers per block; head


class _Positions(torch.nn.Module):
    """What Hugging Face mask code traces into decoders: ``diff`` with a prepend, ``cumsum`` of booleans."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.diff(x, dim=-1, prepend=x[:, :1] - 1)
        return torch.cumsum(steps != 1, dim=-1) + x.to(torch.float32).cumsum(0, dtype=torch.float64)


def test_diff_and_boolean_cumsum_export_and_run_in_onnx_runtime(tmp_path: Path) -> None:
    module = torch.jit.trace(_Positions(), (torch.arange(12).reshape(2, 6),))
    spec = model_pb2.InputSpec(name="x", shape=[2, 6], dtype=model_pb2.DATA_TYPE_INT64)
    model = torchscript_to_onnx(module, [spec], tmp_path / "positions.onnx")
    x = torch.tensor([[0, 1, 2, 0, 1, 5], [3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        expected = module(x).numpy()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected)


def test_scripted_encoder_layers_export_once_their_branches_are_answered(tmp_path: Path) -> None:
    """``torch.jit.script`` keeps the layers' fast-path checks (``aten::is_autocast_enabled`` and
    friends), which the exporter cannot write: answered for the declared inputs, the branches go and
    the model exports, runs in ONNX Runtime at another batch size with the original's outputs."""
    path = cached("torchvit", "script")
    original = load_torchscript(path)
    assert original.inlined_graph.findAllNodes("aten::is_autocast_enabled")
    entry = ZOO["torchvit"]
    model = torchscript_to_onnx(load_torchscript(path), list(entry.inputs), tmp_path / "vit.onnx")
    assert not any(node.op_type == "If" for node in model.graph.node)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed, rows in ((7, 2), (8, 3)):
        image = torch.randn(rows, *entry.sample(seed=seed)[0].shape[1:])
        with torch.no_grad():
            expected = original(image).numpy()
        np.testing.assert_allclose(
            session.run(None, {"image": image.numpy()})[0], expected, rtol=1e-4, atol=1e-5
        )
    gm = onnx_to_fx(model, inputs=list(entry.inputs))
    linears = [name for name, layer in gm.named_modules() if isinstance(layer, torch.nn.Linear)]
    assert len(linears) >= 3 * 4 + 2 * 2 + 1


class _ReadsTheData(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return torch.is_autocast_enabled() * x + x
        return x - 1


def test_a_branch_on_the_data_is_not_answered_and_the_refusal_says_so(tmp_path: Path) -> None:
    module = torch.jit.script(_ReadsTheData())
    spec = model_pb2.InputSpec(name="x", shape=[2, 3])
    with pytest.raises(ServiceError) as raised:
        torchscript_to_onnx(module, [spec], tmp_path / "data.onnx")
    assert raised.value.reason == "UNSUPPORTED_MODEL"
    assert "1 branch(es) read the data or the batch size" in raised.value.message


class _AsksTheBatch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) == 1:  # a batch of one is asked about: not answered as at the declared batch
            return x.squeeze(0) if torch.is_autocast_enabled() else x
        return x + 1 if torch.is_autocast_enabled() else x


def test_a_branch_on_a_batch_of_one_is_not_answered(tmp_path: Path) -> None:
    spec = model_pb2.InputSpec(name="x", shape=[2, 3])
    with pytest.raises(ServiceError) as raised:
        torchscript_to_onnx(torch.jit.script(_AsksTheBatch()), [spec], tmp_path / "batch.onnx")
    assert raised.value.reason == "UNSUPPORTED_MODEL"
    assert re.search(r"[1-9]\d* branch\(es\) read the data or the batch size", raised.value.message)
