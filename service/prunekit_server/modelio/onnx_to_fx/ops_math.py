"""Elementwise ops: arithmetic with broadcasting, comparisons, logic, activations.

Arithmetic on shape-like values (:class:`~.values.Dims`) stays item by item, so a
size computed as ``C // heads`` keeps following ``C``. A constant with a single
element next to a graph tensor becomes a Python number in the generated code.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .node import NodeContext
from .registry import Output, converter
from .shapes import as_dims, itemwise, logical_not, select, truncdiv
from .values import Dims, Value, const

_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mul": operator.mul,
    "Div": operator.truediv,
    "Pow": operator.pow,
    "Equal": operator.eq,
    "Less": operator.lt,
    "Greater": operator.gt,
    "LessOrEqual": operator.le,
    "GreaterOrEqual": operator.ge,
}
_LOGICAL: dict[str, Callable[..., Any]] = {
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}
_LOGICAL_ITEMS: dict[str, Callable[[Any, Any], Any]] = {
    "And": operator.and_,
    "Or": operator.or_,
    "Xor": operator.xor,
}
_BOOLEAN_RESULTS = frozenset(
    {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"}
)


def scalar_operand(value: Value, other: Value) -> Value:
    """A one-element constant as a Python number when that broadcasts the same way."""
    if (
        value.is_const
        and not other.is_const
        and isinstance(value.example, torch.Tensor)
        and isinstance(other.example, torch.Tensor)
        and value.tensor.numel() == 1
        and value.rank <= other.rank
        and value.dtype == other.dtype
    ):
        return const(value.tensor.item())
    return value


def _dims_operands(cx: NodeContext) -> list[Dims] | None:
    items = [cx.input(k) for k in range(cx.num_inputs) if cx.has(k)]
    if not any(isinstance(item, Dims) for item in items):
        return None
    operands = [as_dims(item) for item in items]
    return [d for d in operands if d is not None] if all(d is not None for d in operands) else None


def _operand(cx: NodeContext, index: int, other: int) -> Value:
    """Input ``index``; a one-item shape value next to a tensor of rank >= 1 as a Python number."""
    item = cx.input(index)
    if isinstance(item, Dims) and len(item.items) == 1:
        peer = cx.input(other)
        if isinstance(peer, Value) and not peer.is_const and (item.scalar or peer.rank >= 1):
            return item.items[0]
    return cx.value(index)


def _item_div(dims: list[Dims]) -> Callable[[Any, Any], Any]:
    if dims[0].dtype.is_floating_point or dims[1].dtype.is_floating_point:
        return operator.truediv
    if all(v >= 0 for d in dims for v in d.examples):
        return operator.floordiv
    return truncdiv


@converter(*_ARITHMETIC, *_LOGICAL)
def binary(cx: NodeContext) -> Output:
    op = cx.op_type
    dims = _dims_operands(cx)
    if dims is not None and len(dims) == 2:
        fn = _item_div(dims) if op == "Div" else _LOGICAL_ITEMS.get(op) or _ARITHMETIC[op]
        dtype = torch.bool if op in _BOOLEAN_RESULTS else None
        return itemwise(cx.builder, fn, dims, dtype)
    a, b = _operand(cx, 0, 1), _operand(cx, 1, 0)
    if op in _LOGICAL:
        return cx.call(_LOGICAL[op], cx.value(0), cx.value(1))
    tensor = a if isinstance(a.example, torch.Tensor) else b
    if op == "Div" and not tensor.dtype.is_floating_point and tensor.dtype != torch.bool:
        return cx.call(torch.div, cx.value(0), cx.value(1), rounding_mode="trunc")
    result = cx.call(_ARITHMETIC[op], scalar_operand(a, b), scalar_operand(b, a))
    if op == "Pow" and tensor is a and result.dtype != a.dtype:
        result = cx.method("to", result, a.dtype)
    return result


@converter("Mod")
def mod(cx: NodeContext) -> Output:
    """``fmod=0``: the remainder takes the divisor's sign (Python's ``%``); ``fmod=1``: the dividend's."""
    fmod = cx.attr_int("fmod", 0)
    dims = _dims_operands(cx)
    if dims is not None and len(dims) == 2 and not fmod:
        return itemwise(cx.builder, operator.mod, dims)
    return cx.call(torch.fmod if fmod else torch.remainder, cx.value(0), cx.value(1))


_UNARY: dict[str, Callable[..., Any]] = {
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Sqrt": torch.sqrt,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Exp": torch.exp,
    "Log": torch.log,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Sign": torch.sign,
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "Mish": F.mish,
    "HardSwish": F.hardswish,
    "Sin": torch.sin,
    "Cos": torch.cos,
}


def _sqrt_item(v: Any) -> Any:
    return v**0.5


def _reciprocal_item(v: Any) -> Any:
    return 1.0 / v


_UNARY_ITEMS: dict[str, Callable[[Any], Any]] = {
    "Neg": operator.neg,
    "Abs": abs,
    "Floor": math.floor,
    "Ceil": math.ceil,
    "Not": logical_not,
    "Sqrt": _sqrt_item,
    "Reciprocal": _reciprocal_item,
}


@converter(*_UNARY)
def unary(cx: NodeContext) -> Output:
    item = cx.input(0)
    if isinstance(item, Dims) and cx.op_type in _UNARY_ITEMS:
        dtype = torch.float32 if cx.op_type in ("Sqrt", "Reciprocal") else None
        return itemwise(cx.builder, _UNARY_ITEMS[cx.op_type], [item], dtype)
    return cx.call(_UNARY[cx.op_type], cx.value(0))


