"""Channel shuffles (ShuffleNet): what Torch-Pruning must not see through.

A shuffle is ``reshape`` to ``(batch, groups, channels // groups, ...)``, a swap of
those two axes, and a ``reshape`` back to ``(batch, channels, ...)``: channel
``g * (C / groups) + j`` goes to ``j * groups + g``. Torch-Pruning's reshape index
mappings get it wrong (wrong channels, a ``ZeroDivisionError`` on some exports) and
its group search can explode over chains of shuffled units. So its dependency
graph is traced on a view of the GraphModule where each shuffle runs as one opaque
autograd function (:class:`ShuffleFunction`): Torch-Pruning sees an elementwise op
it cannot prune across correctly, and :func:`crosses_shuffle` tells the groups
that reach one, which keep their width (``GROUP_SKIPPED``). Layers between
shuffles (a unit's inner 1x1 -> depthwise -> 1x1 width, the stem, the head)
prune as usual. The GraphModule itself is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ..fx_tools import propagate, shape_of

__all__ = ["SHUFFLE_REASON", "Shuffle", "ShuffleFunction", "crosses_shuffle", "find_shuffles", "traceable"]

SHUFFLE_REASON = (
    "its channels pass through a channel shuffle (reshape, transpose, reshape), whose groups "
    "must stay consistent: left at full width"
)
_RESHAPES = frozenset({torch.reshape, "reshape", "view"})
_SWAPS = frozenset({torch.permute, torch.transpose, "permute", "transpose"})


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c = x.shape[0], x.shape[1]
    return x.reshape(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(b, c, *x.shape[2:])


class ShuffleFunction(torch.autograd.Function):
    """A channel shuffle as one autograd node (its backward is the inverse shuffle)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, groups: int) -> torch.Tensor:
        ctx.groups = groups
        return _shuffle(x, groups)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grads[0]
        return _shuffle(grad, grad.shape[1] // ctx.groups), None


def _target_kind(node: fx.Node) -> Any:
    return node.target if node.op in ("call_function", "call_method") else None


@dataclass(frozen=True)
class Shuffle:
    """One channel shuffle: the tensor shuffled, its groups, and the split and swap nodes before the
    closing reshape."""

    source: fx.Node
    groups: int
    inner: tuple[fx.Node, fx.Node]


def find_shuffles(gm: fx.GraphModule, args: Sequence[torch.Tensor]) -> dict[fx.Node, Shuffle]:
    """The closing reshape of every channel shuffle of ``gm`` -> the :class:`Shuffle` it closes."""
    candidates = [n for n in gm.graph.nodes if _target_kind(n) in _SWAPS]
    if not candidates:
        return {}
    propagate(gm, args)
    found: dict[fx.Node, Shuffle] = {}
    for swap in candidates:
        split = swap.args[0] if swap.args else None
        if not isinstance(split, fx.Node) or _target_kind(split) not in _RESHAPES:
            continue
        source = split.args[0] if split.args else None
        users = [u for u in swap.users if not _size_read(u)]
        closing = users[0] if len(users) == 1 and _target_kind(users[0]) in _RESHAPES else None
        if any(u is not swap and not _size_read(u) for u in split.users):
            continue
        grouped = _grouping(shape_of(source), shape_of(split), shape_of(swap), shape_of(closing))
        if closing is not None and isinstance(source, fx.Node) and grouped:
            found[closing] = Shuffle(source, grouped, (split, swap))
    return found


def _size_read(node: fx.Node) -> bool:
    return node.op == "call_method" and node.target in ("size", "dim")


def _grouping(*shapes: tuple[int, ...] | None) -> int:
    """``groups`` when the shapes are those of a shuffle along dimension 1, else 0."""
    source, split, swapped, closed = shapes
    if source is None or split is None or swapped is None or closed is None or len(source) < 2:
        return 0
    b, c, rest = source[0], source[1], tuple(source[2:])
    if len(split) != len(source) + 1 or split[0] != b or tuple(split[3:]) != rest:
        return 0
    groups, per_group = split[1], split[2]
    if groups * per_group != c or groups < 2 or per_group < 2:
        return 0
    if tuple(swapped) != (b, per_group, groups, *rest) or tuple(closed) != tuple(source):
        return 0
    return groups


class _ShuffleInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, shuffles: dict[fx.Node, Shuffle]) -> None:
        super().__init__(gm, garbage_collect_values=False)  # a shuffle reads its source after the split
        self.shuffles = shuffles
        self.hidden = {n for shuffle in shuffles.values() for n in shuffle.inner}

    def run_node(self, n: fx.Node) -> Any:
        if n in self.shuffles:
            shuffle = self.shuffles[n]
            return ShuffleFunction.apply(self.env[shuffle.source], shuffle.groups)  # type: ignore[no-untyped-call]
        if n in self.hidden:
            with torch.no_grad():
                return super().run_node(n)
        return super().run_node(n)


class _ShuffleView(nn.Module):
    """``gm`` run with its shuffles as :class:`ShuffleFunction` (same submodules, same outputs)."""

    def __init__(self, gm: fx.GraphModule, shuffles: dict[fx.Node, Shuffle]) -> None:
        super().__init__()
        self.gm = gm
        self._shuffles = shuffles

    def forward(self, *args: Any) -> Any:
        return _ShuffleInterpreter(self.gm, self._shuffles).run(*args)


def traceable(gm: nn.Module, args: Sequence[torch.Tensor]) -> nn.Module:
    """What Torch-Pruning should trace for ``gm``: ``gm`` itself, or its view with opaque shuffles."""
    if not isinstance(gm, fx.GraphModule):
        return gm
    shuffles = find_shuffles(gm, args)
    return _ShuffleView(gm, shuffles) if shuffles else gm


def crosses_shuffle(group: Any) -> bool:
    """Whether a Torch-Pruning group reaches a shuffle traced by :func:`traceable`."""
    return any(
        ShuffleFunction.__name__ in str(getattr(dep.target.module, "_grad_fn", "")) for dep, _ in group
    )
