"""If: a static condition inlines the taken branch (checked against ONNX Runtime); a data-dependent one
is refused naming the op."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from prunekit_server.modelio.onnx_to_fx import UnsupportedOp, onnx_to_fx

from .helpers import assert_parity, graph_model, randn


def _branch(name: str, op: str, factor: float) -> object:
    scale = helper.make_tensor(f"{name}_scale", TensorProto.FLOAT, [], [factor])
    return helper.make_graph(
        [helper.make_node(op, ["x", f"{name}_scale"], [f"{name}_out"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)],
        [scale],
    )


@pytest.mark.parametrize("flag", [True, False])
def test_a_static_if_is_its_taken_branch(flag: bool) -> None:
    feeds = {"x": randn(2, 3)}
    flag_value = helper.make_tensor("flag", TensorProto.BOOL, [], [flag])
    nodes = [
        helper.make_node("Constant", [], ["flag"], value=flag_value),
        helper.make_node("Not", ["flag"], ["not_flag"]),
        helper.make_node("Not", ["not_flag"], ["condition"]),
        helper.make_node(
            "If",
            ["condition"],
            ["picked"],
            then_branch=_branch("then", "Mul", 2.0),
            else_branch=_branch("else", "Add", 10.0),
        ),
        helper.make_node("Relu", ["picked"], ["y"]),
    ]
    gm, _ = assert_parity(graph_model(nodes, feeds), feeds)
    assert ("mul" in gm.code) == flag
    assert ("add" in gm.code) != flag


def test_an_if_on_the_data_is_refused_naming_the_op() -> None:
    feeds = {"x": randn(2, 3), "flag": np.asarray(True)}
    nodes = [
        helper.make_node(
            "If",
            ["flag"],
            ["y"],
            name="branchy",
            then_branch=_branch("then", "Mul", 2.0),
            else_branch=_branch("else", "Add", 10.0),
        )
    ]
    with pytest.raises(UnsupportedOp) as info:
        onnx_to_fx(graph_model(nodes, feeds))
    assert info.value.metadata["op_type"] == "If"
    assert "the condition depends on the inputs" in info.value.message
