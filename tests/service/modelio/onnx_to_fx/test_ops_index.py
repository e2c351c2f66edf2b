"""GatherND, GatherElements, ScatterND, Einsum, LRN, Shrink, CumSum, IsNaN and IsInf against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from prunekit_server.modelio.onnx_to_fx import onnx_to_fx

from .helpers import TOLERANCE, graph_model, op_parity, randn, rel_error, run_gm, run_ort


@pytest.mark.parametrize(
    ("shape", "indices", "batch_dims"),
    [
        ((4, 5, 3), [[0, 1], [3, 4], [-1, 2]], 0),
        ((4, 5, 3), [[[1], [0]], [[3], [2]]], 0),
        ((2, 5, 3), [[[1, 2], [4, 0]], [[0, 0], [3, 1]]], 1),
    ],
)
def test_gather_nd(shape: tuple[int, ...], indices: list[object], batch_dims: int) -> None:
    op_parity(
        "GatherND",
        {"data": randn(*shape)},
        {"indices": np.asarray(indices, dtype=np.int64)},
        batch_dims=batch_dims,
    )


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis: int) -> None:
    indices = np.asarray([[[0, 1], [1, -1]], [[1, 0], [-2, 1]]], dtype=np.int64)
    op_parity("GatherElements", {"data": randn(2, 3, 3)}, {"indices": indices}, axis=axis)


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_nd(reduction: str) -> None:
    op_parity(
        "ScatterND",
        {"data": randn(4, 5, 3), "updates": randn(2, 3, seed=1)},
        {"indices": np.asarray([[0, 1], [3, 4]], dtype=np.int64)},
        inputs=["data", "indices", "updates"],
        opset=16,
        reduction=reduction,
    )


def test_scatter_nd_of_whole_rows() -> None:
    op_parity(
        "ScatterND",
        {"data": randn(4, 5), "updates": randn(2, 5, seed=2)},
        {"indices": np.asarray([[2], [0]], dtype=np.int64)},
        inputs=["data", "indices", "updates"],
    )


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
        ("b h i d, b h j d -> b h i j", [(1, 2, 3, 4), (1, 2, 5, 4)]),
        ("...ii->...i", [(2, 3, 3)]),
        ("ij->ji", [(3, 4)]),
    ],
)
def test_einsum(equation: str, shapes: list[tuple[int, ...]]) -> None:
    feeds = {f"x{k}": randn(*shape, seed=k) for k, shape in enumerate(shapes)}
    op_parity("Einsum", feeds, opset=12, equation=equation)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn(size: int) -> None:
    op_parity("LRN", {"x": randn(2, 7, 4, 4)}, size=size, alpha=1e-3, beta=0.75, bias=2.0)


def _lrn_by_the_spec(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX's formula channel by channel (its reference evaluator loops over the batch axis instead)."""
    squares = np.zeros_like(x)
    before, after = (size - 1) // 2, -(-(size - 1) // 2)
    for c in range(x.shape[1]):
        low, high = max(0, c - before), min(x.shape[1] - 1, c + after)
        squares[:, c] = (x[:, low : high + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * squares) ** beta


def test_lrn_of_an_even_size_by_the_spec() -> None:
    """ONNX Runtime takes odd sizes only: even ones are checked against the spec's formula."""
    feeds = {"x": randn(2, 6, 3, 3)}
    node = helper.make_node("LRN", ["x"], ["y"], size=4, alpha=1e-2, beta=0.5, bias=1.5)
    (actual,) = run_gm(onnx_to_fx(graph_model([node], feeds)), feeds, ["x"])
    assert rel_error(actual, _lrn_by_the_spec(feeds["x"], 4, 1e-2, 0.5, 1.5)) < TOLERANCE
    odd = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=1e-2, beta=0.5, bias=1.5)
    (expected,) = run_ort(graph_model([odd], feeds), feeds)
    assert rel_error(_lrn_by_the_spec(feeds["x"], 3, 1e-2, 0.5, 1.5), expected) < TOLERANCE


def test_shrink() -> None:
    x = np.asarray([[-2.0, -0.5, -0.2, 0.0, 0.3, 0.5, 1.5]], dtype=np.float32)
    op_parity("Shrink", {"x": x}, bias=0.5, lambd=0.4)
    op_parity("Shrink", {"x": randn(3, 4)})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements_with_negative_indices(axis: int) -> None:
    indices = np.asarray([[0, -1, 2], [-3, 1, 0]], dtype=np.int64)
    op_parity("GatherElements", {"data": randn(3, 3)}, {"indices": indices}, axis=axis)


@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(exclusive: int, reverse: int) -> None:
    op_parity(
        "CumSum",
        {"x": randn(3, 4)},
        {"axis": np.asarray(1, dtype=np.int64)},
        exclusive=exclusive,
        reverse=reverse,
    )


def test_is_nan_and_is_inf() -> None:
    x = np.asarray([[0.0, np.nan, np.inf], [-np.inf, 1.0, np.nan]], dtype=np.float32)
    op_parity("IsNaN", {"x": x})
    for negative, positive in ((1, 1), (1, 0), (0, 1)):
        op_parity("IsInf", {"x": x}, detect_negative=negative, detect_positive=positive)
