"""Where an ONNX classifier can be gated: its exit points, the work before each, its output.

An exit point is a float tensor of rank 2, 3 or 4 whose first dimension is the batch and that every path
from the model's first input to its output passes through (shape-only paths, out of ``Shape`` and
``Size``, do not count): the whole representation at that depth. The points are totally ordered by
depth; each carries the share of the model's MACs computed before it. Automatic choice keeps the last
point before each further weighted layer (a block's end) and spreads at most ``count`` of them over
depth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from prunekit.v1 import model_pb2

from ...errors import FieldViolation, ServiceError, invalid_spec
from ...measure.analysis import layer_table
from .errors import not_applicable

__all__ = [
    "ExitPoint",
    "Graph",
    "Output",
    "choose_points",
    "classifier_output",
    "exit_points",
    "named_points",
    "needed_nodes",
    "no_points_error",
    "tensor_shapes",
]

_SHAPE_ONLY = frozenset({"Shape", "Size"})
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_FLOATS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})
MAX_DEPTH_SHARE = 0.9
"""A point with more of the MACs than this before it saves too little to be chosen automatically."""


@dataclass(frozen=True)
class Output:
    """The classifier's one output: name, element type, shape, and the op producing it when it normalizes
    (``Softmax``, ``LogSoftmax``; "" for logits)."""

    name: str
    elem_type: int
    shape: tuple[int | str, ...]
    final_op: str
    final_axis: int


@dataclass(frozen=True)
class ExitPoint:
    """A tensor an exit head may read: its name, shape, producer node and share of MACs before it."""

    tensor: str
    shape: tuple[int, ...]
    node: str
    macs_fraction: float
    elem_type: int = onnx.TensorProto.FLOAT


class Graph:
    """The main graph's producers, consumers and per-node MACs, for ancestry questions."""

    def __init__(self, model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec]) -> None:
        self.model = model
        self.inputs = tuple(inputs)
        self.nodes = list(model.graph.node)
        self.producer = {out: i for i, node in enumerate(self.nodes) for out in node.output if out}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                self.consumers.setdefault(name, []).append(i)
        self.macs = _node_macs(model, inputs, self.nodes)
        self.total_macs = max(1, sum(self.macs))

    def ancestors(self, tensor: str) -> set[int]:
        """Indices of the nodes computing ``tensor`` (the node producing it included)."""
        found: set[int] = set()
        todo = [tensor]
        while todo:
            index = self.producer.get(todo.pop())
            if index is None or index in found:
                continue
            found.add(index)
            todo.extend(self.nodes[index].input)
        return found

    def dominates(self, tensor: str, source: str, target: str) -> bool:
        """True when every data path from ``source`` to ``target`` passes through ``tensor``."""
        seen = {source}
        todo = deque([source])
        while todo:
            name = todo.popleft()
            if name == target:
                return False
            for index in self.consumers.get(name, ()):
                node = self.nodes[index]
                if node.op_type in _SHAPE_ONLY:
                    continue
                for out in node.output:
                    if out and out != tensor and out not in seen:
                        seen.add(out)
                        todo.append(out)
        return True


def _node_macs(
    model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec], nodes: list[onnx.NodeProto]
) -> list[int]:
    table = layer_table(model, list(inputs))
    weighted = [i for i, node in enumerate(nodes) if node.op_type in _WEIGHTED]
    macs = [0] * len(nodes)
    if len(table) == len(weighted):
        for index, layer in zip(weighted, table, strict=True):
            macs[index] = int(layer.macs)
        return macs
    by_name = {layer.name: int(layer.macs) for layer in table}
    for index in weighted:
        macs[index] = by_name.get(nodes[index].name, 0)
    return macs


def tensor_shapes(
    model: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec]
) -> dict[str, tuple[int, tuple[int | str, ...]]]:
    """Tensor name -> (element type, shape), inferred with the inputs' concrete shapes."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    concrete = {spec.name: list(spec.shape) for spec in inputs}
    for info in fixed.graph.input:
        wanted = concrete.get(info.name)
        if wanted and len(wanted) == len(info.type.tensor_type.shape.dim):
            for dim, value in zip(info.type.tensor_type.shape.dim, wanted, strict=True):
                dim.dim_value = int(value)
    del fixed.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    infos = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    out: dict[str, tuple[int, tuple[int | str, ...]]] = {}
    for info in infos:
        t = info.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        out[info.name] = (t.elem_type, dims)
    return out


def classifier_output(graph: Graph) -> Output:
    """The model's one float ``(batch, classes)`` output; ``DYNAMIC_NOT_APPLICABLE`` otherwise."""
    outputs = list(graph.model.graph.output)
    if len(outputs) != 1:
        raise not_applicable(
            f"early exit needs a model with one output (a classifier's), this one has {len(outputs)}"
        )
    info = outputs[0]
    t = info.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
    if t.elem_type not in _FLOATS or len(dims) != 2 or (isinstance(dims[1], int) and dims[1] < 2):
        raise not_applicable(
            f"early exit needs a float output of shape (batch, classes); output {info.name!r} has shape "
            f"{list(dims)}"
        )
    producer = graph.producer.get(info.name)
    node = graph.nodes[producer] if producer is not None else None
    final_op = node.op_type if node is not None and node.op_type in ("Softmax", "LogSoftmax") else ""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if node is not None and final_op else 1
    return Output(info.name, t.elem_type, dims, final_op, int(axis))


