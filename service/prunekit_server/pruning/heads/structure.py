"""What the head detection and surgery share: the attention records and fx node predicates."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..fx_tools import MATMULS, shape_of

_SOFTMAX = (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax)
_PERMUTES = (torch.permute, torch.transpose, torch.Tensor.permute, torch.Tensor.transpose)
_RESHAPES = (torch.reshape, torch.Tensor.reshape, torch.Tensor.view)
_ELEMENTWISE = (
    operator.truediv,
    operator.mul,
    operator.add,
    operator.sub,
    torch.div,
    torch.mul,
    torch.add,
    torch.sub,
)
_PASS_THROUGH_MODULES = (nn.Dropout, nn.Identity)
_PASS_THROUGH_FUNCTIONS = (
    torch.nn.functional.dropout,
    torch.Tensor.contiguous,
    torch.Tensor.float,
    torch.Tensor.to,
)
_PASS_THROUGH_METHODS = ("contiguous", "float", "to", "type_as")
_SIZE_METHODS = ("size", "dim")


@dataclass
class Projection:
    """A Q/K/V projection: the Linear's node and path, and the reshape splitting it into heads.

    A fused projection (one Linear computing q|k|v, then ``chunk``) is part ``part`` of ``parts``
    equal slices of the Linear's output; ``between`` are the nodes from the Linear to the split.
    """

    linear: fx.Node
    path: str
    split: fx.Node
    part: int = 0
    parts: int = 1
    between: list[fx.Node] = field(default_factory=list)


@dataclass
class Attention:
    """One detected multi-head attention."""

    name: str
    heads: int
    head_dim: int
    q: Projection
    k: Projection
    v: Projection
    o_linear: fx.Node
    o_path: str
    merge: fx.Node
    context: fx.Node
    head_axis: int
    nodes: list[fx.Node] = field(default_factory=list)
    group: int = 1
    """Query heads per key/value head (grouped-query attention); ``heads`` counts key/value heads."""
    counts: list[tuple[fx.Node, int, int]] = field(default_factory=list)
    """Other reshapes whose item ``index``, when a constant, is ``factor * heads``: (node, index, factor)."""

    biases: list[tuple[fx.Node, int, int]] = field(default_factory=list)
    """Per-head operands between the scores and the softmax: ``(node, argument index, head axis)``."""
    kv_counts: set[tuple[fx.Node, int]] = field(default_factory=set)
    """The ``counts`` that count key/value heads (made before the repetition): ``(node, index)``."""
    expands: list[tuple[fx.Node, int]] = field(default_factory=list)
    """The repetition's ``expand`` nodes and the item holding ``group`` (its copies)."""

    @property
    def paths(self) -> list[str]:
        """The distinct projection Linears, Q/K/V first and O last."""
        return list(dict.fromkeys([self.q.path, self.k.path, self.v.path, self.o_path]))


def _is_call(node: Any, functions: tuple[Any, ...], methods: tuple[str, ...] = ()) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_function" and node.target in functions:
        return True
    return node.op == "call_method" and node.target in methods


def _is_softmax(node: fx.Node) -> bool:
    return _is_call(node, _SOFTMAX, ("softmax",))


def _is_permute(node: Any) -> bool:
    return _is_call(node, _PERMUTES, ("permute", "transpose"))


def _is_reshape(node: Any) -> bool:
    return _is_call(node, _RESHAPES, ("reshape", "view"))


def _is_matmul(node: Any) -> bool:
    return _is_call(node, MATMULS, ("matmul", "__matmul__", "bmm"))


def _is_pass_through(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _PASS_THROUGH_MODULES)
    return _is_call(node, _PASS_THROUGH_FUNCTIONS, _PASS_THROUGH_METHODS)


def _is_size_read(node: fx.Node) -> bool:
    return _is_call(node, (), _SIZE_METHODS) or (node.op == "call_function" and node.target is getattr)


def _permutation(node: fx.Node, rank: int) -> list[int] | None:
    """Output axis a of a permute/transpose is input axis ``perm[a]``."""
    args = list(node.args[1:])
    if node.target in (torch.transpose, torch.Tensor.transpose) or node.target == "transpose":
        pair = [a for a in args if isinstance(a, int)]
        if len(args) != 2 or len(pair) != 2:
            return None
        a, b = (x % rank for x in pair)
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    dims = node.kwargs.get("dims", args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args)
    if not isinstance(dims, list | tuple) or not all(isinstance(d, int) for d in dims) or len(dims) != rank:
        return None
    return [int(d) % rank for d in dims]


def _shape_items(node: fx.Node) -> list[Any] | None:
    args = list(node.args[1:])
    if "shape" in node.kwargs:
        args = [node.kwargs["shape"]]
    if len(args) == 1 and isinstance(args[0], list | tuple):
        return list(args[0])
    return args or None


def _tensor_operand(node: fx.Node) -> fx.Node | None:
    """For a scalar scaling ``x * c`` / ``x / c``: x, when the other operand is not a tensor node."""
    if not _is_call(node, _ELEMENTWISE, ("mul", "div", "__mul__", "__truediv__")):
        return None
    a, b = (*node.args, None, None)[:2]
    if (
        isinstance(a, fx.Node)
        and shape_of(a) is not None
        and (not isinstance(b, fx.Node) or shape_of(b) in (None, ()))
    ):
        return a
    scalar_a = not isinstance(a, fx.Node) or shape_of(a) in (None, ())
    if (
        node.target in (operator.mul, torch.mul)
        and isinstance(b, fx.Node)
        and shape_of(b) is not None
        and scalar_a
    ):
        return b
    return None


def _linear(gm: fx.GraphModule, path: str) -> nn.Linear:
    module = gm.get_submodule(path)
    assert isinstance(module, nn.Linear)
    return module
