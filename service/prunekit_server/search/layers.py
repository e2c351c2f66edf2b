"""The layers whose latency a search tables: Conv (1-3 d) and Linear, as shapes, and as one-node models.

:func:`layers_of` reads every such layer of a GraphModule after a sample run (:func:`~..pruning.fx_tools
.propagate`): its input shape, widths and attributes, as a :class:`LayerShape`. A shape's
:meth:`~LayerShape.signature` keys the latency tables; :meth:`~LayerShape.model` is the one-node ONNX
model timed for it (random weights: latency does not depend on their values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from ..pruning.fx_tools import module_at, propagate, shape_of

_OPSET = 17


@dataclass(frozen=True)
class LayerShape:
    """One Conv or Linear as it runs: ``rows`` is the batch (Conv) or every leading dimension (Linear)."""

    path: str
    kind: str
    """"conv" or "linear"."""
    rows: int
    in_ch: int
    out_ch: int
    spatial: tuple[int, ...] = ()
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True

    def signature(self) -> str:
        """The table key: every field that changes the latency (not the path)."""
        if self.kind == "linear":
            return f"linear|r{self.rows}|{self.in_ch}>{self.out_ch}|b{int(self.bias)}"
        return (
            f"conv{len(self.spatial)}d|n{self.rows}|{self.in_ch}>{self.out_ch}|in{_dims(self.spatial)}|"
            f"k{_dims(self.kernel)}|s{_dims(self.stride)}|p{_dims(self.pads)}|d{_dims(self.dilation)}|"
            f"g{self.groups}|b{int(self.bias)}"
        )

    @property
    def depthwise(self) -> bool:
        """One group per input channel (its output channels follow the input's)."""
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_ch

    def resized(self, in_ch: int, out_ch: int) -> LayerShape:
        """The same layer with other widths; a depthwise layer stays depthwise (``in_ch`` rules)."""
        if self.depthwise:
            multiplier = max(1, self.out_ch // self.in_ch)
            kept_out = out_ch if out_ch % in_ch == 0 and out_ch < self.out_ch else in_ch * multiplier
            return replace(self, in_ch=in_ch, out_ch=kept_out, groups=in_ch)
        return replace(self, in_ch=in_ch, out_ch=out_ch)

    def macs(self) -> int:
        """Multiply-accumulates of one run (the fallback's measure when a shape cannot be timed)."""
        if self.kind == "linear":
            return self.rows * self.in_ch * self.out_ch
        per_output = (self.in_ch // max(1, self.groups)) * math.prod(self.kernel)
        return self.output_elements() * per_output

    def output_elements(self) -> int:
        """Elements of the output (ignoring stride rounding): what element-wise layers after it touch."""
        if self.kind == "linear":
            return self.rows * self.out_ch
        area = math.prod(max(1, s // st) for s, st in zip(self.spatial, self.stride, strict=True))
        return self.rows * self.out_ch * area

    def model(self) -> onnx.ModelProto:
        """A one-node model computing this layer, input ``x``."""
        rng = np.random.default_rng(0)
        if self.kind == "linear":
            weight = rng.standard_normal((self.out_ch, self.in_ch), dtype=np.float32)
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.rows, self.in_ch])
            inputs = ["x", "w", "b"] if self.bias else ["x", "w"]
            node = helper.make_node("Gemm", inputs, ["y"], transB=1)
        else:
            weight = rng.standard_normal(
                (self.out_ch, self.in_ch // self.groups, *self.kernel), dtype=np.float32
            )
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.rows, self.in_ch, *self.spatial])
            inputs = ["x", "w", "b"] if self.bias else ["x", "w"]
            node = helper.make_node(
                "Conv",
                inputs,
                ["y"],
                kernel_shape=list(self.kernel),
                strides=list(self.stride),
                pads=list(self.pads),
                dilations=list(self.dilation),
                group=self.groups,
            )
        tensors = [numpy_helper.from_array(weight, "w")]
        if self.bias:
            tensors.append(numpy_helper.from_array(np.zeros(self.out_ch, np.float32), "b"))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph([node], "layer", [x], [y], initializer=tensors)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])

    def feed(self) -> dict[str, np.ndarray]:
        shape = [self.rows, self.in_ch] if self.kind == "linear" else [self.rows, self.in_ch, *self.spatial]
        return {"x": np.random.default_rng(1).standard_normal(shape, dtype=np.float32)}


def _dims(values: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in values)


def _pads(module: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> tuple[int, ...]:
    padding = module.padding
    kernel, dilation = module.kernel_size, module.dilation
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * (2 * len(kernel))
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
    return tuple(int(p) for p in padding) * 2


def _shape(path: str, module: nn.Module, source: tuple[int, ...]) -> LayerShape | None:
    if isinstance(module, nn.Linear) and len(source) >= 1:
        rows = math.prod(source[:-1]) if len(source) > 1 else 1
        return LayerShape(
            path, "linear", rows, module.in_features, module.out_features, bias=module.bias is not None
        )
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and len(source) == 2 + len(module.kernel_size):
        return LayerShape(
            path,
            "conv",
            source[0],
            module.in_channels,
            module.out_channels,
            spatial=tuple(source[2:]),
            kernel=tuple(int(k) for k in module.kernel_size),
            stride=tuple(int(s) for s in module.stride),
            pads=_pads(module),
            dilation=tuple(int(d) for d in module.dilation),
            groups=int(module.groups),
            bias=module.bias is not None,
        )
    return None


def layers_of(gm: fx.GraphModule, args: Sequence[torch.Tensor]) -> list[LayerShape]:
    """Every Conv/Linear call of ``gm`` on ``args``, in graph order (a module called twice counts twice)."""
    propagate(gm, args)
    found: list[LayerShape] = []
    for node in gm.graph.nodes:
        module = module_at(gm, node)
        source = shape_of(node.args[0]) if module is not None and node.args else None
        if module is None or source is None:
            continue
        shape = _shape(str(node.target), module, source)
        if shape is not None:
            found.append(shape)
    return found
