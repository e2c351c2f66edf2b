"""The early-exit model as TorchScript: traced segments chained by a scripted module with real ``if``.

The ONNX graph is cut at the exit points into segments (:func:`~.compose.stages`); each becomes a
standalone ONNX model taking the previous exit point's tensor and the model's input and giving its exit
point's tensor, its head's logits and its exit output (the last segment: the original output), which is
converted to torch.fx (:func:`~prunekit_server.modelio.onnx_to_fx.onnx_to_fx`) and traced. A scripted
module runs the segments in turn and returns at the first exit whose least confident item reaches the
threshold: the later segments never run. Shape-only side computations a segment needs from earlier ones
are recomputed in it; a segment that would need more (work before the previous exit point) makes the
model inexpressible this way. Only single-input models are written; the result is checked against the
ONNX model on sample inputs before it is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper
from torch import nn

from prunekit.v1 import model_pb2

from ...measure.quality import synthetic_inputs
from ...modelio.onnx_to_fx import onnx_to_fx
from .compose import THRESHOLD, exit_branch, head_nodes, stages
from .heads import Head, opset_of
from .points import ExitPoint, Graph, Output, needed_nodes, tensor_shapes

__all__ = ["write_early_exit_torchscript", "write_traced_torchscript"]


class _Segment(nn.Module):
    """One converted segment behind the uniform signature ``(previous, x) -> (point, logits, out)``."""

    def __init__(self, module: nn.Module, takes: tuple[bool, bool], final: bool) -> None:
        super().__init__()
        self.module = module
        self.takes_previous, self.takes_x = takes
        self.final = final

    def forward(
        self, previous: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        args = [a for a, used in ((previous, self.takes_previous), (x, self.takes_x)) if used]
        out = self.module(*args)
        if self.final:
            return out, out, out
        return out[0], out[1], out[2]


class _EarlyExit(nn.Module):
    """Segments in turn; leave at the first exit whose least confident item reaches ``threshold``."""

    def __init__(self, segments: list[torch.jit.ScriptModule], threshold: float) -> None:
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous = x
        result = x
        done = False
        last = len(self.segments) - 1
        for index, segment in enumerate(self.segments):
            if not done:
                point, logits, out = segment(previous, x)
                if index == last or bool(torch.softmax(logits.float(), 1).max(1)[0].min() >= self.threshold):
                    result = out
                    done = True
                previous = point
        return result


def _segment_model(
    graph: Graph, nodes: list[onnx.NodeProto], inputs: list[str], outputs: list[str],
    extra: tuple[list[onnx.NodeProto], list[onnx.TensorProto]],
) -> onnx.ModelProto:  # fmt: skip
    shapes = tensor_shapes(graph.model, graph.inputs)
    every = [*nodes, *extra[0]]
    read = {name for n in every for name in n.input}
    initializers = [t for t in graph.model.graph.initializer if t.name in read]
    initializers += [t for t in extra[1] if t.name in read]

    def info(name: str) -> onnx.ValueInfoProto:
        elem, dims = shapes.get(name, (onnx.TensorProto.FLOAT, ()))
        return helper.make_tensor_value_info(name, elem, list(dims) or None)

    body = helper.make_graph(
        every, "segment", [info(n) for n in inputs], [info(n) for n in outputs], initializers
    )
    model = helper.make_model(body, opset_imports=list(graph.model.opset_import))
    model.ir_version = graph.model.ir_version
    return model


def _specs(graph: Graph, names: Sequence[str]) -> list[model_pb2.InputSpec]:
    shapes = tensor_shapes(graph.model, graph.inputs)
    dtype = {spec.name: spec.dtype for spec in graph.inputs}
    return [
        model_pb2.InputSpec(
            name=n, shape=[int(d) for d in shapes[n][1]], dtype=dtype.get(n, model_pb2.DATA_TYPE_FLOAT32)
        )
        for n in names
    ]


def _segments(
    graph: Graph, output: Output, points: Sequence[ExitPoint], heads: Sequence[Head], threshold: float
) -> list[_Segment]:
    x = graph.inputs[0].name
    opset = opset_of(graph.model)
    parts = stages(graph, points, output.name)
    segments = []
    for k, nodes in enumerate(parts):
        previous = points[k - 1].tensor if k else ""
        allowed = {x, previous} - {""}
        body = needed_nodes(graph, nodes, allowed)
        final = k == len(points)
        if final:
            extra: tuple[list[onnx.NodeProto], list[onnx.TensorProto]] = ([], [])
            outputs = [output.name]
        else:
            head, consts, logits, _ = head_nodes(k + 1, points[k], heads[k], opset)
            then = exit_branch(k + 1, logits, output)
            consts.append(onnx.numpy_helper.from_array(np.asarray(threshold, dtype=np.float32), THRESHOLD))
            extra = ([*head, *then.node], consts)
            outputs = [points[k].tensor, logits, then.output[0].name]
        read = {name for n in [*body, *extra[0]] for name in n.input}
        inputs = [name for name in (previous, x) if name and name in read]
        model = _segment_model(graph, body, inputs, outputs, extra)
        module = onnx_to_fx(model, inputs=_specs(graph, inputs))
        segments.append(_Segment(module, (bool(previous) and previous in inputs, x in inputs), final))
    return segments


def _checked_save(
    module: torch.jit.ScriptModule, gated: onnx.ModelProto, spec: model_pb2.InputSpec, out: Path
) -> None:
    """Save ``module`` at ``out`` when it matches ``gated`` on four sample inputs; ``ValueError`` if not."""
    session = ort.InferenceSession(gated.SerializeToString(), providers=["CPUExecutionProvider"])
    for feed in synthetic_inputs([spec], 4, 0):
        want = session.run(None, feed)[0]
        got = module(torch.from_numpy(feed[spec.name])).detach().numpy()
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
            raise ValueError("the TorchScript model does not match the ONNX model")
    module.save(str(out))


def _not_written(exc: Exception) -> list[str]:
    return [f"TORCHSCRIPT_NOT_WRITTEN: the dynamic model is delivered as ONNX only ({exc})"]


def write_early_exit_torchscript(
    graph: Graph,
    output: Output,
    points: Sequence[ExitPoint],
    heads: Sequence[Head],
    gated: onnx.ModelProto,
    threshold: float,
    out_path: Path,
) -> list[str]:
    """Write the early-exit model as TorchScript at ``out_path``; a ``TORCHSCRIPT_NOT_WRITTEN`` warning
    (nothing written) when it cannot be expressed or does not match ``gated``."""
    try:
        if len(graph.inputs) != 1:
            raise ValueError("only single-input models are written as TorchScript")
        spec = graph.inputs[0]
        example = torch.from_numpy(synthetic_inputs([spec], 1, 0)[0][spec.name])
        traced = []
        previous = example
        for segment in _segments(graph, output, points, heads, threshold):
            traced.append(torch.jit.trace(segment, (previous, example), check_trace=False))  # type: ignore[no-untyped-call]
            previous = segment(previous, example)[0]
        _checked_save(torch.jit.script(_EarlyExit(traced, threshold)), gated, graph.inputs[0], out_path)
    except Exception as exc:  # any failure leaves the ONNX model as the delivery, said in the warning
        return _not_written(exc)
    return []


def write_traced_torchscript(
    model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec], out_path: Path
) -> list[str]:
    """Write a control-flow-free dynamic model (TOKEN_SKIP) as a trace of its torch.fx conversion; a
    ``TORCHSCRIPT_NOT_WRITTEN`` warning (nothing written) when that fails or does not match ``model``."""
    try:
        if len(inputs) != 1:
            raise ValueError("only single-input models are written as TorchScript")
        module = onnx_to_fx(model, inputs=list(inputs))
        example = torch.from_numpy(synthetic_inputs(list(inputs), 1, 0)[0][inputs[0].name])
        traced = torch.jit.trace(module, (example,), check_trace=False)  # type: ignore[no-untyped-call]
        _checked_save(traced, model, inputs[0], out_path)
    except Exception as exc:  # any failure leaves the ONNX model as the delivery, said in the warning
        return _not_written(exc)
    return []
