"""Shapes and constants: Shape, Size, Constant, ConstantOfShape, Cast, Range, Identity, Dropout.

``Shape(x)`` is the entry point of shape-following: it yields ``x.size(i)`` items
(:class:`~.values.Dims`) rather than the sizes seen at export.
"""

from __future__ import annotations

import torch
from onnx import TensorProto
from torch import nn

from .node import NodeContext
from .registry import Output, Result, converter
from .shapes import itemwise, product
from .values import Dims, Value, const

TORCH_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT64: torch.int64,
    TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16,
    TensorProto.INT8: torch.int8,
    TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool,
}


def torch_dtype(cx: NodeContext, onnx_type: int) -> torch.dtype:
    if onnx_type not in TORCH_DTYPES:
        name = (
            TensorProto.DataType.Name(onnx_type) if onnx_type in TensorProto.DataType.values() else onnx_type
        )
        cx.fail(f"element type {name} is not supported")
    return TORCH_DTYPES[onnx_type]


@converter("Shape")
def shape(cx: NodeContext) -> Output:
    item = cx.input(0)
    if isinstance(item, Dims):
        return Dims([] if item.scalar else [const(len(item.items))])
    rank = item.rank
    start = cx.attr_int("start", 0)
    end = cx.attr_int("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return Dims([cx.size(item, d) for d in range(start, end)])


@converter("Size")
def size(cx: NodeContext) -> Output:
    item = cx.input(0)
    if isinstance(item, Dims):
        return Dims([const(len(item.items))], scalar=True)
    if item.rank == 0:
        return Dims([const(1)], scalar=True)
    return Dims([product(cx.builder, [cx.size(item, d) for d in range(item.rank)])], scalar=True)


@converter("Constant")
def constant(cx: NodeContext) -> Output:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if cx.has_attr(key):
            data = cx.attr(key)
            if isinstance(data, torch.Tensor):
                return const(data)
            dtype = torch.float32 if key.startswith("value_float") else torch.int64
            return const(torch.tensor(data, dtype=dtype))
    cx.fail("only tensor, float(s) and int(s) constants are supported")


@converter("ConstantOfShape")
def constant_of_shape(cx: NodeContext) -> Output:
    fill = cx.attr("value")
    value_tensor = fill if isinstance(fill, torch.Tensor) else torch.zeros(1)
    dims = cx.dims(0)
    return cx.call(torch.full, list(dims.items), value_tensor.reshape(-1)[0].item(), dtype=value_tensor.dtype)


def _cast_dims(cx: NodeContext, dims: Dims, dtype: torch.dtype) -> Dims:
    if dtype.is_floating_point:
        return Dims(dims.items, dims.scalar, dtype)
    if dtype == torch.bool:
        return itemwise(cx.builder, bool, [dims], dtype)
    if dims.dtype.is_floating_point:
        return itemwise(cx.builder, int, [dims], dtype)
    return Dims(dims.items, dims.scalar, dtype)


@converter("Cast")
def cast(cx: NodeContext) -> Output:
    dtype = torch_dtype(cx, cx.attr_int("to", TensorProto.FLOAT))
    item = cx.input(0)
    if isinstance(item, Dims):
        return _cast_dims(cx, item, dtype)
    if item.dtype == dtype:
        return item
    result = cx.method("to", item, dtype)
    result.origin = item.origin if item.is_const else None
    return result


@converter("CastLike")
def cast_like(cx: NodeContext) -> Output:
    target = cx.value(1)
    item = cx.input(0)
    if isinstance(item, Dims):
        return _cast_dims(cx, item, target.dtype)
    return cx.method("to", item, target.dtype)


@converter("Identity")
def identity(cx: NodeContext) -> Output:
    """The input itself; an initializer read through Identity becomes a tensor of its own.

    The legacy exporter stores equal-valued weights once and reads the others
    through ``Identity`` nodes named after their own state_dict keys
    (``norm2.weight = Identity(norm1.weight)``): each must stay a separate parameter.
    """
    item = cx.input(0)
    if isinstance(item, Value) and item.is_const and item.origin and cx.proto.output[0]:
        return const(item.tensor.clone(), cx.proto.output[0])
    return item


@converter("Dropout")
def dropout(cx: NodeContext) -> Result:
    x = cx.value(0)
    ratio = cx.attr_float("ratio", 0.5)
    if cx.opset >= 12:
        ratio = float(cx.const(1).item()) if cx.has(1) else 0.5
    outputs: list[Value] = []
    if ratio > 0:
        outputs.append(cx.module(nn.Dropout(ratio), [x], []))
    else:
        outputs.append(x)
    if cx.used(1):  # the inference mask, as ONNX Runtime fills it (all False before opset 12)
        fill = torch.ones_like if cx.opset >= 12 else torch.zeros_like
        outputs.append(cx.call(fill, x, dtype=torch.bool))
    return outputs


@converter("Range")
def range_(cx: NodeContext) -> Output:
    items = [cx.dims(k).items[0] for k in range(3)]
    dtype = cx.value(0).dtype if not isinstance(cx.input(0), Dims) else cx.dims(0).dtype
    return cx.call(torch.arange, items[0], items[1], items[2], dtype=dtype)
