"""The way back: GraphModule -> ONNX (ONNX Runtime matches it) and -> TorchScript (loads, matches)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from prunekit.v1 import model_pb2
from prunekit_server.modelio.onnx_to_fx import fx_to_onnx, fx_to_torchscript, onnx_to_fx

from .helpers import compare, input_names, run_gm, run_ort
from .test_shapes import MOBILE, _apply
from .zoo import ZOO

CASES = [
    ("resnet", "legacy", 17),
    ("transformer", "legacy", 13),
    ("mobile", "dynamo", 18),
    ("unet", "legacy", 11),
]


def _feeds(name: str, batch: int, names: list[str]) -> dict[str, np.ndarray]:
    tensors = ZOO[name].sample(batch=batch, seed=9)
    return {n: t.numpy() for n, t in zip(names, tensors, strict=True)}


@pytest.mark.parametrize(("name", "exporter", "opset"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_round_trip_to_onnx_and_torchscript(
    exported: Callable[..., onnx.ModelProto], tmp_path: Path, name: str, exporter: str, opset: int
) -> None:
    original = exported(name, exporter, opset)
    gm = onnx_to_fx(original)
    inputs = list(ZOO[name].inputs)
    written = fx_to_onnx(gm, inputs, tmp_path / "model.onnx")
    onnx.checker.check_model(written)
    assert [i.name for i in written.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in written.graph.output] == [o.name for o in original.graph.output]
    names = input_names(original)
    feeds = _feeds(name, 3, names)  # the exported batch dimension is symbolic
    assert compare(run_ort(written, feeds), run_gm(gm, feeds, names)) < 1e-4
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in gm.modules()):
        assert "BatchNormalization" in {n.op_type for n in written.graph.node}

    fx_to_torchscript(gm, inputs, tmp_path / "model.pt")
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    feeds = _feeds(name, 2, names)
    assert compare(run_gm(loaded, feeds, names), run_gm(gm, feeds, names)) < 1e-4


def test_a_pruned_graph_exports_with_its_new_widths(
    exported: Callable[..., onnx.ModelProto], tmp_path: Path
) -> None:
    gm = onnx_to_fx(exported("mobile", "dynamo", 18))
    _apply(gm, MOBILE)
    written = fx_to_onnx(gm, list(ZOO["mobile"].inputs), tmp_path / "pruned.onnx", opset=13)
    widths = {t.name: list(t.dims) for t in written.graph.initializer}
    assert widths["mix.weight"][0] == 8
    assert widths["head.weight"] == [5, 32]
    feeds = _feeds("mobile", 4, ["x"])  # the dynamo exporter named the input after forward's argument
    assert compare(run_ort(written, feeds), run_gm(gm, feeds, ["x"])) < 1e-4


def test_export_keeps_the_module_mode_and_defaults_names(tmp_path: Path) -> None:
    gm = onnx_to_fx(onnx.load_from_string(_tiny_model()))
    gm.meta.pop("prunekit_output_names")
    gm.train()
    spec = model_pb2.InputSpec(name="x", shape=[2, 3])
    written = fx_to_onnx(gm, [spec], tmp_path / "m.onnx", dynamic_batch=False)
    assert gm.training
    assert [o.name for o in written.graph.output] == ["output"]
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
