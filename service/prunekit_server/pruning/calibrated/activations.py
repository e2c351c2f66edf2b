"""A layer's calibration inputs as rows of its matrix's columns, read with ONNX Runtime.

For a layer written as ``M`` (``out x fan_in``, :func:`..weights.weight_matrix`)
each row of ``X`` is one input vector ``x`` with ``y = M x``: a Gemm/MatMul
input's last axis (leading axes flattened), a 2-D Conv's input patches
(``im2col``, columns ordered channel-major like the weight). The model is run
with the tensor feeding the layer added as an output; a session reads one
layer's tensor (or, for statistics that reduce at once, several), one feed at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper
from torch.nn import functional

__all__ = ["input_rows", "layer_input_problem", "patch_rows", "tensors_per_feed"]


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def layer_input_problem(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> str:
    """Why this layer's inputs cannot be read as rows ("" when they can)."""
    if node.op_type != "Conv":
        return ""
    attrs = _attrs(node)
    if len(weight_shape) != 4:
        return "only 2-D convolutions are calibrated"
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if auto_pad not in (b"NOTSET", "NOTSET"):
        return "auto_pad convolutions are not calibrated"
    return ""


def input_rows(node: onnx.NodeProto, weight_shape: tuple[int, ...], x: np.ndarray) -> torch.Tensor:
    """The rows of ``X`` one input tensor ``x`` of ``node`` gives (float32 on CPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if node.op_type != "Conv":
        return tensor.reshape(-1, tensor.shape[-1])
    attrs = _attrs(node)
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]  # type: ignore[attr-defined]
    strides = [int(s) for s in attrs.get("strides", [1, 1])]  # type: ignore[attr-defined]
    dilations = [int(d) for d in attrs.get("dilations", [1, 1])]  # type: ignore[attr-defined]
    return patch_rows(tensor, tuple(weight_shape[2:]), pads, strides, dilations)


def patch_rows(
    x: torch.Tensor,
    kernel: Sequence[int],
    pads: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> torch.Tensor:
    """A 2-D convolution's input ``x`` (``N x C x H x W``) as one row per output position (``im2col``).

    ``pads`` are ONNX's ``[top, left, bottom, right]``; a row's columns are channel-major
    (``C x kh x kw``), the order of the weight's flattened ``C x kh x kw``.
    """
    padded = functional.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    patches = functional.unfold(padded, tuple(kernel), dilation=tuple(dilations), stride=tuple(strides))
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> ort.InferenceSession:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])


def tensors_per_feed(
    model: onnx.ModelProto, names: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """For each feed in turn, the values of the tensors ``names`` (graph inputs are taken from the feed)."""
    inputs = {i.name for i in model.graph.input}
    computed = [n for n in dict.fromkeys(names) if n not in inputs]
    session = _with_outputs(model, computed) if computed else None
    for feed in feeds:
        values = {n: feed[n] for n in names if n in inputs}
        if session is not None:
            outs = session.run(computed, {i.name: feed[i.name] for i in session.get_inputs()})
            values.update(zip(computed, (np.asarray(o) for o in outs), strict=True))
        yield values
