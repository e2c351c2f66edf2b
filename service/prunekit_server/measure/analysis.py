"""Static facts about an ONNX model: parameters, MACs per layer, inputs and outputs.

Layers are the ``Conv``, ``ConvTranspose``, ``Gemm`` and ``MatMul`` nodes of the main
graph. A layer's weight is traced from its weight input back through ``Identity``,
``Transpose``, ``Cast`` and ``DequantizeLinear`` to an initializer or a ``Constant``
node: ``weight_name`` is that tensor's name and ``weight_shape`` its stored shape
(so a ``MatMul`` reading ``Transpose(fc.weight)`` reports ``fc.weight`` as
``[out, in]``). The weight input is input 1, except for a ``MatMul`` whose input 0 is
the constant one. A bias is input 2 of ``Conv``/``ConvTranspose``/``Gemm``, or, for a
``MatMul``, the constant operand of the single ``Add`` consuming its output.

MACs come from the shapes ``onnx.shape_inference`` finds for the analysed inputs:
``Conv``: out elements x (C/group) x kernel; ``ConvTranspose``: in elements x
(M/group) x kernel; ``Gemm`` and ``MatMul``: out elements x K. When inference leaves
a layer's shapes unknown (a ``Split`` or ``Slice`` whose sizes are computed at run
time), the missing values are measured instead: the model runs once in ONNX Runtime
(CPU, one thread) on synthetic inputs of the analysed shapes with just those values
added as outputs. A layer whose shapes neither gives gets 0 MACs and a
``MACS_UNKNOWN`` warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from prunekit.v1 import model_pb2

from ..modelio.ingest import data_type_from_onnx, graph_inputs
from .latency import PROVIDER, session_options
from .quality import synthetic_inputs

LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_PASS_THROUGH = frozenset({"Identity", "Transpose", "Cast", "DequantizeLinear"})
_KEEP_FOR_INFERENCE = 4096
"""Initializers up to this many elements keep their values for shape inference (shape tensors)."""


def count_parameters(model: onnx.ModelProto) -> tuple[int, int]:
    """(elements, nonzero elements) of all main-graph initializers plus the ``Constant``
    tensors that feed a layer's weight or bias."""
    total = nonzero = 0
    tensors = list(model.graph.initializer) + list(_constant_weights(model).values())
    for tensor in tensors:
        count = math.prod(tensor.dims)
        total += count
        nonzero += _nonzero(tensor, count)
    return total, nonzero


def _nonzero(tensor: onnx.TensorProto, count: int) -> int:
    try:
        return int(np.count_nonzero(numpy_helper.to_array(tensor)))
    except (TypeError, ValueError):
        return count


def layer_table(model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec]) -> list[model_pb2.LayerInfo]:
    """One LayerInfo per Conv/ConvTranspose/Gemm/MatMul node, in graph order."""
    return _layers(model, inputs)[0]


def analyze(
    model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec], *, source_format: int, size_bytes: int
) -> model_pb2.ModelAnalysis:
    """Every ModelAnalysis field for ``model`` run on ``inputs`` (concrete shapes).

    ``parameters`` counts what :func:`count_parameters` counts; ``node_count`` the
    main graph's nodes; ``macs`` is the sum over :func:`layer_table`.
    """
    layers, warnings = _layers(model, inputs)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return model_pb2.ModelAnalysis(
        format=model_pb2.ModelFormat.ValueType(source_format),
        opset=opset,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=[tensor_info(v) for v in graph_inputs(model)],
        outputs=[tensor_info(v) for v in model.graph.output],
        parameters=count_parameters(model)[0],
        macs=sum(layer.macs for layer in layers),
        size_bytes=size_bytes,
        node_count=len(model.graph.node),
        layers=layers,
        analyzed_inputs=list(inputs),
        warnings=warnings,
    )


def tensor_info(value: onnx.ValueInfoProto) -> model_pb2.TensorInfo:
    """A graph input or output as declared, symbolic dimensions kept."""
    tensor = value.type.tensor_type
    dims = [
        model_pb2.Dimension(size=d.dim_value)
        if d.HasField("dim_value")
        else model_pb2.Dimension(symbol=d.dim_param)
        for d in tensor.shape.dim
    ]
    return model_pb2.TensorInfo(name=value.name, shape=dims, dtype=data_type_from_onnx(tensor.elem_type))


def _layers(
    model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec]
) -> tuple[list[model_pb2.LayerInfo], list[str]]:
    warnings: list[str] = []
    graph = _Graph(model)
    shapes = _inferred_shapes(model, inputs, warnings)
    missing = {
        name
        for node in model.graph.node
        if node.op_type in LAYER_OPS and node.domain in ("", "ai.onnx") and _macs(node, shapes) is None
        for name in _shape_values(node)
        if name not in shapes and name in graph.producers
    }
    if missing:
        shapes.update(_measured_shapes(model, inputs, sorted(missing)))
    layers: list[model_pb2.LayerInfo] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in LAYER_OPS or node.domain not in ("", "ai.onnx"):
            continue
        weight_input = _weight_input(node, graph)
        weight = graph.trace(node.input[weight_input]) if weight_input is not None else None
        bias = graph.bias(node)
        parameters = sum(math.prod(t.dims) for t in (weight, bias) if t is not None)
        name = node.name or (weight.name if weight is not None else f"{node.op_type}_{index}")
        macs = _macs(node, shapes)
        if macs is None:
            warnings.append(
                f"MACS_UNKNOWN: the shapes of layer {name!r} could not be inferred; its MACs count as 0"
            )
        layers.append(
            model_pb2.LayerInfo(
                name=name,
                op_type=node.op_type,
                weight_shape=list(weight.dims) if weight is not None else [],
                parameters=parameters,
                macs=macs or 0,
                weight_name=weight.name if weight is not None else "",
            )
        )
    return layers, warnings


