"""Rewriting ``nn.MultiheadAttention``'s exported layout into the one detection reads.

torch's ``F.multi_head_attention_forward``, exported by the legacy or the dynamo
exporter, writes two things no other exporter does:

* the packed in-projection split by ``reshape(..., 3, E)``, ``unsqueeze``, a
  permute, ``squeeze`` and ``select(0, i)``: rewritten as ``chunk(x, 3, -1)[i]``;
* heads merged with the batch: ``reshape(x, (..., B*H, d))``, permutes, then
  ``reshape`` splitting ``B*H`` back into ``(B, H)``: rewritten as
  ``reshape(x, (..., H, d))`` and one permute.

Both rewrites compute the same values (each is checked by following the axes
through every step); the merged-head form also bakes the batch into constants,
which the rewrite removes.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx

from ..fx_tools import propagate, shape_of
from .structure import _is_call, _is_permute, _is_reshape, _permutation

_Label = Any


def _labels_after_permutes(node: Any, stop: fx.Node, labels: list[_Label]) -> list[_Label] | None:
    """``labels`` of ``stop``'s output carried through the permutes from ``stop`` to ``node``."""
    chain = []
    current: Any = node
    while current is not stop:
        if not _is_permute(current):
            return None
        chain.append(current)
        current = current.args[0]
    for permute in reversed(chain):
        perm = _permutation(permute, len(labels))
        if perm is None:
            return None
        labels = [labels[p] for p in perm]
    return labels


def _merged_heads(node: fx.Node) -> tuple[fx.Node, int, int, list[int]] | None:
    """``node`` = reshape splitting a batch x heads axis: (x, heads, head width, permutation of x's view)."""
    out = shape_of(node)
    current: Any = node.args[0]
    while _is_permute(current):
        current = current.args[0]
    split: Any = current
    if not _is_reshape(split) or out is None:
        return None
    x: Any = split.args[0]
    xs, ss = shape_of(x), shape_of(split)
    if xs is None or ss is None or len(xs) < 2 or len(ss) != len(xs) or tuple(ss[:-2]) != tuple(xs[:-2]):
        return None
    batch, width, d = xs[-2], xs[-1], ss[-1]
    if d == 0 or width % d or ss[-2] != batch * (width // d) or width // d < 2:
        return None
    heads = width // d
    lead = list(range(len(xs) - 2))
    labels = _labels_after_permutes(node.args[0], split, [*lead, "bh", "d"])
    if labels is None or "bh" not in labels:
        return None
    at = labels.index("bh")
    expected = [*(shape_of(node.args[0]) or ())]
    if tuple(out) != (*expected[:at], batch, heads, *expected[at + 1 :]):
        return None
    final = [*labels[:at], "b", "h", *labels[at + 1 :]]
    view = [*lead, "b", "h", "d"]
    return x, heads, d, [view.index(label) for label in final]


def _packed_part(node: fx.Node) -> tuple[fx.Node, int, int] | None:
    """``node`` = select(0, i) of the packed split: (the projection's output, parts, i)."""
    if not _is_call(node, (torch.select,), ("select",)) or node.args[1] != 0:
        return None
    index: Any = node.args[2]
    squeeze: Any = node.args[0]
    if not isinstance(index, int) or not _is_call(squeeze, (torch.squeeze,), ("squeeze",)):
        return None
    permute: Any = squeeze.args[0]
    unsqueeze: Any = permute.args[0] if _is_permute(permute) else None
    if not _is_call(unsqueeze, (torch.unsqueeze,), ("unsqueeze",)):
        return None
    packed: Any = unsqueeze.args[0]
    if not _is_reshape(packed):
        return None
    source, ps, src = packed.args[0], shape_of(packed), shape_of(packed.args[0])
    if ps is None or src is None or len(ps) != len(src) + 1 or ps[-2] * ps[-1] != src[-1]:
        return None
    labels: list[_Label] = [*range(len(src) - 1), "parts", "e"]
    labels.insert(int(unsqueeze.args[1]) % (len(labels) + 1), "one")
    perm = _permutation(permute, len(labels))
    dims: Any = squeeze.args[1] if len(squeeze.args) > 1 else None
    if perm is None or dims is None:
        return None
    labels = [labels[p] for p in perm]
    for dim in sorted(
        (d % len(labels) for d in (dims if isinstance(dims, Sequence) else [dims])), reverse=True
    ):
        if labels.pop(dim) != "one":
            return None
    if labels[0] != "parts" or labels[1:] != [*range(len(src) - 1), "e"]:
        return None
    return source, ps[-2], index


def normalize(gm: fx.GraphModule, args: Sequence[torch.Tensor]) -> bool:
    """Rewrite the layouts above in place (shapes propagated again); whether anything changed."""
    graph = gm.graph
    changed = False
    chunks: dict[fx.Node, fx.Node] = {}
    for node in list(graph.nodes):
        packed = _packed_part(node)
        if packed is not None:
            source, parts, index = packed
            if source not in chunks:
                with graph.inserting_after(source):
                    chunks[source] = graph.call_function(torch.chunk, (source, parts, -1))
            with graph.inserting_before(node):
                part = graph.call_function(operator.getitem, (chunks[source], index))
            node.replace_all_uses_with(part)
            changed = True
    if changed:
        graph.eliminate_dead_code()
        gm.recompile()
        propagate(gm, args)
    rewritten = False
    for node in list(graph.nodes):
        merged = _merged_heads(node) if _is_reshape(node) else None
        if merged is None:
            continue
        x, heads, d, perm = merged
        with graph.inserting_before(node):
            sizes = [graph.call_method("size", (x, i)) for i in range(len(shape_of(x) or ()) - 1)]
            view = graph.call_function(torch.reshape, (x, [*sizes, heads, d]))
            permuted = graph.call_function(torch.permute, (view, perm))
        node.replace_all_uses_with(permuted)
        rewritten = True
    if rewritten:
        graph.eliminate_dead_code()
        gm.recompile()
        propagate(gm, args)
    return changed or rewritten
