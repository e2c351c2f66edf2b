"""Anything the converter cannot handle is FAILED_PRECONDITION / UNSUPPORTED_MODEL naming op, node, opset."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from prunekit_server.errors import Code, ServiceError
from prunekit_server.modelio.onnx_to_fx import UnsupportedOp, onnx_to_fx

from .helpers import graph_model, ints, randn

X = randn(1, 3, 4, 4)


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    for output in model.graph.output:
        if not output.type.HasField("tensor_type"):
            output.CopyFrom(helper.make_tensor_value_info(output.name, TensorProto.FLOAT, None))
    return model


def _fails(model: onnx.ModelProto) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        onnx_to_fx(model)
    error = info.value
    assert (error.code, error.reason) == (Code.FAILED_PRECONDITION, "UNSUPPORTED_MODEL")
    return error


def test_a_real_op_without_converter() -> None:
    boxes = np.zeros((1, 4, 4), dtype=np.float32)
    scores = np.zeros((1, 1, 4), dtype=np.float32)
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["y"], name="nms_1")
    error = _fails(graph_model([node], {"boxes": boxes, "scores": scores}, opset=13))
    assert isinstance(error, UnsupportedOp)
    assert "'NonMaxSuppression'" in error.message
    assert "'nms_1'" in error.message
    assert "opset 13" in error.message
    assert error.metadata == {
        "op_type": "NonMaxSuppression",
        "node": "nms_1",
        "domain": "ai.onnx",
        "opset": "13",
    }


def test_a_made_up_op_and_a_foreign_domain() -> None:
    node = helper.make_node("Frobnicate", ["x"], ["y"], name="odd")
    model = helper.make_model(
        helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert _fails(model).metadata["op_type"] == "Frobnicate"
    node = helper.make_node("Relu", ["x"], ["y"], name="custom", domain="com.example")
    model.graph.ClearField("node")
    model.graph.node.append(node)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    error = _fails(model)
    assert error.metadata["domain"] == "com.example"
    assert "default ONNX domain" in error.message


def test_unsupported_attribute_values_and_outputs() -> None:
    pool = helper.make_node("MaxPool", ["x"], ["y", "indices"], name="pool", kernel_shape=[2, 2])
    error = _fails(_typed(graph_model([pool], {"x": X}, outputs=["y", "indices"])))
    assert error.metadata["node"] == "pool"
    pad = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect")
    error = _fails(_typed(graph_model([pad], {"x": X}, {"pads": ints(1, 0, 0, 0, 0, 0, 0, 0)}, opset=13)))
    assert "reflect padding" in error.message


def test_subgraphs_are_unsupported() -> None:
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "b",
        [],
        [helper.make_tensor_value_info("out", 1, None)],
    )
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch, else_branch=branch)
    model = graph_model([node], {"x": X, "cond": np.asarray(True)})
    assert _fails(model).metadata["op_type"] == "If"


def test_a_converter_crash_is_reported_not_raised_raw() -> None:
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="bad_reshape")
    model = _typed(graph_model([node], {"x": X}, {"shape": ints(5, 5)}))
    error = _fails(model)
    assert "bad_reshape" in error.message
    assert error.to_dict()["reason"] == "UNSUPPORTED_MODEL"


def test_a_string_initializer_is_unsupported_not_a_crash() -> None:
    node = helper.make_node("Identity", ["names"], ["y"])
    names = helper.make_tensor("names", TensorProto.STRING, [2], [b"a", b"b"])
    graph = helper.make_graph(
        [node], "g", [], [helper.make_tensor_value_info("y", TensorProto.STRING, [2])], [names]
    )
    error = _fails(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert "'names'" in error.message