@converter("LeakyRelu")
def leaky_relu(cx: NodeContext) -> Output:
    return cx.call(F.leaky_relu, cx.value(0), cx.attr_float("alpha", 0.01))


@converter("Elu")
def elu(cx: NodeContext) -> Output:
    return cx.call(F.elu, cx.value(0), cx.attr_float("alpha", 1.0))


@converter("Celu")
def celu(cx: NodeContext) -> Output:
    return cx.call(F.celu, cx.value(0), cx.attr_float("alpha", 1.0))


_SELU_ALPHA = 1.6732632423543772
_SELU_GAMMA = 1.0507009873554805


@converter("Selu")
def selu(cx: NodeContext) -> Output:
    alpha = cx.attr_float("alpha", _SELU_ALPHA)
    gamma = cx.attr_float("gamma", _SELU_GAMMA)
    x = cx.value(0)
    if math.isclose(alpha, _SELU_ALPHA, rel_tol=1e-6) and math.isclose(gamma, _SELU_GAMMA, rel_tol=1e-6):
        return cx.call(F.selu, x)
    return cx.call(operator.mul, cx.call(F.elu, x, alpha), gamma)


@converter("HardSigmoid")
def hard_sigmoid(cx: NodeContext) -> Output:
    alpha, beta = cx.attr_float("alpha", 0.2), cx.attr_float("beta", 0.5)
    x = cx.value(0)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and math.isclose(beta, 0.5):
        return cx.call(F.hardsigmoid, x)
    return cx.call(torch.clamp, cx.call(operator.add, cx.call(operator.mul, x, alpha), beta), 0.0, 1.0)


@converter("Gelu", since=20)
def gelu(cx: NodeContext) -> Output:
    approximate = cx.attr_str("approximate", "none")
    if approximate not in ("none", "tanh"):
        cx.fail(f"approximate={approximate!r} is not supported")
    return cx.call(F.gelu, cx.value(0), approximate=approximate)


def _legacy_channel_slope(x_shape: list[int], slope_shape: list[int], channels: int) -> bool:
    """A ``[C]`` slope that does not broadcast against x: older exporters' per-channel slope."""
    if len(slope_shape) != 1 or slope_shape[0] != channels or channels == 1 or len(x_shape) < 3:
        return False
    return x_shape[-1] not in (1, channels)


@converter("PRelu")
def prelu(cx: NodeContext) -> Output:
    x, slope = cx.value(0), cx.value(1)
    if slope.is_const and slope.dtype.is_floating_point:
        channels = x.shape[1] if x.rank >= 2 else 1
        if _legacy_channel_slope(x.shape, slope.shape, channels):
            slope = const(slope.tensor.reshape(channels, *([1] * (x.rank - 2))), slope.origin)
        trailing = slope.shape[1:]
        per_channel = slope.rank >= 1 and slope.shape[0] == channels and all(d == 1 for d in trailing)
        if (slope.tensor.numel() == 1 or (per_channel and slope.rank == x.rank - 1)) and x.rank >= 1:
            module = nn.PReLU(slope.tensor.numel())
            module.weight = cx.parameter(slope.tensor.reshape(-1), None)
            return cx.module(module, [x], [cx.origin(1)])
    return cx.call(torch.where, cx.call(torch.ge, x, 0), x, cx.call(operator.mul, x, slope))


@converter("Clip", since=1)
def clip_attrs(cx: NodeContext) -> Output:
    low = cx.attr("min")
    high = cx.attr("max")
    return cx.call(torch.clamp, cx.value(0), low, high)


@converter("Clip", since=11)
def clip(cx: NodeContext) -> Output:
    x = cx.value(0)
    bounds: list[Any] = []
    for k in (1, 2):
        bound = cx.optional(k)
        if bound is not None and bound.is_const:
            bounds.append(bound.tensor.item())
        else:
            bounds.append(bound)
    if bounds[0] is None and bounds[1] is None:
        return x
    return cx.call(torch.clamp, x, bounds[0], bounds[1])


def _variadic(cx: NodeContext, tensor_fn: Callable[..., Any], item_fn: Callable[..., Any]) -> Output:
    dims = _dims_operands(cx)
    if dims is not None:
        folded = dims[0]
        for more in dims[1:]:
            folded = itemwise(cx.builder, item_fn, [folded, more])
        return folded
    values = [cx.value(k) for k in range(cx.num_inputs) if cx.has(k)]
    result = values[0]
    for other in values[1:]:
        result = cx.call(tensor_fn, result, other)
    return result


@converter("Sum")
def sum_(cx: NodeContext) -> Output:
    return _variadic(cx, operator.add, operator.add)


@converter("Max")
def max_(cx: NodeContext) -> Output:
    return _variadic(cx, torch.maximum, max)


@converter("Min")
def min_(cx: NodeContext) -> Output:
    return _variadic(cx, torch.minimum, min)


@converter("Mean")
def mean(cx: NodeContext) -> Output:
    total = _variadic(cx, operator.add, operator.add)
    if not isinstance(total, Value):
        cx.fail("Mean of shape values is not supported")
    count = sum(1 for k in range(cx.num_inputs) if cx.has(k))
    return cx.call(operator.truediv, total, float(count)) if count > 1 else total


@converter("Where")
def where(cx: NodeContext) -> Output:
    dims = _dims_operands(cx)
    if dims is not None and len(dims) == 3:
        return itemwise(cx.builder, select, dims, dims[1].dtype)
    return cx.call(torch.where, cx.value(0), cx.value(1), cx.value(2))
