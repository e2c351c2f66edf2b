"""Sequence ops with a static length, as scripted TorchScript writes them, against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from prunekit_server.modelio.onnx_to_fx import UnsupportedOp, onnx_to_fx

from .helpers import assert_parity, graph_model, randn


@pytest.mark.parametrize("split", [None, [2, 2, 2], [1, 5], 4])
def test_split_at_insert_erase_and_concat(split: list[int] | int | None) -> None:
    feeds = {"x": randn(2, 6, 3)}
    consts = {"last": np.asarray(-1, dtype=np.int64), "first": np.asarray(0, dtype=np.int64)}
    inputs = ["x"]
    if split is not None:
        consts["split"] = np.asarray(split, dtype=np.int64)
        inputs.append("split")
    nodes = [
        helper.make_node("SplitToSequence", inputs, ["parts"], axis=1),
        helper.make_node("SequenceAt", ["parts", "last"], ["tail"]),
        helper.make_node("Relu", ["tail"], ["tail_relu"]),
        helper.make_node("SequenceInsert", ["parts", "tail_relu"], ["more"]),
        helper.make_node("SequenceErase", ["more", "first"], ["fewer"]),
        helper.make_node("ConcatFromSequence", ["fewer"], ["y"], axis=1),
        helper.make_node("SequenceLength", ["fewer"], ["count"]),
    ]
    assert_parity(graph_model(nodes, feeds, consts, outputs=("y", "count")), feeds)


def test_construct_and_stack_along_a_new_axis() -> None:
    feeds = {"a": randn(2, 3), "b": randn(2, 3, seed=1)}
    nodes = [
        helper.make_node("SequenceConstruct", ["a", "b", "a"], ["seq"]),
        helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=-1, new_axis=1),
    ]
    assert_parity(graph_model(nodes, feeds), feeds)


def test_a_position_from_the_data_is_refused() -> None:
    feeds = {"x": randn(2, 4), "where": np.asarray(1, dtype=np.int64)}
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["parts"], axis=1),
        helper.make_node("SequenceAt", ["parts", "where"], ["y"], name="pick"),
    ]
    with pytest.raises(UnsupportedOp) as info:
        onnx_to_fx(graph_model(nodes, feeds))
    assert info.value.metadata["op_type"] == "SequenceAt"
    assert "must be a constant" in info.value.message


def test_an_empty_sequence_refuses_to_concatenate() -> None:
    feeds = {"x": randn(2, 4)}
    nodes = [
        helper.make_node("SequenceEmpty", [], ["seq"], dtype=TensorProto.FLOAT),
        helper.make_node("ConcatFromSequence", ["seq"], ["z"], axis=0),
        helper.make_node("Add", ["x", "z"], ["y"]),
    ]
    with pytest.raises(UnsupportedOp, match="an empty sequence"):
        onnx_to_fx(graph_model(nodes, feeds))
