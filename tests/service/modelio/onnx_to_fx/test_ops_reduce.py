"""Reductions, softmax, ArgMax/ArgMin and TopK against ONNX Runtime."""

from __future__ import annotations

import pytest
from onnx import helper

from .helpers import assert_parity, graph_model, ints, op_parity, randn

X = randn(2, 3, 4, 5)
OPS = [
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_attribute_axes(op: str, keepdims: int) -> None:
    op_parity(op, {"x": X}, opset=11, axes=[1, -1], keepdims=keepdims)
    op_parity(op, {"x": X}, opset=11, keepdims=keepdims)


@pytest.mark.parametrize("op", OPS)
def test_reduce_input_axes(op: str) -> None:
    op_parity(op, {"x": X}, {"axes": ints(2, 3)}, opset=18)
    op_parity(op, {"x": X}, inputs=["x"], opset=18, keepdims=0)


def test_reduce_sum_input_axes_since_13_and_noop() -> None:
    op_parity("ReduceSum", {"x": X}, {"axes": ints(0)}, opset=13)
    op_parity("ReduceMean", {"x": X}, {"axes": ints()}, opset=18, noop_with_empty_axes=1)


def test_reduce_of_a_shape() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
        helper.make_node("Reshape", ["x", "n"], ["y"]),
    ]
    assert_parity(graph_model(nodes, {"x": X}, opset=13), {"x": X})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(("opset", "axis"), [(11, 1), (11, -1), (11, 3), (13, 1), (13, -1)])
def test_softmax(op: str, opset: int, axis: int) -> None:
    op_parity(op, {"x": X}, opset=opset, axis=axis)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(("axis", "keepdims", "last"), [(1, 1, 0), (-1, 0, 0), (2, 1, 1)])
def test_arg_extremes(op: str, axis: int, keepdims: int, last: int) -> None:
    op_parity(op, {"x": X.round(0)}, axis=axis, keepdims=keepdims, select_last_index=last)


@pytest.mark.parametrize(("axis", "largest"), [(-1, 1), (1, 0)])
def test_topk(axis: int, largest: int) -> None:
    op_parity("TopK", {"x": X}, {"k": ints(2)}, outputs=["values", "indices"], axis=axis, largest=largest)
