"""Convolutions, normalisation and pooling: Conv, ConvTranspose, BatchNormalization,
InstanceNormalization, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Convolutions and normalisations with constant weights become real modules
(``nn.Conv2d``, ``nn.BatchNorm2d``...). Padding that a torch layer cannot express
(asymmetric pads, ``auto_pad``) becomes an explicit ``F.pad`` in front of it (or a
crop behind a ConvTranspose).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .node import NodeContext
from .registry import Output, converter
from .values import Value

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_CONV_FN: dict[int, Any] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_BN: dict[int, type[nn.Module]] = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_IN: dict[int, type[nn.Module]] = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}
_MAX_POOL: dict[int, Any] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL: dict[int, Any] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def window_pads(
    cx: NodeContext, spatial: list[int], kernel: list[int], strides: list[int], dilations: list[int]
) -> list[int]:
    """ONNX pads ``[b1..bn, e1..en]`` of a Conv or pool, ``auto_pad`` resolved on the sample sizes."""
    n = len(kernel)
    auto_pad = cx.attr_str("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        return cx.attr_ints("pads") or [0] * (2 * n)
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        cx.fail(f"auto_pad={auto_pad!r} is not supported")
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def torch_pads(pads: list[int]) -> list[int]:
    """ONNX ``[b1..bn, e1..en]`` (spatial) as ``F.pad``'s last-dimension-first pairs."""
    n = len(pads) // 2
    result: list[int] = []
    for d in reversed(range(n)):
        result += [pads[d], pads[d + n]]
    return result