class _Graph:
    """Lookups over the main graph: producers, consumers, constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for output in node.output:
                self.producers[output] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def trace(self, name: str) -> onnx.TensorProto | None:
        """The initializer or Constant tensor (named after its output) that ``name`` passes through to."""
        for _ in range(32):
            if name in self.initializers:
                return self.initializers[name]
            node = self.producers.get(name)
            if node is None or (not node.input and node.op_type != "Constant"):
                return None
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
                if value is None:
                    return None
                tensor = onnx.TensorProto()
                tensor.CopyFrom(value)
                tensor.name = node.output[0]
                return tensor
            if node.op_type not in _PASS_THROUGH or node.domain not in ("", "ai.onnx"):
                return None
            name = node.input[0]
        return None

    def bias(self, node: onnx.NodeProto) -> onnx.TensorProto | None:
        if node.op_type != "MatMul":
            return self.trace(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        consumers = self.consumers.get(node.output[0], [])
        if len(consumers) != 1 or consumers[0].op_type != "Add":
            return None
        others = [name for name in consumers[0].input if name != node.output[0]]
        return self.trace(others[0]) if len(others) == 1 else None


def _weight_input(node: onnx.NodeProto, graph: _Graph) -> int | None:
    if len(node.input) < 2:
        return None
    if (
        node.op_type == "MatMul"
        and graph.trace(node.input[1]) is None
        and graph.trace(node.input[0]) is not None
    ):
        return 0
    return 1


def _constant_weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    graph = _Graph(model)
    found: dict[str, onnx.TensorProto] = {}
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        weight_input = _weight_input(node, graph)
        candidates = [node.input[weight_input]] if weight_input is not None else []
        tensors = [graph.trace(name) for name in candidates] + [graph.bias(node)]
        for tensor in tensors:
            if tensor is not None and tensor.name not in graph.initializers:
                found[tensor.name] = tensor
    return found


def _inferred_shapes(
    model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec], warnings: list[str]
) -> dict[str, list[int]]:
    """Static shapes of every value shape inference can find for the given input shapes."""
    declared = {spec.name: [int(d) for d in spec.shape] for spec in inputs}
    source = model.graph
    graph = onnx.GraphProto(name=source.name)
    graph.node.extend(source.node)
    input_names = {v.name for v in source.input}
    for value in source.input:
        copy = graph.input.add()
        copy.CopyFrom(value)
        if value.name in declared:
            _set_shape(copy, declared[value.name])
    for tensor in source.initializer:
        if math.prod(tensor.dims) <= _KEEP_FOR_INFERENCE:
            graph.initializer.append(tensor)
        elif tensor.name not in input_names:
            graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    for value in source.output:
        copy = graph.output.add()
        copy.name = value.name
        copy.type.tensor_type.elem_type = value.type.tensor_type.elem_type
    trimmed = onnx.ModelProto(ir_version=model.ir_version, graph=graph)
    trimmed.opset_import.extend(model.opset_import)
    trimmed.functions.extend(model.functions)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            trimmed, check_type=False, strict_mode=False, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:
        warnings.append(
            f"SHAPE_INFERENCE_FAILED: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc}"
        )
        inferred = trimmed
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in source.initializer}
    g = inferred.graph
    for value in [*g.input, *g.value_info, *g.output]:
        tensor_type = value.type.tensor_type
        if value.type.WhichOneof("value") == "tensor_type" and tensor_type.HasField("shape"):
            dims = tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _measured_shapes(
    model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec], names: list[str]
) -> dict[str, list[int]]:
    """Shapes of the values ``names`` in one ONNX Runtime run on synthetic ``inputs``; {} if it fails."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {v.name for v in probe.graph.output}
    for name in names:
        if name not in outputs:
            probe.graph.output.add().name = name  # ORT types an output given by name alone
    try:
        (feed,) = synthetic_inputs(inputs, 1, 0)
        session = ort.InferenceSession(
            probe.SerializeToString(), sess_options=session_options(1), providers=[PROVIDER]
        )
        values = session.run(names, feed)
    except Exception:  # any failure (op, feed, size) leaves the layers unknown, as without it
        return {}
    return {
        name: [int(d) for d in value.shape]
        for name, value in zip(names, values, strict=True)
        if isinstance(value, np.ndarray)
    }


def _set_shape(value: onnx.ValueInfoProto, shape: list[int]) -> None:
    tensor_shape = value.type.tensor_type.shape
    del tensor_shape.dim[:]
    for size in shape:
        tensor_shape.dim.add().dim_value = size


def _shape_values(node: onnx.NodeProto) -> list[str]:
    """The values whose shapes :func:`_macs` reads for ``node``."""
    first = node.input[0] if node.input else ""
    second = node.input[1] if len(node.input) > 1 else ""
    if node.op_type == "Conv":
        names = [node.output[0], second]
    elif node.op_type == "ConvTranspose":
        names = [first, second]
    else:
        names = [first, node.output[0]]
    return [name for name in names if name]


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int | None:
    """Multiply-accumulates of one layer, or None when a needed shape is unknown."""
    out = shapes.get(node.output[0])
    first = shapes.get(node.input[0])
    second = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if node.op_type == "Conv":
        return None if out is None or second is None else math.prod(out) * math.prod(second[1:])
    if node.op_type == "ConvTranspose":
        return None if first is None or second is None else math.prod(first) * math.prod(second[1:])
    if first is None or out is None or not first:
        return None
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        if len(first) != 2:
            return None
        return math.prod(out) * (first[0] if trans_a else first[1])
    return math.prod(out) * first[-1]
