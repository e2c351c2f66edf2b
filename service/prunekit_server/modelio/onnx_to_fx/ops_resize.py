"""Spatial rearrangement: Resize, Upsample, Pad, DepthToSpace, SpaceToDepth.

Resize maps onto ``F.interpolate`` where torch has the same sampling (nearest with
``asymmetric``/``floor``, linear and cubic with ``half_pixel`` or ``align_corners``);
every other nearest variant gathers precomputed source rows and columns, which is
exact for any coordinate transformation and rounding mode. Unsupported modes fail
by name.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from .node import NodeContext
from .registry import Output, converter
from .values import Value, const

_LINEAR_MODES = {3: "linear", 4: "bilinear", 5: "trilinear"}
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _source(x: float, ctm: str, scale: float, in_size: int, out_size: int) -> float:
    if ctm == "asymmetric":
        return x / scale
    if ctm == "align_corners":
        return 0.0 if out_size == 1 else x * (in_size - 1) / (out_size - 1)
    if ctm == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if ctm == "pytorch_half_pixel" and out_size == 1:
        return 0.0
    if ctm == "half_pixel_symmetric":
        adjustment = out_size / (in_size * scale)
        return in_size / 2 * (1 - adjustment) + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5


def _round(value: float, mode: str) -> int:
    if mode == "floor":
        return math.floor(value)
    if mode == "ceil":
        return math.ceil(value)
    if value - math.floor(value) == 0.5:
        return math.floor(value) if mode == "round_prefer_floor" else math.ceil(value)
    return math.floor(value + 0.5)


def nearest_indices(in_size: int, out_size: int, scale: float, ctm: str, mode: str) -> list[int]:
    """The source index of every output position of an ONNX nearest Resize along one axis."""
    picks = [_round(_source(float(x), ctm, scale, in_size, out_size), mode) for x in range(out_size)]
    return [min(max(p, 0), in_size - 1) for p in picks]


def _resize(
    cx: NodeContext, x: Value, scales: list[float] | None, sizes: list[Value] | None, mode: str, ctm: str
) -> Output:
    rank = x.rank
    if rank < 3 or (scales is None and sizes is None):
        cx.fail("Resize needs a batch and channel dimension and scales or sizes")
    if cx.attr_int("antialias", 0) or cx.attr_str("keep_aspect_ratio_policy", "stretch") != "stretch":
        cx.fail("antialias and keep_aspect_ratio_policy are not supported")
    axes = cx.attr_ints("axes")
    if axes is not None:
        full_scales = [1.0] * rank
        full_sizes: list[Value] = [cx.size(x, d) for d in range(rank)]
        for k, axis in enumerate(a % rank for a in axes):
            if scales is not None:
                full_scales[axis] = scales[k]
            if sizes is not None:
                full_sizes[axis] = sizes[k]
        scales = full_scales if scales is not None else None
        sizes = full_sizes if sizes is not None else None
    if scales is not None and (len(scales) != rank or scales[0] != 1.0 or scales[1] != 1.0):
        cx.fail("only spatial scales (batch and channel scale 1) are supported")
    in_spatial = x.shape[2:]
    if sizes is not None:
        out_spatial = [int(v.example) for v in sizes[2:]]
        if [int(v.example) for v in sizes[:2]] != x.shape[:2]:
            cx.fail("only spatial sizes (batch and channel unchanged) are supported")
        factors = [o / i for o, i in zip(out_spatial, in_spatial, strict=True)]
        spatial: dict[str, Any] = {"size": list(sizes[2:])}
    else:
        assert scales is not None
        factors = scales[2:]
        out_spatial = [math.floor(i * s) for i, s in zip(in_spatial, factors, strict=True)]
        spatial = {"scale_factor": factors}
    nearest_mode = cx.attr_str("nearest_mode", "round_prefer_floor") if cx.opset >= 11 else "floor"
    if mode == "nearest":
        if ctm == "asymmetric" and nearest_mode == "floor":
            return cx.call(F.interpolate, x, mode="nearest", **spatial)
        result = x
        for k, (i, o, s) in enumerate(zip(in_spatial, out_spatial, factors, strict=True)):
            picks = torch.tensor(nearest_indices(i, o, s, ctm, nearest_mode), dtype=torch.int64)
            result = cx.call(torch.index_select, result, k + 2, const(picks))
        return result
    half = ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and all(o > 1 for o in out_spatial))
    if ctm not in ("align_corners",) and not half:
        cx.fail(f"{mode} resize with coordinate_transformation_mode={ctm!r} is not supported")
    if mode == "linear":
        torch_mode = _LINEAR_MODES.get(rank, "")
    elif mode == "cubic" and rank == 4:
        coeff = cx.attr_float("cubic_coeff_a", -0.75)
        if coeff != -0.75 or cx.attr_int("exclude_outside", 0):
            cx.fail("cubic resize needs cubic_coeff_a=-0.75 and exclude_outside=0")
        torch_mode = "bicubic"
    else:
        torch_mode = ""
    if not torch_mode:
        cx.fail(f"mode={mode!r} for a rank-{rank} input is not supported")
    return cx.call(F.interpolate, x, mode=torch_mode, align_corners=ctm == "align_corners", **spatial)


@converter("Resize", since=10)
def resize(cx: NodeContext) -> Output:
    x = cx.value(0)
    mode = cx.attr_str("mode", "nearest")
    if cx.opset < 11:
        return _resize(cx, x, [float(v) for v in cx.const(1).tolist()], None, mode, "asymmetric")
    ctm = cx.attr_str("coordinate_transformation_mode", "half_pixel")
    if ctm == "tf_crop_and_resize":
        cx.fail("coordinate_transformation_mode='tf_crop_and_resize' is not supported")
    scales = cx.const(2) if cx.has(2) else None
    if scales is not None and scales.numel():
        return _resize(cx, x, [float(v) for v in scales.tolist()], None, mode, ctm)
    if not cx.has(3):
        cx.fail("Resize needs scales or sizes")
    return _resize(cx, x, None, list(cx.dims(3).items), mode, ctm)


@converter("Upsample", since=7)
def upsample(cx: NodeContext) -> Output:
    mode = cx.attr_str("mode", "nearest")
    if mode != "nearest":
        cx.fail(f"Upsample mode={mode!r} is not supported (only nearest)")
    scales = cx.attr("scales") if cx.opset < 9 else cx.const(1).tolist()
    return _resize(cx, cx.value(0), [float(v) for v in scales], None, "nearest", "asymmetric")


def _pad(cx: NodeContext, pads: list[Any], value: Any, mode: str, axes: list[int] | None) -> Output:
    """``pads`` are numbers, or :class:`Value` numbers the model computes (their examples decide which
    axes are padded at all)."""
    x = cx.value(0)
    rank = x.rank
    if axes is not None:
        full: list[Any] = [0] * (2 * rank)
        for k, axis in enumerate(a % rank for a in axes):
            full[axis], full[axis + rank] = pads[k], pads[k + len(axes)]
        pads = full
    if mode not in _PAD_MODES:
        cx.fail(f"mode={mode!r} is not supported")
    sizes = [int(p.example) if isinstance(p, Value) else int(p) for p in pads]
    first = next((d for d in range(rank) if sizes[d] or sizes[d + rank]), rank)
    if first == rank:
        return x
    if mode != "constant":
        first = min(first, 2)
        if first < 1 or rank - first > 3 or min(sizes) < 0:
            cx.fail(f"{mode} padding of the batch dimension, of more than three dimensions or negative")
    spec: list[Any] = []
    for d in reversed(range(first, rank)):
        spec += [pads[d], pads[d + rank]]
    if mode == "constant":
        return cx.call(F.pad, x, spec, value=value)
    return cx.call(F.pad, x, spec, mode=_PAD_MODES[mode])


@converter("Pad", since=2)
def pad_attrs(cx: NodeContext) -> Output:
    return _pad(
        cx, cx.attr_ints("pads") or [], cx.attr_float("value", 0.0), cx.attr_str("mode", "constant"), None
    )


@converter("Pad", since=11)
def pad(cx: NodeContext) -> Output:
    value: Any = 0.0
    if cx.has(2):
        value = cx.const(2).reshape(-1)[0].item()
    axes = cx.ints(3) if cx.has(3) else None
    if cx.is_const(1):
        return _pad(cx, cx.ints(1), value, cx.attr_str("mode", "constant"), axes)
    # pads computed from the input's sizes (Swin pads to a multiple of its window): read at run time
    return _pad(cx, list(cx.dims(1).items), value, cx.attr_str("mode", "constant"), axes)


@converter("DepthToSpace")
def depth_to_space(cx: NodeContext) -> Output:
    x = cx.value(0)
    block = cx.attr_int("blocksize", 1)
    if cx.attr_str("mode", "DCR") == "CRD":
        return cx.call(F.pixel_shuffle, x, block)
    n, h, w = cx.size(x, 0), cx.size(x, 2), cx.size(x, 3)
    split = cx.call(torch.reshape, x, [n, block, block, const(-1), h, w])
    moved = cx.call(torch.permute, split, [0, 3, 4, 1, 5, 2])
    return cx.call(torch.flatten, cx.call(torch.flatten, moved, 4, 5), 2, 3)


@converter("SpaceToDepth")
def space_to_depth(cx: NodeContext) -> Output:
    x = cx.value(0)
    block = cx.attr_int("blocksize", 1)
    n, c = cx.size(x, 0), cx.size(x, 1)
    h = cx.call(operator.floordiv, cx.size(x, 2), block)
    w = cx.call(operator.floordiv, cx.size(x, 3), block)
    split = cx.call(torch.reshape, x, [n, c, h, block, w, block])
    moved = cx.call(torch.permute, split, [0, 3, 5, 1, 2, 4])
    return cx.call(torch.flatten, moved, 1, 3)