def exit_points(graph: Graph, output: Output) -> list[ExitPoint]:
    """Every exit point in depth order (see the module docstring)."""
    model = graph.model
    initializers = {t.name for t in model.graph.initializer}
    first = next((i.name for i in model.graph.input if i.name not in initializers), None)
    if first is None:
        return []
    shapes = tensor_shapes(model, graph.inputs)
    batch = shapes.get(first, (0, ()))[1][:1]
    needed = graph.ancestors(output.name)
    points = []
    for index in sorted(needed):
        node = graph.nodes[index]
        for tensor in node.output:
            elem, shape = shapes.get(tensor, (0, ()))
            fixed = all(isinstance(d, int) and d > 0 for d in shape)
            if tensor == output.name or elem not in _FLOATS or len(shape) not in (2, 3, 4) or not fixed:
                continue
            if shape[:1] != batch and not (batch and not isinstance(batch[0], int)):
                continue
            if not graph.dominates(tensor, first, output.name):
                continue
            before = sum(graph.macs[i] for i in graph.ancestors(tensor))
            dims = tuple(int(d) for d in shape)
            points.append(ExitPoint(tensor, dims, node.name, before / graph.total_macs, elem))
    return points


def choose_points(points: Sequence[ExitPoint], count: int) -> list[ExitPoint]:
    """At most ``count`` block ends (see the module docstring) spread evenly over the MACs before them."""
    ends: dict[float, ExitPoint] = {}
    for point in points:
        if 0.0 < point.macs_fraction <= MAX_DEPTH_SHARE:
            ends[point.macs_fraction] = point
    candidates = sorted(ends.values(), key=lambda p: p.macs_fraction)
    if len(candidates) <= count:
        return candidates
    chosen: list[ExitPoint] = []
    for k in range(count):
        goal = candidates[-1].macs_fraction * (k + 1) / count
        best = min((p for p in candidates if p not in chosen), key=lambda p: abs(p.macs_fraction - goal))
        chosen.append(best)
    return sorted(chosen, key=lambda p: p.macs_fraction)


def named_points(points: Sequence[ExitPoint], names: Sequence[str], path: str) -> list[ExitPoint]:
    """The points the spec names (node or tensor names), in depth order; ``INVALID_SPEC`` naming each name
    that is not an exit point."""
    by_name: dict[str, ExitPoint] = {}
    for point in points:
        by_name.setdefault(point.tensor, point)
        by_name[point.node] = point
    bad = [
        FieldViolation(
            f"{path}[{i}]",
            f"{name!r} is not an exit point (a float tensor every path from the input to the output passes "
            "through); exit points: " + ", ".join(p.node or p.tensor for p in points[:12]),
        )
        for i, name in enumerate(names)
        if name not in by_name
    ]
    if bad:
        raise invalid_spec(bad)
    chosen = {by_name[name].tensor: by_name[name] for name in names}
    return sorted(chosen.values(), key=lambda p: p.macs_fraction)


def needed_nodes(graph: Graph, nodes: list[onnx.NodeProto], allowed: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` plus the cheap (MAC-free) earlier nodes computing what they read beyond ``allowed``, in
    graph order; ``ValueError`` when they read a tensor computed by weighted work or by ``allowed``'s."""
    initializers = {t.name for t in graph.model.graph.initializer}
    chosen = {id(n) for n in nodes}
    index_of = {id(n): i for i, n in enumerate(graph.nodes)}
    produced = {out for n in nodes for out in n.output}
    for node in list(nodes):
        for name in node.input:
            if not name or name in produced or name in initializers or name in allowed:
                continue
            for i in graph.ancestors(name):
                before = graph.nodes[i]
                if graph.macs[i] or any(t in allowed for t in before.output):
                    raise ValueError(f"the later nodes read {name!r}, computed by earlier work")
                chosen.add(id(before))
    return sorted((n for n in graph.nodes if id(n) in chosen), key=lambda n: index_of[id(n)])


def no_points_error(output: Output) -> ServiceError:
    """``DYNAMIC_NOT_APPLICABLE``: nothing every path passes through before the output."""
    return not_applicable(
        f"no exit point found: no tensor before output {output.name!r} that every path from the input "
        "passes through with part of the MACs before it (early exit needs repeated blocks or stages)"
    )
