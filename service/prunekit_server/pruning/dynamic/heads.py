"""Exit heads: the pooling each exit point gets, the probe model that reads the pooled features, training.

A head is ``pool -> Gemm``: a 4-D ``(N, C, H, W)`` point is average-pooled to at most a 2 x 2 grid and
flattened, a 3-D ``(N, T, D)`` one averaged over its tokens, a 2-D one read as it is. Heads are trained
by distillation from the original's outputs (KL at temperature :data:`TEMPERATURE`, plus cross-entropy
when there are labels) on the pooled features of the train inputs, standardized while training and the
standardization folded into the Gemm after; the backbone never changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch.nn import functional

from .points import ExitPoint

__all__ = ["Head", "add_pool", "opset_of", "probe_model", "train_head"]

TEMPERATURE = 2.0
LABEL_WEIGHT = 0.5
BATCH = 256
LEARNING_RATE = 1e-2
_FLOAT = onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class Head:
    """A trained exit head: its Gemm's weight ``(classes, features)`` and bias ``(classes,)``."""

    weight: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The head's outputs on pooled features ``(n, features)``."""
        out: np.ndarray = features.astype(np.float32) @ self.weight.T + self.bias
        return out


def opset_of(model: onnx.ModelProto) -> int:
    """The model's default-domain opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def axes_node(
    op: str, source: str, output: str, axes: list[int], opset: int, *, keepdims: int = 0
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A ``Reduce*`` node over ``axes`` in the form ``opset`` takes (an attribute, or an input from 18)."""
    if opset >= 18:
        name = f"{output}__axes"
        node = helper.make_node(op, [source, name], [output], name=output, keepdims=keepdims)
        return [node], [numpy_helper.from_array(np.asarray(axes, dtype=np.int64), name)]
    return [helper.make_node(op, [source], [output], name=output, axes=axes, keepdims=keepdims)], []


def add_pool(
    point: ExitPoint, prefix: str, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str, int]:
    """The pooling nodes of ``point`` (names under ``prefix``), their constants, the features tensor and
    its width."""
    nodes: list[onnx.NodeProto] = []
    source = point.tensor
    shape = point.shape
    if len(shape) == 4:
        _, c, h, w = shape
        if h * w > 4:
            kernel = [math.ceil(h / 2), math.ceil(w / 2)]
            pooled = f"{prefix}_pooled"
            nodes.append(
                helper.make_node(
                    "AveragePool",
                    [source],
                    [pooled],
                    name=pooled,
                    kernel_shape=kernel,
                    strides=kernel,
                    ceil_mode=1,
                )
            )
            source, h, w = pooled, math.ceil(h / kernel[0]), math.ceil(w / kernel[1])
        flat = f"{prefix}_flat"
        nodes.append(helper.make_node("Flatten", [source], [flat], name=flat, axis=1))
        return _as_float(point, nodes, [], flat, c * h * w)
    if len(shape) == 3:
        mean = f"{prefix}_mean"
        reduce, consts = axes_node("ReduceMean", source, mean, [1], opset)
        return _as_float(point, reduce, consts, mean, shape[2])
    return _as_float(point, [], [], source, shape[1])


def _as_float(
    point: ExitPoint, nodes: list[onnx.NodeProto], consts: list[onnx.TensorProto], features: str, width: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str, int]:
    if point.elem_type == _FLOAT:
        return nodes, consts, features, width
    cast = f"{features}_f32"
    return [*nodes, helper.make_node("Cast", [features], [cast], name=cast, to=_FLOAT)], consts, cast, width


def probe_model(model: onnx.ModelProto, points: list[ExitPoint], output: str) -> onnx.ModelProto:
    """``model`` whose outputs are ``output`` then each point's pooled features, all as float32."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    opset = opset_of(model)
    names = ["dyn_probe_out"]
    probe.graph.node.append(helper.make_node("Cast", [output], [names[0]], name=names[0], to=_FLOAT))
    for k, point in enumerate(points, start=1):
        nodes, consts, features, _ = add_pool(point, f"dyn_probe{k}", opset)
        probe.graph.node.extend(nodes)
        probe.graph.initializer.extend(consts)
        names.append(features)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, _FLOAT, None) for n in names)
    return probe


def train_head(
    features: np.ndarray,
    teacher_logits: np.ndarray,
    labels: np.ndarray | None,
    steps: int,
    seed: int,
) -> Head:
    """A head trained ``steps`` Adam steps on minibatches of ``features`` to match ``teacher_logits``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(features.astype(np.float32))
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    teacher = functional.softmax(torch.from_numpy(teacher_logits.astype(np.float32)) / TEMPERATURE, dim=1)
    y = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
    layer = torch.nn.Linear(x.shape[1], teacher.shape[1])
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)
        layer.bias.zero_()
    optimizer = torch.optim.Adam(layer.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    n = x.shape[0]
    for _ in range(steps):
        index = torch.randint(0, n, (min(BATCH, n),), generator=generator)
        student = layer(x[index])
        loss = functional.kl_div(
            functional.log_softmax(student / TEMPERATURE, dim=1), teacher[index], reduction="batchmean"
        ) * (TEMPERATURE**2)
        if y is not None:
            loss = (1 - LABEL_WEIGHT) * loss + LABEL_WEIGHT * functional.cross_entropy(student, y[index])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        weight = layer.weight / std
        bias = layer.bias - weight @ mean
    return Head(weight.numpy().astype(np.float32), bias.numpy().astype(np.float32))
