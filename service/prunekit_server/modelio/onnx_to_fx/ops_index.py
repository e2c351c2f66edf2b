"""Ops real exports contain beyond the layer families: GatherND, GatherElements, ScatterND, Einsum, LRN,
Shrink, IsInf, CumSum.

Each that has no single torch function becomes a small function of this module
called from the generated code (:func:`gather_nd`, :func:`scatter_nd`,
:func:`local_response_norm`, :func:`shrink`), exactly ONNX's definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from .node import NodeContext
from .registry import Output, converter


def gather_nd(data: torch.Tensor, indices: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """ONNX GatherND: slices of ``data`` at the index tuples in the last axis of ``indices``."""
    batch = data.shape[:batch_dims]
    flat = data.reshape(-1, *data.shape[batch_dims:])
    idx = indices.reshape(-1, *indices.shape[batch_dims:])
    rows = torch.arange(flat.shape[0], device=data.device).reshape(-1, *([1] * (idx.dim() - 2)))
    picked = flat[(rows, *idx.unbind(-1))]
    return picked.reshape(*batch, *picked.shape[1:])


def gather_elements(data: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX GatherElements: ``data`` picked along ``axis`` at ``indices`` (negative ones from the end)."""
    size = data.shape[axis]
    return torch.gather(data, axis, torch.where(indices < 0, indices + size, indices).long())


def scatter_nd(
    data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, reduction: str = "none"
) -> torch.Tensor:
    """ONNX ScatterND: ``data`` with the slices at ``indices`` replaced by (or added to) ``updates``."""
    return data.clone().index_put_(tuple(indices.unbind(-1)), updates, accumulate=reduction == "add")


def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    """ONNX LRN: the window over channels starts ``(size - 1) // 2`` before a channel."""
    front = (size - 1) // 2
    squares = F.pad((x * x).transpose(1, -1), (front, size - 1 - front)).transpose(1, -1)
    window = squares.unfold(1, size, 1).sum(-1)
    return x / (bias + alpha / size * window) ** beta


def shrink(x: torch.Tensor, bias: float, lambd: float) -> torch.Tensor:
    """ONNX Shrink: ``x - bias`` above ``lambd``, ``x + bias`` below ``-lambd``, else 0."""
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero)).to(x.dtype)


@converter("GatherND")
def gather_nd_op(cx: NodeContext) -> Output:
    return cx.call(gather_nd, cx.value(0), cx.value(1), cx.attr_int("batch_dims", 0))


@converter("GatherElements")
def gather_elements_op(cx: NodeContext) -> Output:
    return cx.call(gather_elements, cx.value(0), cx.value(1), cx.attr_int("axis", 0))


def is_inf(x: torch.Tensor, detect_negative: int, detect_positive: int) -> torch.Tensor:
    """ONNX IsInf: infinities of the signs asked for."""
    return (torch.isneginf(x) & bool(detect_negative)) | (torch.isposinf(x) & bool(detect_positive))


@converter("IsInf")
def is_inf_op(cx: NodeContext) -> Output:
    return cx.call(is_inf, cx.value(0), cx.attr_int("detect_negative", 1), cx.attr_int("detect_positive", 1))


def cumsum(x: torch.Tensor, axis: int, exclusive: int, reverse: int) -> torch.Tensor:
    """ONNX CumSum: running sums along ``axis``, maybe from the end, maybe without the element itself."""
    y = x.flip(axis) if reverse else x
    out = torch.cumsum(y, axis).to(x.dtype)
    if exclusive:
        out = out - y
    return out.flip(axis) if reverse else out


@converter("CumSum")
def cumsum_op(cx: NodeContext) -> Output:
    axis = cx.ints(1)
    if len(axis) != 1:
        cx.fail("the axis must be one constant")
    return cx.call(cumsum, cx.value(0), axis[0], cx.attr_int("exclusive", 0), cx.attr_int("reverse", 0))


@converter("ScatterND")
def scatter_nd_op(cx: NodeContext) -> Output:
    reduction = cx.attr_str("reduction", "none")
    if reduction not in ("none", "add"):
        cx.fail(f"reduction={reduction!r} is not supported")
    return cx.call(scatter_nd, cx.value(0), cx.value(1), cx.value(2), reduction)


@converter("Einsum")
def einsum(cx: NodeContext) -> Output:
    operands = [cx.value(k) for k in range(cx.num_inputs) if cx.has(k)]
    return cx.call(torch.einsum, cx.attr_str("equation", "").replace(" ", ""), *operands)


@converter("LRN")
def lrn(cx: NodeContext) -> Output:
    size = cx.attr_int("size", 0)
    if size < 1:
        cx.fail("attribute 'size' is required")
    alpha, beta = cx.attr_float("alpha", 1e-4), cx.attr_float("beta", 0.75)
    return cx.call(local_response_norm, cx.value(0), size, alpha, beta, cx.attr_float("bias", 1.0))


@converter("Shrink")
def shrink_op(cx: NodeContext) -> Output:
    return cx.call(shrink, cx.value(0), cx.attr_float("bias", 0.0), cx.attr_float("lambd", 0.5))
