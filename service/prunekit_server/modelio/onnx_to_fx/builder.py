"""Builds the torch.fx graph and runs every new node on the sample inputs as it goes.

:meth:`GraphBuilder.call` is the one way converters add work: when none of its
arguments is a graph node it evaluates the call now and returns a constant
(conversion-time constant folding); otherwise it appends a node and evaluates the
call on the arguments' examples, so every value knows its sample shape and dtype.
Constant tensors that reach the graph become attributes of the root module:
float initializers with more than one element as trainable ``nn.Parameter``\\ s
(the positional embedding, a decomposed LayerNorm's scale), everything else as
buffers.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from .naming import Namespace, identifier
from .values import Dims, Value, const

Record = dict[str, Any]


def map_values(arg: Any, fn: Callable[[Value], Any]) -> Any:
    """Apply ``fn`` to every :class:`Value` inside nested lists, tuples, dicts and slices."""
    if isinstance(arg, Value):
        return fn(arg)
    if isinstance(arg, list):
        return [map_values(a, fn) for a in arg]
    if isinstance(arg, tuple):
        return tuple(map_values(a, fn) for a in arg)
    if isinstance(arg, dict):
        return {k: map_values(v, fn) for k, v in arg.items()}
    if isinstance(arg, slice):
        return slice(map_values(arg.start, fn), map_values(arg.stop, fn), map_values(arg.step, fn))
    if isinstance(arg, Dims):
        raise TypeError("Dims must be passed as .items or materialised first")
    return arg


def _has_node(arg: Any) -> bool:
    found = False

    def visit(value: Value) -> None:
        nonlocal found
        found = found or value.node is not None

    map_values(arg, visit)
    return found


def _example(value: Value) -> Any:
    return value.example


class GraphBuilder:
    """The fx graph, the root module holding its submodules and tensors, and their ONNX names."""

    def __init__(self, initializers: dict[str, torch.Tensor]) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.namespace = Namespace()
        self.onnx_names: dict[str, Record] = {}
        self.initializers = initializers
        self._parameters: dict[str, nn.Parameter] = {}
        self._attr_nodes: dict[int, fx.Node] = {}
        self._sizes: dict[tuple[fx.Node, int], Value] = {}
        self._kept: list[torch.Tensor] = []

    # -- graph inputs and outputs ---------------------------------------------------------
    def placeholder(self, name: str, example: torch.Tensor) -> Value:
        """A graph input; its argument name is an identifier fx did not have to rename."""
        node = self.graph.placeholder(identifier(name))
        node.target = node.name
        return Value(node, example)

    def output(self, values: list[Value]) -> None:
        nodes = [self.arg(v) for v in values]
        self.graph.output(nodes[0] if len(nodes) == 1 else tuple(nodes))

    # -- nodes ------------------------------------------------------------------------------
    def call(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Value:
        """``target(*args, **kwargs)`` as a graph node, or folded now when all arguments are constant."""
        result = target(*map_values(args, _example), **map_values(kwargs, _example))
        if not _has_node((args, kwargs)):
            return const(result)
        node = self.graph.call_function(target, map_values(args, self.arg), map_values(kwargs, self.arg))
        return Value(node, result)

    def method(self, name: str, *args: Any, **kwargs: Any) -> Value:
        """``args[0].name(*args[1:], **kwargs)`` as a graph node (folded when constant)."""
        self_arg = args[0]
        result = getattr(self_arg.example, name)(
            *map_values(args[1:], _example), **map_values(kwargs, _example)
        )
        if not _has_node((args, kwargs)):
            return const(result)
        node = self.graph.call_method(name, map_values(args, self.arg), map_values(kwargs, self.arg))
        return Value(node, result)

    def getitem(self, value: Value, index: Any) -> Value:
        return self.call(operator.getitem, value, index)

    def size(self, value: Value, dim: int) -> Value:
        """``value.size(dim)`` read at run time (a constant for constants)."""
        rank = value.rank
        dim = dim + rank if dim < 0 else dim
        if value.node is None:
            return const(int(value.tensor.shape[dim]))
        key = (value.node, dim)
        if key not in self._sizes:
            self._sizes[key] = self.method("size", value, dim)
        return self._sizes[key]

    def add_module(self, module: nn.Module, wanted: str | None, fallback: str, record: Record) -> str:
        """Attach ``module`` under a unique path derived from ``wanted`` (else ``fallback``)."""
        path = self.namespace.claim(wanted or fallback, fallback)
        self._set(path, module)
        module.eval()
        self.onnx_names[path] = record
        return path

    def call_module(self, path: str, *args: Any) -> Value:
        module = self.root.get_submodule(path)
        result = module(*map_values(args, _example))
        node = self.graph.call_module(path, map_values(args, self.arg))
        return Value(node, result)

    # -- constants and parameters -----------------------------------------------------------
    def parameter(self, tensor: torch.Tensor, origin: str | None) -> nn.Parameter:
        """A trainable copy of ``tensor``; the same object for every use of one initializer as is."""
        source = self.initializers.get(origin) if origin else None
        if origin is not None and source is not None and _same(source, tensor):
            if origin not in self._parameters:
                self._parameters[origin] = nn.Parameter(source.detach().clone())
            return self._parameters[origin]
        return nn.Parameter(tensor.detach().clone())

    def arg(self, value: Value) -> Any:
        """What stands for ``value`` in a node's arguments: its node, a literal, or a get_attr."""
        if value.node is not None:
            return value.node
        if not isinstance(value.example, torch.Tensor):
            return value.example
        return self._attr_node(value)

    def _attr_node(self, value: Value) -> fx.Node:
        tensor = value.tensor
        key = id(tensor)
        if key not in self._attr_nodes:
            origin = value.origin
            trainable = origin is not None and tensor.is_floating_point() and tensor.numel() > 1
            path = self.namespace.claim(origin or "const", "const")
            attr: torch.Tensor = self.parameter(tensor, origin) if trainable else tensor.detach().clone()
            self._set(path, attr)
            if origin:
                self.onnx_names[path] = {"initializer": origin}
            self._kept.append(tensor)
            self._attr_nodes[key] = self.graph.get_attr(path)
        return self._attr_nodes[key]

    def _set(self, path: str, item: nn.Module | torch.Tensor) -> None:
        *parents, leaf = path.split(".")
        owner = self.root
        for part in parents:
            child = owner._modules.get(part)
            if child is None:
                child = nn.Module()
                owner.add_module(part, child)
            owner = child
        if isinstance(item, nn.Module):
            owner.add_module(leaf, item)
        elif isinstance(item, nn.Parameter):
            owner.register_parameter(leaf, item)
        else:
            owner.register_buffer(leaf, item)

    # -- shape-like values ------------------------------------------------------------------
    def dims_tensor(self, dims: Dims) -> Value:
        """A Dims as a tensor (a constant when every item is)."""
        if "tensor" not in dims._cache:
            if dims.is_const:
                dims._cache["tensor"] = const(dims.example_tensor())
            else:
                data: Any = dims.items[0] if dims.scalar else list(dims.items)
                dims._cache["tensor"] = self.call(torch.tensor, data, dtype=dims.dtype)
        result: Value = dims._cache["tensor"]
        return result

    def tensor_dims(self, value: Value) -> Dims:
        """A 0-D/1-D tensor as Dims (item by item at run time when it is not constant)."""
        tensor = value.tensor
        if tensor.dim() > 1:
            raise ValueError(f"a shape must be 0-D or 1-D, got rank {tensor.dim()}")
        if value.is_const:
            return Dims.from_tensor(tensor)
        listed = self.method("tolist", value)
        if tensor.dim() == 0:
            return Dims([listed], True, tensor.dtype)
        return Dims([self.getitem(listed, k) for k in range(tensor.numel())], False, tensor.dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b)))
