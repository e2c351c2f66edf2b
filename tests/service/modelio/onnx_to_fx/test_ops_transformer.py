"""Gemm / MatMul as nn.Linear, LayerNormalization (and its decomposition) as nn.LayerNorm."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper
from torch import nn

from .helpers import assert_parity, graph_model, modules_of, op_parity, randn

A = randn(3, 5)


@pytest.mark.parametrize(
    ("attrs", "c_shape"),
    [
        ({}, (4,)),
        ({"transB": 1}, (1, 4)),
        ({"alpha": 0.5, "beta": 2.0}, (3, 4)),
        ({"transA": 1}, ()),
        ({"alpha": 1.5, "transB": 1}, None),
        ({"beta": 0.0}, (4,)),
    ],
)
def test_gemm_is_a_linear(attrs: dict[str, Any], c_shape: tuple[int, ...] | None) -> None:
    a = randn(5, 3) if attrs.get("transA") else A
    b = randn(4, 5, seed=1) if attrs.get("transB") else randn(5, 4, seed=1)
    consts = {"b": b}
    if c_shape is not None:
        consts["c"] = np.asarray(randn(*c_shape, seed=2) if c_shape else np.float32(0.3))
    gm, _ = op_parity("Gemm", {"a": a}, consts, **attrs)
    assert modules_of(gm, nn.Linear)


def test_gemm_with_graph_weights() -> None:
    gm, _ = op_parity(
        "Gemm", {"a": A, "b": randn(4, 5, seed=1)}, {"c": randn(4, seed=2)}, transB=1, alpha=2.0
    )
    assert not modules_of(gm, nn.Linear)


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)])
def test_matmul_with_constant_weight_is_a_linear(shape: tuple[int, ...]) -> None:
    gm, _ = op_parity("MatMul", {"a": randn(*shape)}, {"w": randn(5, 4, seed=1)})
    assert modules_of(gm, nn.Linear)


@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_folds_into_one_linear(bias_first: bool) -> None:
    inputs = ["bias", "p"] if bias_first else ["p", "bias"]
    nodes = [helper.make_node("MatMul", ["a", "w"], ["p"]), helper.make_node("Add", inputs, ["y"])]
    consts = {"w": randn(5, 4, seed=1), "bias": randn(4, seed=2)}
    gm, _ = assert_parity(graph_model(nodes, {"a": randn(2, 3, 5)}, consts), {"a": randn(2, 3, 5)})
    linear = gm.get_submodule(modules_of(gm, nn.Linear)[0])
    assert isinstance(linear, nn.Linear)
    assert linear.bias is not None
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_module", "output"]


def test_matmul_add_not_folded_when_the_product_is_read_twice() -> None:
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["p"]),
        helper.make_node("Add", ["p", "bias"], ["q"]),
        helper.make_node("Mul", ["p", "q"], ["y"]),
    ]
    consts = {"w": randn(5, 4, seed=1), "bias": randn(1, 4, seed=2)}
    gm, _ = assert_parity(graph_model(nodes, {"a": A}, consts), {"a": A})
    linear = gm.get_submodule(modules_of(gm, nn.Linear)[0])
    assert isinstance(linear, nn.Linear)
    assert linear.bias is None


def test_matmul_of_two_graph_tensors() -> None:
    gm, _ = op_parity("MatMul", {"a": randn(2, 3, 5), "b": randn(2, 5, 4, seed=1)})
    assert not modules_of(gm, nn.Linear)


@pytest.mark.parametrize(("axis", "bias"), [(-1, True), (-2, True), (-1, False)])
def test_layer_norm(axis: int, bias: bool) -> None:
    x = randn(2, 3, 4, 5)
    shape = x.shape[axis:]
    consts = {"scale": randn(*shape, seed=1)}
    if bias:
        consts["bias"] = randn(*shape, seed=2)
    gm, _ = op_parity("LayerNormalization", {"x": x}, consts, axis=axis, epsilon=1e-3)
    assert modules_of(gm, nn.LayerNorm)


def test_layer_norm_with_graph_scale_and_statistics_outputs() -> None:
    x = randn(2, 3, 5)
    gm, _ = op_parity("LayerNormalization", {"x": x, "scale": randn(5, seed=1)}, outputs=["y", "mean", "inv"])
    assert not modules_of(gm, nn.LayerNorm)


def _decomposed_layer_norm(eps: float, affine: bool) -> list[Any]:
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1]),
        helper.make_node("Add", ["v", "eps"], ["e"]),
        helper.make_node("Sqrt", ["e"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n" if affine else "y"]),
    ]
    if affine:
        nodes += [
            helper.make_node("Mul", ["n", "ln.weight"], ["g"]),
            helper.make_node("Add", ["g", "ln.bias"], ["y"]),
        ]
    return nodes


def test_decomposed_layer_norm_becomes_a_module() -> None:
    x = randn(2, 3, 6)
    consts = {
        "two": np.float32(2.0),
        "eps": np.float32(1e-5),
        "ln.weight": randn(6, seed=1),
        "ln.bias": randn(6),
    }
    gm, _ = assert_parity(
        graph_model(_decomposed_layer_norm(1e-5, True), {"x": x}, consts, opset=13), {"x": x}
    )
    assert modules_of(gm, nn.LayerNorm) == ["ln"]
    assert len(gm.meta["prunekit_onnx_names"]["ln"]["nodes"]) == 10
    gm, _ = assert_parity(
        graph_model(_decomposed_layer_norm(1e-5, False), {"x": x}, consts, opset=13), {"x": x}
    )
    assert not modules_of(gm, nn.LayerNorm)
