"""Finding multi-head attentions in the fx graph, from each softmax outward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ..fx_tools import common_prefix, shape_of
from .structure import (
    _ELEMENTWISE,
    Attention,
    Projection,
    _is_call,
    _is_matmul,
    _is_pass_through,
    _is_permute,
    _is_reshape,
    _is_size_read,
    _is_softmax,
    _permutation,
)
from .surgery import _UnchangedError, check_rewritable
from .walk import Walk, walk_back


def _split_sizes(proj: Projection) -> tuple[int, int] | None:
    """``(H, d)`` when the split reshapes ``(..., H*d)`` into ``(..., H, d)``."""
    src, out = shape_of(proj.split.args[0]), shape_of(proj.split)
    if src is None or out is None or len(out) != len(src) + 1 or tuple(out[:-2]) != tuple(src[:-1]):
        return None
    if out[-2] * out[-1] != src[-1]:
        return None
    return out[-2], out[-1]


def _single_user(node: fx.Node) -> fx.Node | None:
    users = [u for u in node.users if not _is_size_read(u)]
    return users[0] if len(users) == 1 else None


def _scores_source(node: fx.Node, head_axis_of: Any) -> tuple[fx.Node, list[fx.Node]] | None:
    """From the softmax input back to the ``matmul(Qh, Kt)`` through scaling and masking."""
    chain: list[fx.Node] = []
    current: Any = node
    for _ in range(8):
        if not isinstance(current, fx.Node):
            return None
        if _is_matmul(current):
            return current, chain
        if not _is_call(current, _ELEMENTWISE, ("mul", "div", "add", "sub", "masked_fill")):
            return None
        tensors = [a for a in current.args if isinstance(a, fx.Node) and shape_of(a) is not None]
        path = [a for a in tensors if shape_of(a) == shape_of(current)]
        if not path:
            return None
        chain.append(current)
        others = [a for a in tensors if a is not path[0]]
        if any(not head_axis_of(shape_of(o), shape_of(current)) for o in others):
            return None
        current = path[0]
    return None


def find_attentions(gm: fx.GraphModule) -> tuple[list[Attention], list[str]]:
    """Every multi-head attention of ``gm`` (after :func:`propagate`), and why other softmaxes missed."""
    found: list[Attention] = []
    misses: list[str] = []
    for node in list(gm.graph.nodes):
        if not _is_softmax(node):
            continue
        attention, why = _match(gm, node)
        if attention is not None:
            found.append(attention)
        else:
            misses.append(f"{node.name}: {why}")
    return found, misses


class _NoMatchError(Exception):
    """Why a softmax is not the core of a prunable multi-head attention."""


@dataclass
class _Core:
    """The score matmul, the probabilities x V matmul and what lies between them."""

    qk: fx.Node
    pv: fx.Node
    q: Walk
    k: Walk
    v: Walk
    after_softmax: list[fx.Node]


def _match(gm: fx.GraphModule, softmax: fx.Node) -> tuple[Attention | None, str]:
    try:
        return _attention(gm, softmax), ""
    except _NoMatchError as miss:
        return None, str(miss)


def _attention(gm: fx.GraphModule, softmax: fx.Node) -> Attention:
    rank = _score_rank(softmax)
    core = _core(gm, softmax)
    heads, head_dim, head_axis, group = _heads(core, rank)
    score_chain, biases = _score_chain(softmax, core.qk, head_axis)
    walk, merge, o_node, merge_counts = _merge(gm, core.pv, rank, head_axis, heads * group * head_dim)
    q, k, v = core.q.projection, core.k.projection, core.v.projection
    nodes = [*core.q.nodes, *core.k.nodes, *core.v.nodes, core.qk, *score_chain, softmax, *core.after_softmax]
    nodes += [core.pv, *walk, merge, *(n for p in (q, k, v) for n in (p.split, *p.between))]
    nodes = list(dict.fromkeys(nodes))
    _check_private(nodes, o_node, (q, k, v))
    _check_distinct(q, k, v, str(o_node.target))
    paths = list(dict.fromkeys([q.path, k.path, v.path, str(o_node.target)]))
    name = common_prefix(paths) or str(o_node.target)
    counts = []
    for node, index, size in [*core.q.counts, *core.k.counts, *core.v.counts, *merge_counts]:
        if size % heads:
            raise _NoMatchError(f"{node.name}: {size} is not a multiple of {heads} heads")
        counts.append((node, index, size // heads))
    attention = Attention(
        name,
        heads,
        head_dim,
        q,
        k,
        v,
        o_node,
        str(o_node.target),
        merge,
        core.pv,
        head_axis,
        nodes,
        group=group,
        counts=list(dict.fromkeys(counts)),
        biases=biases,
        kv_counts={c for w in (core.k, core.v) for c in w.kv_counts} if group > 1 else set(),
        expands=list(dict.fromkeys([*core.k.expands, *core.v.expands])),
    )
    if heads > 1:
        try:
            check_rewritable(attention)
        except _UnchangedError as exc:
            raise _NoMatchError(str(exc)) from None
    return attention


def _check_distinct(q: Projection, k: Projection, v: Projection, o_path: str) -> None:
    """Separate Q, K, V and O Linears, or one Linear fused into exactly q|k|v parts."""
    if o_path in (q.path, k.path, v.path):
        raise _NoMatchError("projections are shared")
    if len({q.path, k.path, v.path}) == 3 and q.parts == k.parts == v.parts == 1:
        return
    fused = q.path == k.path == v.path and q.parts == k.parts == v.parts == 3
    if not fused or {q.part, k.part, v.part} != {0, 1, 2}:
        raise _NoMatchError("projections are shared")


def _score_rank(softmax: fx.Node) -> int:
    """The rank of a batched score matrix normalised over its last axis."""
    scores_shape = shape_of(softmax)
    if scores_shape is None or len(scores_shape) < 3:
        raise _NoMatchError("not a batched score matrix")
    rank = len(scores_shape)
    dim = softmax.kwargs.get("dim", softmax.args[1] if len(softmax.args) > 1 else None)
    if not isinstance(dim, int) or dim % rank != rank - 1:
        raise _NoMatchError("softmax is not over the last axis")
    return rank


def _core(gm: fx.GraphModule, softmax: fx.Node) -> _Core:
    """matmul(Q, K) before the softmax (masks ignored for now) and matmul(probabilities, V) after it."""
    source = _scores_source(softmax.args[0], lambda *_: True)  # type: ignore[arg-type]
    if source is None:
        raise _NoMatchError("no matmul(Q, K) before the softmax")
    qk = source[0]
    q_found, k_found = walk_back(gm, qk.args[0]), walk_back(gm, qk.args[1])
    if q_found is None or k_found is None:
        raise _NoMatchError("Q or K does not come from a Linear split into heads")
    last, after = _after_softmax(gm, softmax)
    user = _single_user(last)
    if user is None or not _is_matmul(user) or user.args[0] is not last:
        raise _NoMatchError("the softmax does not feed matmul(probabilities, V)")
    v_found = walk_back(gm, user.args[1])
    if v_found is None:
        raise _NoMatchError("V does not come from a Linear split into heads")
    return _Core(qk, user, q_found, k_found, v_found, after)


def _after_softmax(gm: fx.GraphModule, softmax: fx.Node) -> tuple[fx.Node, list[fx.Node]]:
    """Through dropout, casts and the NaN guard ``where(isnan(p), 0, p)`` after the softmax."""
    node, after = softmax, []
    for _ in range(8):
        users = [u for u in node.users if not _is_size_read(u)]
        if len(users) == 1 and _is_pass_through(gm, users[0]):
            after.append(users[0])
            node = users[0]
            continue
        guard = [u for u in users if _is_call(u, (torch.isnan,), ("isnan",))]
        if len(users) == 2 and len(guard) == 1:
            (where,) = [u for u in users if u is not guard[0]]
            if _is_call(where, (torch.where,), ()) and where.args[0] is guard[0] and where.args[2] is node:
                after += [guard[0], where]
                node = where
                continue
        break
    return node, after


def _heads(core: _Core, rank: int) -> tuple[int, int, int, int]:
    """``(units, head width, head axis, query heads per unit)``; units are key/value heads."""
    q, q_axes, k, k_axes, v, v_axes = (
        core.q.projection,
        core.q.axes,
        core.k.projection,
        core.k.axes,
        core.v.projection,
        core.v.axes,
    )
    q_size, k_size, v_size = (_split_sizes(p) for p in (q, k, v))
    if q_size is None or k_size is None or k_size != v_size or q_size[1] != k_size[1]:
        raise _NoMatchError("Q, K and V do not split into heads of one width")
    heads, head_dim = k_size
    group = q_size[0] // heads
    if q_size[0] % heads or core.k.repeat != group or core.v.repeat != group or core.q.repeat != 1:
        raise _NoMatchError("Q heads are not key/value heads repeated in whole groups")
    split_rank = len(shape_of(q.split) or ())
    head_in_split, dim_in_split = split_rank - 2, split_rank - 1
    try:
        q_head, k_head, v_head = (axes.index(head_in_split) for axes in (q_axes, k_axes, v_axes))
        q_dim, k_dim, v_dim = (axes.index(dim_in_split) for axes in (q_axes, k_axes, v_axes))
    except ValueError:
        raise _NoMatchError("the head axis is lost between the split and the matmul") from None
    if len({q_head, k_head, v_head}) != 1 or q_head >= rank - 2:
        raise _NoMatchError("Q, K and V do not carry the heads on the same batch axis")
    if (q_dim, k_dim, v_dim) != (rank - 1, rank - 2, rank - 1):
        raise _NoMatchError("the head width is not the contracted axis of Q x K^T")
    return heads, head_dim, q_head, group


def _score_chain(
    softmax: fx.Node, qk: fx.Node, head_axis: int
) -> tuple[list[fx.Node], list[tuple[fx.Node, int, int]]]:
    """The scaling and masking between the scores and the softmax, and the per-head operands there.

    A mask or bias with a head axis (T5's relative position bias) is ``(node, argument, axis)``:
    the surgery selects the kept heads of it for this attention alone.
    """
    checked = _scores_source(softmax.args[0], lambda *_: True)  # type: ignore[arg-type]
    if checked is None or checked[0] is not qk:
        raise _NoMatchError("no matmul(Q, K) before the softmax")
    chain = checked[1]
    biases: list[tuple[fx.Node, int, int]] = []
    for i, node in enumerate(chain):
        on_path = chain[i + 1] if i + 1 < len(chain) else qk
        here = shape_of(node) or ()
        for index, arg in enumerate(node.args):
            other = shape_of(arg) if isinstance(arg, fx.Node) and arg is not on_path else None
            if not other:
                continue
            pos = head_axis - (len(here) - len(other))
            if pos < 0 or other[pos] == 1:
                continue
            if other[pos] != here[head_axis]:
                raise _NoMatchError(f"{node.name}: a mask or bias with a head axis of {other[pos]}")
            biases.append((node, index, pos))
    return chain, biases


def _merge(
    gm: fx.GraphModule, pv: fx.Node, rank: int, head_axis: int, width: int
) -> tuple[list[fx.Node], fx.Node, fx.Node, list[tuple[fx.Node, int, int]]]:
    """From the context forward: the nodes walked, the merging reshape, the output Linear, head counts."""
    walk: list[fx.Node] = []
    counts: list[tuple[fx.Node, int, int]] = []
    axes = list(range(rank))  # current axis -> context axis
    node = _single_user(pv)
    while node is not None and (_is_permute(node) or _is_pass_through(gm, node) or _is_same_shape(node)):
        if _is_same_shape(node):
            here = axes.index(head_axis)
            counts.append((node, here, (shape_of(node) or ())[here]))
        elif _is_permute(node):
            perm = _permutation(node, len(axes))
            if perm is None:
                raise _NoMatchError("unreadable permute after the context matmul")
            axes = [axes[p] for p in perm]
        walk.append(node)
        node = _single_user(node)
    if node is None or not _is_reshape(node):
        raise _NoMatchError("the context is not merged back by a reshape")
    merged = shape_of(node)
    if merged is None or len(merged) < 2 or axes[-2:] != [head_axis, rank - 1]:
        raise _NoMatchError("the reshape does not merge (heads, head width) into the last axis")
    if merged[-1] != width:
        raise _NoMatchError("the merged width is not heads x head width")
    merge = node
    o_node = _single_user(node)
    while o_node is not None and _keeps_last_axis(o_node):  # flattening the leading axes for a Gemm
        counts.append((o_node, len(shape_of(o_node) or ()) - 1, width))
        walk.append(o_node)
        o_node = _single_user(o_node)
    if (
        o_node is None
        or o_node.op != "call_module"
        or not isinstance(gm.get_submodule(str(o_node.target)), nn.Linear)
    ):
        raise _NoMatchError("the merged context does not feed a Linear output projection")
    return walk, merge, o_node, counts


def _keeps_last_axis(node: fx.Node) -> bool:
    """A reshape of the leading axes only."""
    if not _is_reshape(node):
        return False
    before, after = shape_of(node.args[0]), shape_of(node)
    return before is not None and after is not None and len(after) >= 2 and before[-1] == after[-1]


def _is_same_shape(node: fx.Node) -> bool:
    """A reshape that changes nothing (the legacy exporter writes one after the context matmul)."""
    return _is_reshape(node) and shape_of(node) is not None and shape_of(node) == shape_of(node.args[0])


def _reads_shape_only(node: fx.Node, depth: int = 0) -> bool:
    """A size read, or a permute/reshape/cast whose every use only reads a size."""
    if _is_size_read(node):
        return True
    if depth > 4 or not (_is_permute(node) or _is_reshape(node) or _is_call(node, (), ("contiguous",))):
        return False
    return bool(node.users) and all(_reads_shape_only(u, depth + 1) for u in node.users)


def _check_private(nodes: list[fx.Node], o_node: fx.Node, projections: tuple[Projection, ...]) -> None:
    """Nothing outside the attention reads its intermediate values or its projections."""
    inner = set(nodes) | {o_node}
    for n in nodes:
        stray = [u for u in n.users if u not in inner and not _reads_shape_only(u)]
        if stray:
            raise _NoMatchError(f"{n.name} is also read by {stray[0].name}")
    for proj in projections:
        stray = [u for u in proj.linear.users if u not in inner and not _reads_shape_only(u)]
        if stray:
            raise _NoMatchError(f"projection {proj.path} is also read by {stray[0].name}")
