"""Layers with weights outside convolutions: Gemm and MatMul as ``nn.Linear``, LayerNormalization
as ``nn.LayerNorm``, a Gather from a constant table as ``nn.Embedding``.

``MatMul`` with a constant 2-D right operand is a Linear layer: both the legacy
exporter's ``Transpose(W) -> MatMul`` (the transpose of a constant folds at
conversion) and the dynamo exporter's pre-transposed initializer. When the
product's only reader is an ``Add`` of a constant bias of the output width, the
Add is folded into the Linear.
"""

from __future__ import annotations

import operator

import onnx
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .node import NodeContext
from .registry import Output, Result, converter
from .values import Value


def _as_bias(value: Value | None, width: int, out_rank: int) -> torch.Tensor | None:
    """``value`` as a ``[width]`` bias when adding it equals adding a per-feature bias."""
    if value is None or not value.is_const or not isinstance(value.example, torch.Tensor):
        return None
    tensor = value.tensor
    if not tensor.is_floating_point() or tensor.dim() > out_rank:
        return None
    if tensor.numel() == width and (tensor.dim() == 0 or all(d == 1 for d in tensor.shape[:-1])):
        return tensor.reshape(width)
    if tensor.numel() == 1:
        return tensor.reshape(1).expand(width).clone()
    return None


def _bias_add(
    cx: NodeContext, width: int, out_rank: int
) -> tuple[onnx.NodeProto, Value, torch.Tensor] | None:
    add = cx.sole_consumer(0)
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
        return None
    mine = cx.proto.output[0]
    if add.input[0] == add.input[1]:
        return None
    other = cx.lookup(add.input[1] if add.input[0] == mine else add.input[0])
    if not isinstance(other, Value):
        return None
    bias = _as_bias(other, width, out_rank)
    return (add, other, bias) if bias is not None else None


def linear(
    cx: NodeContext,
    x: Value,
    weight: torch.Tensor,
    weight_origin: str | None,
    bias: torch.Tensor | None,
    bias_origin: str | None,
) -> Value:
    """``x @ weight.T + bias`` as an ``nn.Linear`` (weight is ``[out, in]``)."""
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight = cx.parameter(weight, weight_origin)
    if bias is not None:
        module.bias = cx.parameter(bias, bias_origin)
    return cx.module(module, [x], [weight_origin, bias_origin])


@converter("MatMul")
def matmul(cx: NodeContext) -> Output:
    a, b = cx.value(0), cx.value(1)
    if not (b.is_const and b.rank == 2 and not a.is_const and a.rank >= 1 and b.dtype.is_floating_point):
        return cx.call(torch.matmul, a, b)
    weight = b.tensor.T
    fused = _bias_add(cx, weight.shape[0], a.rank)
    if fused is None:
        return linear(cx, a, weight, b.origin, None, None)
    add, bias_value, bias = fused
    cx.absorb(add)
    y = linear(cx, a, weight, b.origin, bias, bias_value.origin)
    cx.bind(add.output[0], y)
    return None


@converter("Gemm")
def gemm(cx: NodeContext) -> Output:
    a, b = cx.value(0), cx.value(1)
    c = cx.optional(2)
    alpha, beta = cx.attr_float("alpha", 1.0), cx.attr_float("beta", 1.0)
    if cx.attr_int("transA", 0):
        a = cx.call(torch.transpose, a, 0, 1)
    trans_b = bool(cx.attr_int("transB", 0))
    if not (b.is_const and b.dtype.is_floating_point):
        product = cx.call(torch.matmul, a, cx.call(torch.transpose, b, 0, 1) if trans_b else b)
        if alpha != 1.0:
            product = cx.call(operator.mul, product, alpha)
        if c is None or beta == 0.0:
            return product
        return cx.call(operator.add, product, cx.call(operator.mul, c, beta) if beta != 1.0 else c)
    weight = b.tensor if trans_b else b.tensor.T
    origin = b.origin if trans_b and alpha == 1.0 else None
    if alpha != 1.0:
        weight = weight * alpha
    width = weight.shape[0]
    bias = _as_bias(c, width, 2) if c is not None and beta != 0.0 else None
    if bias is not None:
        bias_origin = c.origin if c is not None and beta == 1.0 else None
        return linear(cx, a, weight, origin, bias * beta if beta != 1.0 else bias, bias_origin)
    y = linear(cx, a, weight, origin, None, None)
    if c is None or beta == 0.0:
        return y
    return cx.call(operator.add, y, cx.call(operator.mul, c, beta) if beta != 1.0 else c)


def embedding(cx: NodeContext, table: Value, indices: Value) -> Value:
    """A Gather of rows of a constant 2-D table as an ``nn.Embedding``."""
    module = nn.Embedding(table.shape[0], table.shape[1])
    module.weight = cx.parameter(table.tensor, table.origin)
    if indices.dtype not in (torch.int64, torch.int32):
        indices = cx.method("to", indices, torch.int64)
    return cx.module(module, [indices], [table.origin])


def _broadcasts_to(small: list[int], shape: list[int]) -> bool:
    if len(small) > len(shape):
        return False
    return all(s in (1, d) for s, d in zip(reversed(small), reversed(shape), strict=False))


@converter("LayerNormalization", since=1)
def layer_norm(cx: NodeContext) -> Result:
    """LayerNormalization (opset 17), also produced by :mod:`.patterns` from its decomposition."""
    x = cx.value(0)
    scale, bias = cx.value(1), cx.optional(2)
    axis = cx.attr_int("axis", -1) % x.rank
    eps = cx.attr_float("epsilon", 1e-5)
    shape = x.shape[axis:]
    consts = scale.is_const and (bias is None or bias.is_const)
    outputs: list[Value]
    if consts and scale.dtype.is_floating_point and _broadcasts_to(scale.shape, shape):
        module = nn.LayerNorm(shape, eps=eps, bias=bias is not None)
        same = scale.shape == shape
        module.weight = cx.parameter(scale.tensor.expand(shape).clone(), scale.origin if same else None)
        if bias is not None:
            module.bias = cx.parameter(bias.tensor.expand(shape).clone(), bias.origin)
        outputs = [cx.module(module, [x], [scale.origin, bias.origin if bias is not None else None])]
    else:
        sizes = [cx.size(x, d) for d in range(axis, x.rank)]
        outputs = [cx.call(F.layer_norm, x, sizes, scale, bias, eps)]
    if cx.used(1) or cx.used(2):
        dims = list(range(axis, x.rank))
        mean = cx.call(torch.mean, x, dims, keepdim=True)
        var = cx.call(torch.var, x, dims, correction=0, keepdim=True)
        outputs += [mean, cx.call(torch.rsqrt, cx.call(operator.add, var, eps))]
    return outputs
