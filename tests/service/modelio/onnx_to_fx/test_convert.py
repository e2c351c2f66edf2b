"""The zoo, exported by both exporters at several opsets, converts with parity to ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from prunekit.v1 import model_pb2
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from tests.zoo import number_tensors

from .helpers import assert_parity, graph_model, input_names, modules_of, randn, run_gm, run_ort
from .zoo import LEGACY_OPSETS, NEWEST_OPSET, ZOO

EXPORTS = [
    *((name, "legacy", opset) for name in ZOO for opset in LEGACY_OPSETS),
    *((name, "converted", NEWEST_OPSET) for name in ZOO),
    *((name, "dynamo", 18) for name in ZOO),
    *((name, "dynamo", 23) for name in ("unet", "transformer")),
    *((name, "dynamo-batch", 18) for name in ("mobile", "transformer")),
]
EXPECTED_MODULES: dict[str, dict[type[nn.Module], int]] = {
    "resnet": {nn.Conv2d: 6, nn.BatchNorm2d: 6, nn.Linear: 1},
    "mobile": {nn.Conv2d: 8, nn.BatchNorm2d: 2, nn.Linear: 1},
    "unet": {nn.Conv2d: 6, nn.ConvTranspose2d: 1, nn.BatchNorm2d: 5},
    "mlp": {nn.Linear: 3},
    "transformer": {nn.Linear: 7, nn.LayerNorm: 2, nn.Embedding: 1},
}


def _feeds(name: str, model: onnx.ModelProto, batch: int = 2) -> dict[str, np.ndarray]:
    tensors = ZOO[name].sample(batch=batch, seed=3)
    return {n: t.numpy() for n, t in zip(input_names(model), tensors, strict=True)}


@pytest.mark.parametrize(("name", "exporter", "opset"), EXPORTS, ids=[f"{n}-{e}-{o}" for n, e, o in EXPORTS])
def test_zoo_parity(exported: Callable[..., onnx.ModelProto], name: str, exporter: str, opset: int) -> None:
    model = exported(name, exporter, opset)
    gm, _ = assert_parity(model, _feeds(name, model))
    expected = dict(EXPECTED_MODULES[name])
    if exporter.startswith("dynamo") and nn.BatchNorm2d in expected:
        expected[nn.BatchNorm2d] = 0  # the dynamo exporter folds eval-mode BatchNorm into the convs
    assert {kind: len(modules_of(gm, kind)) for kind in expected} == expected
    if exporter != "dynamo":
        # a symbolic batch: the converted graph follows it too
        feeds = _feeds(name, model, batch=3)
        np.testing.assert_allclose(
            run_gm(gm, feeds, input_names(model))[0], run_ort(model, feeds)[0], rtol=1e-4, atol=1e-4
        )


def _eval_mode(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every BatchNormalization in inference mode (running statistics)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.op_type == "BatchNormalization":
            del node.output[1:]
            for attr in node.attribute:
                if attr.name == "training_mode":
                    attr.i = 0
    return copy


@pytest.mark.parametrize("name", ["resnet", "unet"])
@pytest.mark.parametrize("opset", [11, 15])
def test_training_mode_export_converts(
    exported: Callable[..., onnx.ModelProto], name: str, opset: int
) -> None:
    model = exported(name, "legacy", opset, training=True)
    gm = onnx_to_fx(model)
    assert gm.meta["prunekit_training_mode_batchnorm"]
    feeds = _feeds(name, model)
    np.testing.assert_allclose(
        run_gm(gm, feeds, input_names(model))[0], run_ort(_eval_mode(model), feeds)[0], rtol=1e-4, atol=1e-5
    )
    # ONNX Runtime runs a training-mode node with batch statistics: so does the module in train()
    gm.train()
    expected = run_ort(model, feeds)[0]
    actual = run_gm(gm, feeds, input_names(model))[0]
    assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4


def test_a_training_mode_export_with_dropout(exported: Callable[..., onnx.ModelProto]) -> None:
    model = exported("mlp", "legacy", 13, training=True)
    assert "Dropout" in {n.op_type for n in model.graph.node}
    gm = onnx_to_fx(model)
    assert modules_of(gm, nn.Dropout)
    feeds = _feeds("mlp", model)
    with torch.no_grad():
        eager = ZOO["mlp"].build()(torch.from_numpy(feeds["features"])).numpy()
    np.testing.assert_allclose(run_gm(gm, feeds, ["features"])[0], eager, rtol=1e-4, atol=1e-5)


def test_model_local_functions_are_inlined() -> None:
    body = [helper.make_node("Mul", ["a", "a"], ["sq"]), helper.make_node("Add", ["sq", "a"], ["out"])]
    function = helper.make_function(
        "local", "square_plus", ["a"], ["out"], body, [helper.make_opsetid("", 17)]
    )
    graph = helper.make_graph(
        [helper.make_node("square_plus", ["x"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[function],
    )
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    assert_parity(model, {"x": x})


def test_the_graph_module_trains(exported: Callable[..., onnx.ModelProto]) -> None:
    for name, kinds in (("resnet", (nn.Conv2d, nn.BatchNorm2d, nn.Linear)), ("transformer", (nn.LayerNorm,))):
        model = exported(name, "legacy", 17)
        gm = onnx_to_fx(model)
        assert not gm.training
        gm.train()
        assert all(p.requires_grad for p in gm.parameters())
        (x,) = ZOO[name].sample()
        loss = gm(x).square().mean()
        loss.backward()
        for module in gm.modules():
            if isinstance(module, kinds):
                assert module.weight.grad is not None
                assert module.weight.grad.abs().sum() > 0
        optimizer = torch.optim.SGD(gm.parameters(), lr=0.1)
        optimizer.step()
        assert gm(x).square().mean().item() != loss.item()


def test_meta_keeps_the_onnx_names(exported: Callable[..., onnx.ModelProto]) -> None:
    model = exported("resnet", "legacy", 17)
    gm = onnx_to_fx(model)
    names = gm.meta["prunekit_onnx_names"]
    assert names["layer1.0.conv1"]["initializers"] == ["layer1.0.conv1.weight"]
    assert names["layer1.0.conv1"]["node"] == "/layer1/layer1.0/conv1/Conv"
    assert names["fc"]["op_type"] == "Gemm"
    assert gm.meta["prunekit_input_names"] == ["image"]
    assert gm.meta["prunekit_output_names"] == ["output"]
    assert gm.meta["prunekit_opset"] == 17
    dynamo = onnx_to_fx(exported("transformer", "dynamo", 18))
    assert {"attn.q", "attn.k", "ff1", "head"} <= set(dynamo.meta["prunekit_onnx_names"])


def test_declared_inputs_set_the_sample_shapes(exported: Callable[..., onnx.ModelProto]) -> None:
    model = exported("mlp", "legacy", 17)
    spec = model_pb2.InputSpec(name="features", shape=[5, 4, 8])
    gm = onnx_to_fx(model, inputs=[spec])
    feeds = {"features": np.random.default_rng(0).standard_normal((5, 4, 8)).astype(np.float32)}
    assert np.abs(run_gm(gm, feeds, ["features"])[0] - run_ort(model, feeds)[0]).max() < 1e-5


@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_tensors_named_by_numbers(exported: Callable[..., onnx.ModelProto], name: str) -> None:
    """Older exporters name tensors ``0``, ``1``...: the generated code stays valid Python."""
    model = number_tensors(exported(name, "legacy", 13))
    gm, _ = assert_parity(model, _feeds(name, model))
    assert gm.meta["prunekit_input_names"] == ["0"]


def test_names_that_are_python_words() -> None:
    feeds = {"self": randn(2, 3), "class": randn(2, 3), "torch": randn(2, 3)}
    nodes = [
        helper.make_node("Add", ["self", "class"], ["0"], name="if"),
        helper.make_node("Mul", ["0", "torch"], ["y"], name="lambda"),
    ]
    assert_parity(graph_model(nodes, feeds), feeds)
