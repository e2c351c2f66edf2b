"""Elementwise converters against ONNX Runtime, one hand-built node each."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from torch import nn

from prunekit_server.errors import ServiceError
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx

from .helpers import graph_model, ints, modules_of, op_parity, randn

X = randn(2, 3, 4, 5)
POSITIVE = np.abs(X) + 0.5

BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize(
    "shape", [(2, 3, 4, 5), (3, 1, 1), (5,), ()], ids=["same", "channel", "last", "scalar"]
)
def test_binary_broadcasting(op: str, shape: tuple[int, ...]) -> None:
    other = (np.abs(randn(*shape, seed=1)) + 0.5) if shape else np.float32(1.5)
    other = np.asarray(other, dtype=np.float32)
    base = POSITIVE if op == "Pow" else X
    op_parity(op, {"a": base}, {"b": other})
    op_parity(op, {"b": base}, {"a": other}, inputs=["a", "b"])  # constant on the left


def test_binary_both_graph_inputs_and_integer_division() -> None:
    op_parity("Mul", {"a": X, "b": randn(1, 3, 1, 5, seed=2)})
    a = np.asarray([7, -7, 9, -9, 4], dtype=np.int64)
    op_parity("Div", {"a": a}, {"b": ints(2, 2, -4, 4, 3)})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical(op: str) -> None:
    rng = np.random.default_rng(0)
    op_parity(op, {"a": rng.random((3, 4)) > 0.5, "b": rng.random((3, 4)) > 0.5})


UNARY = {
    "Relu": X,
    "Sigmoid": X,
    "Tanh": X,
    "Erf": X,
    "Sqrt": POSITIVE,
    "Neg": X,
    "Abs": X,
    "Exp": X,
    "Log": POSITIVE,
    "Reciprocal": POSITIVE,
    "Floor": X * 3,
    "Ceil": X * 3,
    "Sign": X,
    "Softplus": X,
    "Softsign": X,
    "Mish": X,
    "HardSwish": X * 4,
    "Sin": X,
    "Cos": X,
}


@pytest.mark.parametrize("op", list(UNARY))
def test_unary(op: str) -> None:
    op_parity(op, {"x": UNARY[op]}, opset=18)


def test_not() -> None:
    op_parity("Not", {"x": X > 0})


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("LeakyRelu", {"alpha": 0.2}),
        ("Elu", {"alpha": 0.7}),
        ("Celu", {"alpha": 1.3}),
        ("Selu", {}),
        ("Selu", {"alpha": 1.2, "gamma": 0.9}),
        ("HardSigmoid", {}),
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
        ("Gelu", {}),
        ("Gelu", {"approximate": "tanh"}),
    ],
)
def test_activations_with_attributes(op: str, attrs: dict[str, object]) -> None:
    op_parity(op, {"x": X * 3}, opset=20, **attrs)


def test_gelu_unknown_approximation_is_unsupported() -> None:
    model = graph_model([helper.make_node("Gelu", ["x"], ["y"], approximate="cubic")], {"x": X}, opset=20)
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    with pytest.raises(ServiceError, match="approximate='cubic'"):
        onnx_to_fx(model)


def test_prelu_per_channel_is_a_module_and_broadcast_slope_is_functional() -> None:
    gm, _ = op_parity("PRelu", {"x": X}, {"slope": randn(3, 1, 1, seed=4)})
    assert modules_of(gm, nn.PReLU)
    gm, _ = op_parity("PRelu", {"x": X}, {"slope": randn(5, seed=4)})
    assert not modules_of(gm, nn.PReLU)
    op_parity("PRelu", {"x": X, "slope": randn(1, 3, 1, 1, seed=4)})


@pytest.mark.parametrize("opset", [6, 11, 13])
def test_clip_forms(opset: int) -> None:
    if opset < 11:
        op_parity("Clip", {"x": X}, opset=opset, min=-0.5, max=0.7)
        return
    op_parity("Clip", {"x": X}, {"lo": np.float32(-0.5), "hi": np.float32(0.7)}, opset=opset)
    op_parity("Clip", {"x": X}, {"hi": np.float32(0.7)}, inputs=["x", "", "hi"], opset=opset)
    op_parity("Clip", {"x": X}, inputs=["x"], opset=opset)
    op_parity("Clip", {"x": X, "lo": np.float32(-0.2)}, inputs=["x", "lo"], opset=opset)


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic(op: str) -> None:
    op_parity(op, {"a": X, "b": randn(3, 1, 5, seed=5)}, {"c": randn(5, seed=6)})
    op_parity(op, {"a": X})


def test_where_with_broadcasting() -> None:
    op_parity("Where", {"c": X > 0, "a": X}, {"b": np.float32(-1.0)})


def test_mod_takes_the_divisor_sign_or_with_fmod_the_dividend_sign() -> None:
    a = np.asarray([[-7, -3, 0, 5, 9, 13]], dtype=np.int64)
    op_parity("Mod", {"a": a}, {"b": np.asarray([3, -4, 5, 3, -2, 4], dtype=np.int64)})
    op_parity("Mod", {"a": randn(2, 6) * 5}, {"b": np.asarray(1.5, dtype=np.float32)}, fmod=1)
    op_parity("Mod", {"a": a}, {"b": np.asarray(-4, dtype=np.int64)}, fmod=1)


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1, 3, 1, 1), (4,), (3, 4, 5), (1,)])
def test_prelu_with_many_slopes_broadcasts_as_onnx_does(slope_shape: tuple[int, ...]) -> None:
    op_parity(
        "PRelu",
        {"x": randn(2, 3, 4, 5) if len(slope_shape) != 1 or slope_shape == (1,) else randn(2, 3, 5, 4)},
        {"slope": randn(*slope_shape, seed=4)},
    )
