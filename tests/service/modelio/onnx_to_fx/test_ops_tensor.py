"""Data-movement converters against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from torch import nn

from .helpers import assert_parity, graph_model, ints, modules_of, op_parity, randn

X = randn(2, 6, 4, 5)
INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    "target",
    [(2, 6, 20), (2, -1), (0, 3, 2, 20), (2, 2, 3, 4, 5), (-1,), (12, 20), (2, 6, 4, 5, 1), (1, 2, 120)],
)
def test_reshape(target: tuple[int, ...]) -> None:
    op_parity("Reshape", {"x": X}, {"shape": ints(*target)})


def test_reshape_allowzero() -> None:
    op_parity("Reshape", {"x": X}, {"shape": ints(12, 20)}, opset=14, allowzero=1)
    op_parity("Reshape", {"x": X}, {"shape": ints(0, 0, -1)}, opset=14, allowzero=0)


@pytest.mark.parametrize("axis", [0, 1, 2, 4, -1])
def test_flatten(axis: int) -> None:
    op_parity("Flatten", {"x": X}, axis=axis)


def test_transpose() -> None:
    op_parity("Transpose", {"x": X}, perm=[0, 2, 3, 1])
    op_parity("Transpose", {"x": X})


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_forms(opset: int) -> None:
    x = randn(2, 1, 4, 1)
    if opset < 13:
        op_parity("Squeeze", {"x": x}, opset=opset, axes=[1, -1])
        op_parity("Unsqueeze", {"x": x}, opset=opset, axes=[0, -1])
    else:
        op_parity("Squeeze", {"x": x}, {"axes": ints(1, -1)}, opset=opset)
        op_parity("Unsqueeze", {"x": x}, {"axes": ints(0, -1)}, opset=opset)
    op_parity("Squeeze", {"x": x}, opset=opset)


def test_concat() -> None:
    op_parity("Concat", {"a": X, "b": randn(2, 2, 4, 5, seed=1)}, {"c": randn(2, 1, 4, 5, seed=2)}, axis=1)
    op_parity("Concat", {"a": X, "b": randn(2, 6, 4, 2, seed=1)}, axis=-1)


@pytest.mark.parametrize(
    ("opset", "sizes", "outputs"),
    [(11, None, 3), (11, [1, 5], 2), (13, None, 2), (13, [2, 4], 2), (18, None, 3), (18, [3, 3], 2)],
)
def test_split_forms(opset: int, sizes: list[int] | None, outputs: int) -> None:
    names = [f"y{k}" for k in range(outputs)]
    attrs: dict[str, object] = {"axis": 1}
    consts = {}
    inputs = ["x"]
    if sizes is not None and opset < 13:
        attrs["split"] = sizes
    elif sizes is not None:
        consts["split"] = ints(*sizes)
        inputs.append("split")
    elif opset >= 18:
        attrs["num_outputs"] = outputs
    op_parity("Split", {"x": X}, consts, inputs=inputs, outputs=names, opset=opset, **attrs)


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ([1], [INT64_MAX], [1], None),
        ([0, 1], [-1, 3], [2, 3], None),
        ([-3], [-1], [1], [1]),
        ([5], [0], [1], [-2]),
        ([-1], [-INT64_MAX], [3], [-1]),
        ([0, 0], [2, 6], [0, 1], [1, 2]),
        ([-100], [100], [2], None),
    ],
)
def test_slice(starts: list[int], ends: list[int], axes: list[int], steps: list[int] | None) -> None:
    consts = {"starts": ints(*starts), "ends": ints(*ends), "axes": ints(*axes)}
    if steps is not None:
        consts["steps"] = ints(*steps)
    op_parity("Slice", {"x": X}, consts)


def test_slice_attribute_form_and_default_axes() -> None:
    op_parity("Slice", {"x": X}, opset=9, starts=[1, 0], ends=[2, 3], axes=[0, 2])
    op_parity("Slice", {"x": X}, {"starts": ints(0, 1), "ends": ints(1, 5)}, opset=11)


@pytest.mark.parametrize(
    ("indices", "axis"),
    [(np.int64(2), 1), (ints(0, -1, 2), 1), (np.asarray([[0, 1], [3, -2]]), 2), (ints(1), 0)],
)
def test_gather(indices: np.ndarray, axis: int) -> None:
    op_parity("Gather", {"x": X}, {"i": np.asarray(indices, dtype=np.int64)}, axis=axis)


def test_gather_with_graph_indices_and_embedding() -> None:
    op_parity("Gather", {"x": X, "i": ints(3, 0)}, axis=3)
    table = randn(10, 4)
    gm, _ = op_parity(
        "Gather", {"i": np.asarray([[1, 2], [9, 0]], dtype=np.int64)}, {"t": table}, inputs=["t", "i"]
    )
    assert modules_of(gm, nn.Embedding)


@pytest.mark.parametrize("shape", [(2, 6, 4, 5), (6, 1, 1), (3, 2, 1, 1, 1), (1,), (2, 1, 4, 1)])
def test_expand(shape: tuple[int, ...]) -> None:
    x = randn(1, 6, 1, 5) if len(shape) != 5 else randn(2, 1, 1)
    op_parity("Expand", {"x": x}, {"shape": ints(*shape)})


def test_tile() -> None:
    op_parity("Tile", {"x": randn(2, 3, 4)}, {"repeats": ints(1, 2, 3)})


def test_split_of_a_shape_and_dynamic_slice_bounds() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Split", ["s", "sizes"], ["s0", "s1"], axis=0),
        helper.make_node("Sub", ["s1", "one"], ["end"]),
        helper.make_node("Slice", ["x", "zero", "end", "axis"], ["y"]),
    ]
    consts = {"zero": ints(0), "axis": ints(3), "sizes": ints(3, 1), "one": ints(1)}
    model = graph_model(nodes, {"x": X}, consts, opset=18)
    assert_parity(model, {"x": X})


@pytest.mark.parametrize("target", [(3, 1), (1, 3, 1), (2, 1, 6), (1,)])
def test_expand_to_a_shape_fed_at_run_time(target: tuple[int, ...]) -> None:
    """A size of 1 in the target keeps the input's size (two-way broadcasting)."""
    op_parity("Expand", {"x": randn(1, 3, 1), "shape": ints(*target)}, opset=9)
