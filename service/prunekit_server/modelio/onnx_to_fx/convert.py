"""The driver: ONNX ModelProto -> torch.fx.GraphModule.

It walks the graph's nodes in order (ONNX graphs are topologically sorted), hands
each to the converter registered for its op type and opset, and runs every new
graph node on sample inputs of the resolved input shapes as it goes (see
:mod:`.builder`). Anything that cannot be converted is an :class:`UnsupportedOp`
(FAILED_PRECONDITION / UNSUPPORTED_MODEL) naming the op, the node and the opset.

The GraphModule is returned in eval mode (ONNX inference semantics); call
``.train()`` to fine-tune it. ``gm.meta`` holds:

* ``prunekit_onnx_names``: module or tensor path -> the ONNX node(s) and
  initializer(s) it came from;
* ``prunekit_input_names`` / ``prunekit_output_names``: the graph's names, in order;
* ``prunekit_opset``: the model's default-domain opset;
* ``prunekit_training_mode_batchnorm``: BatchNorm modules whose ONNX node ran in
  training mode (batch statistics): the GraphModule matches such a node in
  ``.train()``, and uses the running statistics in ``.eval()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import onnx.inliner
import torch
from torch import fx

from prunekit.v1 import model_pb2

from ...errors import ServiceError, unsupported_model
from ..ingest import resolve_inputs
from ..torchscript import random_input
from . import (
    ops_cnn,
    ops_control,
    ops_index,
    ops_math,
    ops_reduce,
    ops_resize,
    ops_sequence,
    ops_shape,
    ops_tensor,
    ops_transformer,
)
from .builder import GraphBuilder
from .errors import ConversionError, UnsupportedOp
from .node import Env, NodeContext, tensor_from_onnx
from .patterns import fuse_patterns
from .registry import Output, lookup
from .values import Dims, Value, const

_OP_MODULES = (
    ops_cnn,
    ops_control,
    ops_index,
    ops_math,
    ops_reduce,
    ops_resize,
    ops_sequence,
    ops_shape,
    ops_tensor,
    ops_transformer,
)
_DEFAULT_DOMAINS = ("", "ai.onnx")
EXAMPLE_BATCH = 2
"""The batch size of the sample inputs when the graph's batch dimension is symbolic."""


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    return int(onnx.defs.onnx_opset_version())


