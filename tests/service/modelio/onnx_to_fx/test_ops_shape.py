"""Shape, constants, casts, Range, Identity and Dropout against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from .helpers import assert_parity, graph_model, ints, modules_of, op_parity, randn

X = randn(2, 3, 4, 5)


@pytest.mark.parametrize(("start", "end"), [(None, None), (1, None), (-2, -1), (0, 10)])
def test_shape(start: int | None, end: int | None) -> None:
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    op_parity("Shape", {"x": X}, opset=15, **attrs)


def test_size_and_shape_arithmetic_into_reshape() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Size", ["x"], ["n"]),
        helper.make_node("Div", ["n", "b"], ["rest"]),
        helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
        helper.make_node("Unsqueeze", ["rest", "axes"], ["r1"]),
        helper.make_node("Concat", ["b1", "r1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    model = graph_model(nodes, {"x": X}, {"i0": np.int64(0), "axes": ints(0)}, opset=13)
    assert_parity(model, {"x": X})


@pytest.mark.parametrize(
    "attr",
    [
        {"value": numpy_helper.from_array(randn(2, 3))},
        {"value_float": 2.5},
        {"value_floats": [1.0, 2.0]},
        {"value_int": 7},
        {"value_ints": [1, 2, 3]},
    ],
)
def test_constant(attr: dict[str, object]) -> None:
    nodes = [helper.make_node("Constant", [], ["c"], **attr), helper.make_node("Identity", ["c"], ["y"])]
    model = graph_model(nodes, {})
    assert_parity(model, {})


def test_constant_of_shape_from_graph_shape_and_constant() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node(
            "ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])
        ),
        helper.make_node("Add", ["x", "c"], ["y"]),
        helper.make_node("ConstantOfShape", ["shape"], ["z"]),
    ]
    model = graph_model(nodes, {"x": X}, {"shape": ints(2, 2)}, outputs=["y", "z"])
    assert_parity(model, {"x": X})


@pytest.mark.parametrize("to", [TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL, TensorProto.DOUBLE])
def test_cast(to: int) -> None:
    op_parity("Cast", {"x": X * 3}, to=to)


def test_cast_of_shape_values_and_cast_like() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["f"], ["r"]),
        helper.make_node("Cast", ["r"], ["i"], to=TensorProto.INT64),
        helper.make_node("CastLike", ["i", "x"], ["g"]),
        helper.make_node("Mul", ["x", "g"], ["y"]),
    ]
    model = graph_model(nodes, {"x": randn(4, 9, 1, 4)}, opset=15)
    assert_parity(model, {"x": randn(4, 9, 1, 4)})


def test_range_constant_and_from_a_shape() -> None:
    op_parity("Range", {}, {"a": np.int64(1), "b": np.int64(9), "d": np.int64(2)})
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "f"], ["y"]),
    ]
    consts = {"i": np.int64(3), "zero": np.int64(0), "one": np.int64(1)}
    model = graph_model(nodes, {"x": X}, consts)
    assert_parity(model, {"x": X})


@pytest.mark.parametrize("opset", [11, 13])
def test_dropout_is_a_module_and_identity_at_inference(opset: int) -> None:
    if opset < 12:
        gm, _ = op_parity("Dropout", {"x": X}, opset=opset, ratio=0.3)
    else:
        gm, _ = op_parity("Dropout", {"x": X}, {"ratio": np.float32(0.3)}, opset=opset)
    assert modules_of(gm, nn.Dropout)
    op_parity("Dropout", {"x": X}, outputs=["y", "mask"], opset=opset)


def test_identity_of_an_initializer_is_its_own_parameter() -> None:
    nodes = [
        helper.make_node("Identity", ["a.weight"], ["b.weight"]),
        helper.make_node("Mul", ["x", "a.weight"], ["t"]),
        helper.make_node("Mul", ["t", "b.weight"], ["y"]),
    ]
    model = graph_model(nodes, {"x": X}, {"a.weight": randn(5, seed=1)})
    gm, _ = assert_parity(model, {"x": X})
    params = dict(gm.named_parameters())
    assert {"a.weight", "b.weight"} <= set(params)
    assert params["a.weight"] is not params["b.weight"]
