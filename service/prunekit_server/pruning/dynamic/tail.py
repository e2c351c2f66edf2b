"""The layers after the token-skipping point as a trainable student that sees a soft token mask.

:func:`masked_tail` cuts the model at the point (a ``(N, T, D)`` tensor): the nodes after it become a
model of two inputs, the point's tensor and a float mask ``(N, T)`` (1 keeps a token, 0 drops it), whose
attention ``Softmax`` nodes read their logits plus ``log(mask)`` over the keys. With a 0/1 mask, that is
what the token-skipping graph computes for the output (a dropped token is no key or value any more); with
a mask in between, it is a relaxation gradients flow through. Shape-only work before the point that the
later nodes read is recomputed in the tail; a tail that needs more (another input, weighted work before
the point) raises ``ValueError``.

:class:`TailStudent` converts the tail to torch (:class:`~...training.students.ValueStudent`): its
parameters are the initializers only the later layers read, so training changes nothing before the point,
and :meth:`TailStudent.tensors` gives their new values to write back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from prunekit.v1 import model_pb2

from ...training.students import ValueStudent
from .heads import opset_of
from .points import ExitPoint, Graph, Output, needed_nodes

__all__ = ["MASK", "TailStudent", "masked_tail"]

MASK = "dyn_token_mask"
_FLOOR = 1e-9


def _mask_bias(opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """``log(max(mask, floor))`` as ``(N, 1, 1, T)``: the bias every masked softmax adds."""
    floor = numpy_helper.from_array(np.asarray(_FLOOR, dtype=np.float32), "dyn_mask_floor")
    clipped, logs, bias = "dyn_mask_clipped", "dyn_mask_log", "dyn_mask_bias"
    nodes = [
        helper.make_node("Max", [MASK, floor.name], [clipped], name=clipped),
        helper.make_node("Log", [clipped], [logs], name=logs),
    ]
    consts = [floor]
    if opset >= 13:
        axes = numpy_helper.from_array(np.asarray([1, 2], dtype=np.int64), "dyn_mask_axes")
        nodes.append(helper.make_node("Unsqueeze", [logs, axes.name], [bias], name=bias))
        consts.append(axes)
    else:
        nodes.append(helper.make_node("Unsqueeze", [logs], [bias], name=bias, axes=[1, 2]))
    return nodes, consts, bias


def masked_tail(graph: Graph, point: ExitPoint, softmaxes: Sequence[str], output: Output) -> onnx.ModelProto:
    """The model after ``point`` reading ``(point, mask)`` (see the module docstring); ``softmaxes``
    are the attention probabilities of the layers after it."""
    later = sorted(graph.ancestors(output.name) - graph.ancestors(point.tensor))
    nodes = needed_nodes(graph, [graph.nodes[i] for i in later], {point.tensor})
    bias_nodes, consts, bias = _mask_bias(opset_of(graph.model))
    body: list[onnx.NodeProto] = list(bias_nodes)
    wanted = set(softmaxes)
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if node.op_type == "Softmax" and node.output[0] in wanted:
            biased = f"{node.output[0]}__masked_logits"
            body.append(helper.make_node("Add", [node.input[0], bias], [biased], name=biased))
            copy.input[0] = biased
        body.append(copy)
    read = {name for node in body for name in node.input}
    initializers = [t for t in graph.model.graph.initializer if t.name in read]
    known = {out for node in body for out in node.output} | {t.name for t in initializers}
    missing = sorted(read - known - {point.tensor, MASK, ""} - {t.name for t in consts})
    if missing:
        raise ValueError(f"the later layers read {', '.join(missing)} beyond the point")
    tokens, width = point.shape[1], point.shape[2]
    inputs = [
        helper.make_tensor_value_info(point.tensor, point.elem_type, ["batch", tokens, width]),
        helper.make_tensor_value_info(MASK, onnx.TensorProto.FLOAT, ["batch", tokens]),
    ]
    outputs = [helper.make_tensor_value_info(output.name, output.elem_type, None)]
    tail = helper.make_model(
        helper.make_graph(body, "dyn_tail", inputs, outputs, [*initializers, *consts]),
        opset_imports=list(graph.model.opset_import),
    )
    tail.ir_version = graph.model.ir_version
    return tail


class TailStudent:
    """The masked tail in torch: ``student(points, mask) -> output``; trainable where only it reads."""

    def __init__(self, graph: Graph, point: ExitPoint, softmaxes: Sequence[str], output: Output) -> None:
        tail = masked_tail(graph, point, softmaxes, output)
        before = {name for i in graph.ancestors(point.tensor) for name in graph.nodes[i].input}
        specs = [
            model_pb2.InputSpec(name=point.tensor, shape=[2, *point.shape[1:]]),
            model_pb2.InputSpec(name=MASK, shape=[2, point.shape[1]]),
        ]
        self.student = ValueStudent(tail, specs, ())
        params = dict(self.student.module.named_parameters())
        for initializer in [n for n in self.student.pairings if n in before]:
            shared = self.student.pairings.pop(initializer)
            if shared.path in params:
                params[shared.path].requires_grad_(False)

    def freeze(self) -> None:
        """Train nothing of the later layers (a scorer alone learns through them)."""
        for param in self.student.module.parameters():
            param.requires_grad_(False)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters (initializers only the later layers read)."""
        return [p for p in self.student.module.parameters() if p.requires_grad]

    def __call__(self, points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.student.module(points, mask)
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        """ONNX initializer name -> its trained value, in the initializer's layout."""
        return self.student.tensors()
