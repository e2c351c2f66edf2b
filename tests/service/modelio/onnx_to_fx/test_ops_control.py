"""If: a static condition inlines the taken branch; Loop with a constant trip count and Scan over
static lengths unroll (all checked against ONNX Runtime); a data-dependent one is refused naming the op."""

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


def _loop_body() -> object:
    """acc <- acc * 0.5 + x * i; also emits acc + i as a scan output."""
    nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Cast", ["i"], ["i_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["acc", "half"], ["decayed"]),
        helper.make_node("Mul", ["x", "i_float"], ["step"]),
        helper.make_node("Add", ["decayed", "step"], ["acc_out"]),
        helper.make_node("Add", ["acc_out", "i_float"], ["trace"]),
    ]
    return helper.make_graph(
        nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("trace", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])],
    )


def test_a_loop_with_a_constant_trip_count_unrolls() -> None:
    feeds = {"x": randn(2, 3)}
    consts = {"trips": np.asarray(4, dtype=np.int64), "start": np.zeros((2, 3), dtype=np.float32)}
    nodes = [
        helper.make_node("Loop", ["trips", "", "start"], ["y", "traces"], body=_loop_body()),
    ]
    gm, _ = assert_parity(graph_model(nodes, feeds, consts, outputs=("y", "traces")), feeds)
    assert "stack" in gm.code


def test_a_loop_until_a_data_condition_is_refused() -> None:
    feeds = {"x": randn(2, 3), "go": np.asarray(True)}
    consts = {"trips": np.asarray(4, dtype=np.int64), "start": np.zeros((2, 3), dtype=np.float32)}
    nodes = [
        helper.make_node("Loop", ["trips", "go", "start"], ["y", "traces"], name="looped", body=_loop_body())
    ]
    with pytest.raises(UnsupportedOp) as info:
        onnx_to_fx(graph_model(nodes, feeds, consts, outputs=("y", "traces")))
    assert info.value.metadata["op_type"] == "Loop"
    assert "condition depends on the inputs" in info.value.message


@pytest.mark.parametrize(("in_direction", "out_direction", "out_axis"), [(0, 0, 0), (1, 0, 1), (0, 1, -1)])
def test_scan_unrolls_over_its_sequence(in_direction: int, out_direction: int, out_axis: int) -> None:
    body = helper.make_graph(
        [
            helper.make_node("Add", ["state", "item"], ["state_out"]),
            helper.make_node("Mul", ["state_out", "item"], ["emitted"]),
        ],
        "scan_body",
        [
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("item", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("emitted", TensorProto.FLOAT, [3]),
        ],
    )
    feeds = {"init": randn(3), "seq": randn(3, 5, seed=1)}
    nodes = [
        helper.make_node(
            "Scan",
            ["init", "seq"],
            ["y", "emitted_all"],
            body=body,
            num_scan_inputs=1,
            scan_input_axes=[1],
            scan_input_directions=[in_direction],
            scan_output_axes=[out_axis],
            scan_output_directions=[out_direction],
        )
    ]
    assert_parity(graph_model(nodes, feeds, outputs=("y", "emitted_all")), feeds)
