"""What a converter sees: one ONNX node, its attributes and inputs, and the builder.

Inputs come in four flavours: :meth:`NodeContext.value` (a tensor, graph node or
constant), :meth:`~NodeContext.const` (a tensor that must be known now, e.g. a
Conv weight or a Transpose permutation), :meth:`~NodeContext.ints` (a constant
list of integers) and :meth:`~NodeContext.dims` (a shape-like value kept item by
item, see :class:`~.values.Dims`). :meth:`~NodeContext.fail` stops the conversion
with a message that names the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .builder import GraphBuilder
from .errors import ConversionError
from .naming import node_scope, weight_scope
from .values import Dims, Value, const

Env = dict[str, Value | Dims]


def tensor_from_onnx(proto: onnx.TensorProto) -> torch.Tensor:
    array = numpy_helper.to_array(proto)
    return torch.from_numpy(array.copy())


class NodeContext:
    """One node being converted."""

    def __init__(
        self,
        builder: GraphBuilder,
        proto: onnx.NodeProto,
        opset: int,
        env: Env,
        consumers: dict[str, list[onnx.NodeProto]],
        graph_outputs: set[str],
        inline: Callable[[NodeContext, onnx.GraphProto], list[Value | Dims]] | None = None,
    ) -> None:
        self.builder = builder
        self._inline = inline
        self.proto = proto
        self.opset = opset
        self.env = env
        self._consumers = consumers
        self._graph_outputs = graph_outputs
        self.absorbed: list[onnx.NodeProto] = []
        self._attrs = {a.name: a for a in proto.attribute}

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def name(self) -> str:
        return self.proto.name

    def fail(self, detail: str) -> NoReturn:
        raise ConversionError(detail)

    # -- attributes ------------------------------------------------------------------------
    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr(self, name: str, default: Any = None) -> Any:
        proto = self._attrs.get(name)
        if proto is None:
            return default
        value = onnx.helper.get_attribute_value(proto)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [v.decode("utf-8", "replace") for v in value]
        if isinstance(value, onnx.TensorProto):
            return tensor_from_onnx(value)
        if isinstance(value, onnx.GraphProto):
            self.fail(f"attribute {name!r} holds a subgraph, which is not supported")
        return value

    def subgraph(self, name: str) -> onnx.GraphProto:
        """The graph held by attribute ``name`` (an If's branches)."""
        proto = self._attrs.get(name)
        if proto is None or proto.type != onnx.AttributeProto.GRAPH:
            self.fail(f"attribute {name!r} must hold a graph")
        return proto.g

    def inline(self, graph: onnx.GraphProto) -> list[Value | Dims]:
        """Convert ``graph``'s nodes in this node's scope and return the graph's outputs."""
        if self._inline is None:
            self.fail("subgraphs cannot be converted here")
        return self._inline(self, graph)

    def attr_int(self, name: str, default: int) -> int:
        return int(self.attr(name, default))

    def attr_float(self, name: str, default: float) -> float:
        return float(self.attr(name, default))

    def attr_ints(self, name: str, default: Sequence[int] | None = None) -> list[int] | None:
        value = self.attr(name)
        if value is None:
            return None if default is None else list(default)
        return [int(v) for v in value]

    def attr_str(self, name: str, default: str) -> str:
        return str(self.attr(name, default))

    # -- inputs ----------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.proto.input)

    def has(self, index: int) -> bool:
        return index < len(self.proto.input) and bool(self.proto.input[index])

    def input(self, index: int) -> Value | Dims:
        if not self.has(index):
            self.fail(f"input {index} is required")
        name = self.proto.input[index]
        if name not in self.env:
            self.fail(f"input {name!r} is not available (unsupported or missing producer)")
        return self.env[name]

    def value(self, index: int) -> Value:
        """Input ``index`` as a tensor value."""
        item = self.input(index)
        return self.builder.dims_tensor(item) if isinstance(item, Dims) else item

    def optional(self, index: int) -> Value | None:
        return self.value(index) if self.has(index) else None

    def is_const(self, index: int) -> bool:
        return self.has(index) and self.input(index).is_const

    def const(self, index: int) -> torch.Tensor:
        """Input ``index``, which must be known at conversion time."""
        value = self.value(index)
        if not value.is_const:
            self.fail(f"input {index} ({self.proto.input[index]!r}) must be a constant")
        return value.tensor

    def ints(self, index: int) -> list[int]:
        return [int(v) for v in self.const(index).reshape(-1).tolist()]

    def dims(self, index: int) -> Dims:
        """Input ``index`` as a shape-like value."""
        item = self.input(index)
        if isinstance(item, Dims):
            return item
        try:
            return self.builder.tensor_dims(item)
        except ValueError as exc:
            self.fail(str(exc))

    # -- building --------------------------------------------------------------------------
    def call(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Value:
        return self.builder.call(target, *args, **kwargs)

    def method(self, name: str, *args: Any, **kwargs: Any) -> Value:
        return self.builder.method(name, *args, **kwargs)

    def size(self, value: Value, dim: int) -> Value:
        return self.builder.size(value, dim)

    def module(
        self,
        module: nn.Module,
        args: Sequence[Any],
        weights: Sequence[str | None],
        **extra: Any,
    ) -> Value:
        """Attach ``module`` (named after its weights' initializers or the node) and call it.

        ``extra`` is added to the module's entry in ``gm.meta["prunekit_onnx_names"]``.
        """
        wanted = next((s for s in map(weight_scope, weights) if s), None) or node_scope(self.proto)
        record = {
            "node": self.name,
            "op_type": self.op_type,
            "initializers": [w for w in weights if w],
            "nodes": [self.name] + [n.name for n in self.absorbed] + self.fused_from(),
            **extra,
        }
        path = self.builder.add_module(module, wanted, self.op_type.lower(), record)
        return self.builder.call_module(path, *args)

    def fused_from(self) -> list[str]:
        """Names of the nodes a pattern rewrite replaced by this one (see :mod:`.patterns`)."""
        names = self.attr("prunekit_fused_from")
        return [str(n) for n in names] if isinstance(names, list) else []

    def parameter(self, tensor: torch.Tensor, origin: str | None) -> nn.Parameter:
        return self.builder.parameter(tensor, origin)

    def origin(self, index: int) -> str | None:
        item = self.input(index) if self.has(index) else None
        return item.origin if isinstance(item, Value) else None

    # -- looking ahead -----------------------------------------------------------------------
    def sole_consumer(self, output: int = 0) -> onnx.NodeProto | None:
        """The one node reading output ``output`` (None if several, none, or a graph output)."""
        name = self.proto.output[output]
        users = self._consumers.get(name, [])
        if len(users) != 1 or name in self._graph_outputs:
            return None
        return users[0]

    def lookup(self, name: str) -> Value | Dims | None:
        """An already converted value by ONNX name (None if not yet known)."""
        return self.env.get(name) if name else None

    def absorb(self, node: onnx.NodeProto) -> None:
        """Mark ``node`` (a later node) as converted by this one; :meth:`bind` its outputs."""
        self.absorbed.append(node)

    def bind(self, name: str, value: Value) -> None:
        self.env[name] = value

    def used(self, output: int) -> bool:
        if output >= len(self.proto.output) or not self.proto.output[output]:
            return False
        name = self.proto.output[output]
        absorbed = {tuple(n.output) for n in self.absorbed}
        readers = [n for n in self._consumers.get(name, []) if tuple(n.output) not in absorbed]
        return bool(readers) or name in self._graph_outputs


__all__ = ["Env", "NodeContext", "const", "tensor_from_onnx"]