def _window(cx: NodeContext, x: Value, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    n = len(kernel)
    strides = cx.attr_ints("strides") or [1] * n
    dilations = cx.attr_ints("dilations") or [1] * n
    return strides, dilations, window_pads(cx, x.shape[2:], kernel, strides, dilations)


@converter("Conv")
def conv(cx: NodeContext) -> Output:
    x, w = cx.value(0), cx.value(1)
    b = cx.optional(2)
    n = w.rank - 2
    if n not in _CONV:
        cx.fail(f"{n}-D convolutions are not supported")
    kernel = w.shape[2:]
    groups = cx.attr_int("group", 1)
    strides, dilations, pads = _window(cx, x, kernel)
    padding = pads[:n]
    if pads[:n] != pads[n:]:
        x = cx.call(F.pad, x, torch_pads(pads))
        padding = [0] * n
    if not (w.is_const and w.dtype.is_floating_point and (b is None or b.is_const)):
        return cx.call(_CONV_FN[n], x, w, b, strides, padding, dilations, groups)
    module = _CONV[n](
        w.shape[1] * groups, w.shape[0], kernel, strides, padding, dilations, groups, bias=b is not None
    )
    module.weight = cx.parameter(w.tensor, w.origin)
    if b is not None:
        module.bias = cx.parameter(b.tensor, b.origin)
    return cx.module(module, [x], [w.origin, b.origin if b is not None else None])


@converter("ConvTranspose")
def conv_transpose(cx: NodeContext) -> Output:
    x, w = cx.value(0), cx.value(1)
    b = cx.optional(2)
    n = w.rank - 2
    if n not in _CONV_T or not w.is_const or (b is not None and not b.is_const):
        cx.fail("only 1-D to 3-D transposed convolutions with constant weights are supported")
    kernel, groups = w.shape[2:], cx.attr_int("group", 1)
    strides = cx.attr_ints("strides") or [1] * n
    dilations = cx.attr_ints("dilations") or [1] * n
    extra = cx.attr_ints("output_padding") or [0] * n
    auto_pad = cx.attr_str("auto_pad", "NOTSET")
    full = [
        s * (i - 1) + o + (k - 1) * d + 1
        for s, i, o, k, d in zip(strides, x.shape[2:], extra, kernel, dilations, strict=True)
    ]
    wanted = cx.attr_ints("output_shape")
    if wanted is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        wanted = [i * s for i, s in zip(x.shape[2:], strides, strict=True)]
    if wanted is not None:
        totals = [f - o for f, o in zip(full, wanted[-n:], strict=True)]
        if any(t < 0 for t in totals):
            cx.fail("output_shape larger than the full transposed convolution is not supported")
        upper = auto_pad == "SAME_UPPER"
        begins = [t // 2 if upper else t - t // 2 for t in totals]
        pads = begins + [t - bgn for t, bgn in zip(totals, begins, strict=True)]
    else:
        pads = [0] * (2 * n) if auto_pad == "VALID" else cx.attr_ints("pads") or [0] * (2 * n)
    common = [min(pads[d], pads[d + n]) for d in range(n)]
    if any(o >= max(s, d) for o, s, d in zip(extra, strides, dilations, strict=True)):
        cx.fail("output_padding must be smaller than the stride or the dilation")
    module = _CONV_T[n](
        w.shape[0], w.shape[1] * groups, kernel, strides, common, extra, groups, b is not None, dilations
    )
    module.weight = cx.parameter(w.tensor, w.origin)
    if b is not None:
        module.bias = cx.parameter(b.tensor, b.origin)
    y = cx.module(module, [x], [w.origin, b.origin if b is not None else None])
    crops = [(pads[d] - common[d], pads[d + n] - common[d]) for d in range(n)]
    if not any(lo or hi for lo, hi in crops):
        return y
    index = (slice(None), slice(None), *(slice(lo or None, -hi if hi else None) for lo, hi in crops))
    return cx.builder.getitem(y, index)


@converter("BatchNormalization")
def batch_norm(cx: NodeContext) -> Output:
    x = cx.value(0)
    params = [cx.value(k) for k in range(1, 5)]
    eps, momentum = cx.attr_float("epsilon", 1e-5), cx.attr_float("momentum", 0.9)
    outputs = [name for name in cx.proto.output if name]
    training = bool(cx.attr_int("training_mode", 0)) if cx.opset >= 14 else len(outputs) > 1
    if any(cx.used(k) for k in range(1, len(cx.proto.output))):
        cx.fail("reading the updated or saved statistics outputs is not supported")
    if not all(p.is_const for p in params) or x.rank not in _BN:
        scale, bias, mean, var = params
        return cx.call(F.batch_norm, x, mean, var, scale, bias, training, 1.0 - momentum, eps)
    tensors = [p.tensor for p in params]
    module = _BN[x.rank](tensors[0].numel(), eps=eps, momentum=1.0 - momentum)
    module.weight = cx.parameter(tensors[0], params[0].origin)
    module.bias = cx.parameter(tensors[1], params[1].origin)
    module.running_mean = tensors[2].clone()
    module.running_var = tensors[3].clone()
    origins = [p.origin for p in params]
    return cx.module(module, [x], origins, training_mode=training)


@converter("InstanceNormalization")
def instance_norm(cx: NodeContext) -> Output:
    x, scale, bias = cx.value(0), cx.value(1), cx.value(2)
    eps = cx.attr_float("epsilon", 1e-5)
    if not (scale.is_const and bias.is_const) or x.rank not in _IN:
        return cx.call(F.instance_norm, x, None, None, scale, bias, eps=eps)
    module = _IN[x.rank](scale.tensor.numel(), eps=eps, affine=True)
    module.weight = cx.parameter(scale.tensor, scale.origin)
    module.bias = cx.parameter(bias.tensor, bias.origin)
    return cx.module(module, [x], [scale.origin, bias.origin])


def _pool_input(
    cx: NodeContext, x: Value, kernel: list[int], pads: list[int], fill: float
) -> tuple[Value, list[int]]:
    """Pads torch's pooling cannot take (asymmetric, or over half the kernel) applied explicitly."""
    n = len(kernel)
    if pads[:n] == pads[n:] and all(2 * p <= k for p, k in zip(pads[:n], kernel, strict=True)):
        return x, pads[:n]
    return cx.call(F.pad, x, torch_pads(pads), value=fill), [0] * n


@converter("MaxPool")
def max_pool(cx: NodeContext) -> Output:
    x = cx.value(0)
    kernel = cx.attr_ints("kernel_shape") or []
    n = len(kernel)
    if n not in _MAX_POOL or cx.used(1):
        cx.fail("only 1-D to 3-D max pooling without the Indices output is supported")
    strides, dilations, pads = _window(cx, x, kernel)
    source, padding = _pool_input(cx, x, kernel, pads, -math.inf)
    ceil = bool(cx.attr_int("ceil_mode", 0))
    return cx.call(_MAX_POOL[n], source, kernel, strides, padding, dilations, ceil_mode=ceil)


@converter("AveragePool")
def average_pool(cx: NodeContext) -> Output:
    x = cx.value(0)
    kernel = cx.attr_ints("kernel_shape") or []
    n = len(kernel)
    if n not in _AVG_POOL:
        cx.fail(f"{n}-D average pooling is not supported")
    strides, dilations, pads = _window(cx, x, kernel)
    if any(d != 1 for d in dilations):
        cx.fail("dilated average pooling is not supported")
    ceil = bool(cx.attr_int("ceil_mode", 0))
    include = bool(cx.attr_int("count_include_pad", 0))
    source, padding = _pool_input(cx, x, kernel, pads, 0.0)
    pooled = cx.call(_AVG_POOL[n], source, kernel, strides, padding, ceil, include)
    if include or source is x or not any(pads):
        return pooled
    ones = cx.call(F.pad, cx.call(torch.ones_like, x), torch_pads(pads))
    share = cx.call(_AVG_POOL[n], ones, kernel, strides, [0] * n, ceil, True)
    return cx.call(torch.div, pooled, share)


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(cx: NodeContext) -> Output:
    x = cx.value(0)
    dims = list(range(2, x.rank))
    fn = torch.mean if cx.op_type == "GlobalAveragePool" else torch.amax
    return cx.call(fn, x, dims, keepdim=True)