def onnx_to_fx(
    model: onnx.ModelProto, *, inputs: Sequence[model_pb2.InputSpec] | None = None
) -> fx.GraphModule:
    """Convert ``model`` to a trainable GraphModule of real torch modules and functions.

    ``inputs`` fixes the sample shapes the conversion runs with (needed for graphs
    with symbolic dimensions beyond the batch); by default the graph's static
    shapes are used, with a symbolic batch of :data:`EXAMPLE_BATCH`.
    """
    if len(model.functions):
        model = onnx.inliner.inline_local_functions(model)
    opset = model_opset(model)
    graph = fuse_patterns(model.graph)
    specs = resolve_inputs(model, list(inputs or []), batch_size=EXAMPLE_BATCH)
    generator = torch.Generator().manual_seed(0)
    initializers = {t.name: _initializer(t) for t in graph.initializer}
    builder = GraphBuilder(initializers)
    env: Env = {name: const(tensor, name) for name, tensor in initializers.items()}
    for spec in specs:
        env[spec.name] = builder.placeholder(spec.name, random_input(spec, generator))
    consumers = _consumers(graph)
    output_names = [o.name for o in graph.output]
    samples = _SampleReleaser(consumers, set(output_names) | _outer_names(graph))
    for spec in specs:
        samples.bound(env, spec.name)
    with torch.no_grad():
        _convert_nodes(builder, graph, opset, env, samples)
        outputs = [_graph_output(builder, env, name) for name in output_names]
    builder.output(outputs)
    try:
        draft = fx.GraphModule(builder.root, builder.graph)
        draft.graph.eliminate_dead_code()
        draft.graph.lint()
        gm = fx.GraphModule(draft, draft.graph, class_name="OnnxGraphModule")
    except Exception as exc:
        raise unsupported_model(f"the converted graph could not be built: {_one_line(str(exc))}") from exc
    present = {name for name, _ in gm.named_modules()} | {name for name, _ in gm.named_parameters()}
    present |= {name for name, _ in gm.named_buffers()}
    gm.meta["prunekit_onnx_names"] = {k: v for k, v in builder.onnx_names.items() if k in present}
    gm.meta["prunekit_input_names"] = [spec.name for spec in specs]
    gm.meta["prunekit_output_names"] = output_names
    gm.meta["prunekit_opset"] = opset
    gm.meta["prunekit_training_mode_batchnorm"] = [
        k for k, v in builder.onnx_names.items() if v.get("training_mode") and k in present
    ]
    gm.eval()
    return gm


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a subgraph of ``graph`` reads (its samples are kept: the subgraph may need them)."""
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            for sub in (
                [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            ):
                names.update(name for n in sub.node for name in n.input)
                names |= _outer_names(sub)
    return names


def _convert_nodes(
    builder: GraphBuilder, graph: onnx.GraphProto, opset: int, env: Env, samples: _SampleReleaser | None
) -> None:
    """Convert ``graph``'s nodes in order into ``env`` (a subgraph: into its parent's env)."""
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    absorbed: set[tuple[str, ...]] = set()
    for node in graph.node:
        if tuple(node.output) in absorbed:
            continue
        cx = NodeContext(builder, node, opset, env, consumers, outputs, _inline)
        _convert_node(cx)
        absorbed.update(tuple(n.output) for n in cx.absorbed)
        if samples is not None:
            for name in node.output:
                samples.bound(env, name)
            samples.consumed(env, node)


def _inline(cx: NodeContext, graph: onnx.GraphProto) -> list[Value | Dims]:
    for tensor in graph.initializer:
        cx.env[tensor.name] = const(_initializer(tensor), tensor.name)
    _convert_nodes(cx.builder, graph, cx.opset, cx.env, None)
    missing = [o.name for o in graph.output if o.name not in cx.env]
    if missing:
        cx.fail(f"the subgraph never produces {', '.join(missing)}")
    return [cx.env[o.name] for o in graph.output]


class _SampleReleaser:
    """Frees sample activations once every reader of a value has been converted.

    A released example becomes a ``meta`` tensor: shape and dtype stay, the memory
    goes. Counts are kept per value object, since Identity binds one value to
    several names.
    """

    def __init__(self, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> None:
        self._consumers = consumers
        self._outputs = outputs
        self._pending: dict[int, int] = {}

    def bound(self, env: Env, name: str) -> None:
        value = env.get(name)
        if isinstance(value, Value) and value.node is not None:
            readers = len(self._consumers.get(name, [])) + (1 if name in self._outputs else 0)
            self._pending[id(value)] = self._pending.get(id(value), 0) + readers

    def consumed(self, env: Env, node: onnx.NodeProto) -> None:
        for name in node.input:
            value = env.get(name)
            if not isinstance(value, Value) or id(value) not in self._pending:
                continue
            self._pending[id(value)] -= 1
            if self._pending[id(value)] <= 0 and isinstance(value.example, torch.Tensor):
                value.example = value.example.to("meta")


def _convert_node(cx: NodeContext) -> None:
    node = cx.proto
    domain = node.domain
    if domain not in _DEFAULT_DOMAINS:
        raise UnsupportedOp(
            node.op_type, node.name, domain, cx.opset, "only the default ONNX domain is supported"
        )
    fn = lookup(node.op_type, cx.opset)
    if fn is None:
        raise UnsupportedOp(node.op_type, node.name, domain, cx.opset, "no converter for this op")
    try:
        result = fn(cx)
        results: list[Output] = (
            [result] if result is None or isinstance(result, Value | Dims) else list(result)
        )
        for k, name in enumerate(node.output):
            produced = results[k] if k < len(results) else None
            if produced is not None and name:
                cx.env[name] = produced
            elif cx.used(k):
                cx.fail(f"output {k} ({name!r}) is not supported")
    except ServiceError:
        raise
    except ConversionError as exc:
        raise UnsupportedOp(node.op_type, node.name, domain, cx.opset, str(exc)) from exc
    except Exception as exc:
        detail = f"{type(exc).__name__}: {_one_line(str(exc))}"
        raise UnsupportedOp(node.op_type, node.name, domain, cx.opset, detail) from exc


def _initializer(proto: onnx.TensorProto) -> torch.Tensor:
    try:
        return tensor_from_onnx(proto)
    except (TypeError, ValueError, RuntimeError) as exc:
        kind = onnx.TensorProto.DataType.Name(proto.data_type) if proto.data_type else "undefined"
        raise unsupported_model(
            f"initializer {proto.name!r} of type {kind} cannot be converted to torch", initializer=proto.name
        ) from exc


def _graph_output(builder: GraphBuilder, env: Env, name: str) -> Value:
    item = env.get(name)
    if item is None:
        raise unsupported_model(f"graph output {name!r} is never produced", output=name)
    return builder.dims_tensor(item) if isinstance(item, Dims) else item


def _one_line(text: str, limit: int = 300) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


__all__ = ["EXAMPLE_BATCH", "_OP_MODULES", "model_opset", "onnx_to_fx"]
