"""ATTENTION_HEAD: remove whole heads of multi-head attention, Q/K/V/O kept consistent.

Detection works on the converted GraphModule, from each softmax outward:

* scores: ``softmax`` over the last axis of ``matmul(Qh, Kt)``, possibly
  through a scale and a mask (element-wise ops whose other operand is a
  scalar or has size 1 on the head axis);
* ``Qh``, ``Kt`` and ``Vh`` (the second operand of ``matmul(softmax, Vh)``,
  through dropout or casts) each lead back, through permutes, transposes,
  ``contiguous`` and scalar scaling, to a reshape ``(..., D) -> (..., H, d)``
  of an ``nn.Linear`` output (the Q, K and V projections, ``D = H * d``);
* the context ``matmul(softmax, Vh)`` leads forward, through permutes, to a
  reshape merging ``(H, d)`` back into ``D`` that feeds the output projection
  ``nn.Linear`` (O).

The head axis is followed through every permute; Q, K and V must agree on
``H`` and ``d`` and carry the head axis on the same batch axis of both
matmuls. This is what the legacy and the dynamo exporter make of a
hand-written attention (``x.view(B, T, H, -1).transpose(1, 2)``...); fused
QKV projections, grouped-query attention and anything else are left alone
(a model with no attention found fails UNSUPPORTED_MODEL with the first reasons).

Pruning head ``h`` removes rows ``h*d:(h+1)*d`` of Q, K and V (weights and
biases) and the same columns of O, and rewrites the head count the reshapes
use: the split's constant ``H`` becomes the new count (a ``size // H`` head
width gets the new divisor), a constant merged width ``H*d`` becomes the new
one; sizes the converter already derives from the data stay. At least one
head of each attention is kept.

Importance per head: L1 (default) or L2 of its Q/K/V rows and O columns;
ACTIVATION: mean absolute value of its context vectors on the feeds;
TAYLOR: sum of ``|gradient x weight|`` over its slices, the gradient of the
outputs' mean square on the feeds; RANDOM (seeded).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
import torch
from torch import fx, nn

from prunekit.v1 import spec_pb2

from ..errors import FieldViolation, invalid_spec, unsupported_model
from . import spec_fields
from .base import (
    LayerPruneInfo,
    PruneConfig,
    PruneContext,
    PruneResult,
    register_pruner,
    register_spec_method,
)
from .fx_tools import (
    MATMULS,
    first_match,
    graph_macs,
    names_of,
    origin,
    output_modules,
    propagate,
    remove_unused_modules,
    shape_of,
    taylor_products,
)
from .graph import example_inputs, feed_batches, to_graph, to_onnx

HeadImportance = Literal["l1", "l2", "taylor", "activation", "random"]
Scope = Literal["global", "per_layer"]
_IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor", "activation", "random")
_DATA_DRIVEN = ("taylor", "activation")


@dataclass(frozen=True)
class HeadConfig(PruneConfig):
    """Remove attention heads. Bad values raise ``ValueError``."""

    method = "attention_head"

    ratio: float = field(
        default=0.0,
        metadata={
            "description": "Fraction of each attention's heads to remove, 0 < ratio < 1 "
            "(0 with a MACs target)."
        },
    )
    importance: HeadImportance = field(
        default="l1",
        metadata={"description": "How heads are ranked: l1, l2, taylor, activation or random."},
    )
    scope: Scope = field(
        default="per_layer",
        metadata={
            "description": "'per_layer': ratio of each attention's heads; 'global': of all heads, ranked "
            "together (scores normalised per attention)."
        },
    )
    target_macs_reduction: float = field(
        default=0.0,
        metadata={
            "description": "Remove heads until the model's MACs are divided by this (> 1); 0 uses ratio."
        },
    )
    max_layer_ratio: float = field(
        default=0.9, metadata={"description": "No attention loses more than this fraction of its heads."}
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs on module paths, ONNX node and weight names: "
            "matching attentions stay."
        },
    )
    overrides: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={"description": "(pattern, ratio) pairs: attentions matching a pattern use its ratio."},
    )
    steps: int = field(
        default=1, metadata={"description": "Rounds of pruning, with the recovery hook between them."}
    )
    prune_output_layers: bool = field(
        default=False,
        metadata={"description": "Also prune an attention whose output projection is an output layer."},
    )
    seed: int = field(default=0, metadata={"description": "Seed of the RANDOM criterion."})

    def __post_init__(self) -> None:
        _check_common(self.ratio, self.target_macs_reduction, self.max_layer_ratio, self.steps)
        if self.importance not in _IMPORTANCES:
            raise ValueError(f"importance must be one of {', '.join(_IMPORTANCES)}, got {self.importance!r}")
        if self.scope not in ("global", "per_layer"):
            raise ValueError(f"scope must be 'global' or 'per_layer', got {self.scope!r}")
        object.__setattr__(self, "ignore", _patterns(self.ignore))
        object.__setattr__(self, "overrides", _overrides(self.overrides))


def _check_common(ratio: float, macs: float, max_layer_ratio: float, steps: int) -> None:
    if (ratio == 0) == (macs == 0):
        raise ValueError("set exactly one of ratio and target_macs_reduction")
    if ratio and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
        raise ValueError(f"ratio must satisfy 0 < ratio < 1, got {ratio!r}")
    if macs and not (math.isfinite(macs) and macs > 1.0):
        raise ValueError(f"target_macs_reduction must be > 1, got {macs!r}")
    if not (math.isfinite(max_layer_ratio) and 0.0 < max_layer_ratio < 1.0):
        raise ValueError(f"max_layer_ratio must satisfy 0 < x < 1, got {max_layer_ratio!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100:
        raise ValueError(f"steps must be an integer from 1 to 100, got {steps!r}")


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError("ignore must be a sequence of glob patterns, not one string")
    patterns = tuple(value)
    if not all(isinstance(p, str) and p for p in patterns):
        raise ValueError("ignore patterns must be non-empty strings")
    return patterns


def _overrides(value: Any) -> tuple[tuple[str, float], ...]:
    out: list[tuple[str, float]] = []
    for item in value:
        pattern, ratio = item
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("override patterns must be non-empty strings")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 < ratio < 1.0:
            raise ValueError(f"override ratio must satisfy 0 < ratio < 1, got {ratio!r}")
        out.append((pattern, float(ratio)))
    return tuple(out)


@register_spec_method(spec_pb2.PRUNE_METHOD_ATTENTION_HEAD)
def heads_from_spec(prune_spec: spec_pb2.PruneSpec) -> HeadConfig:
    """The config for an ATTENTION_HEAD ``PruneSpec``; ``INVALID_SPEC`` listing every bad field.

    ``scope`` unset means per layer for this method (heads are counted per attention).
    """
    found: list[FieldViolation] = []
    ratio, macs = spec_fields.target(prune_spec, found)
    importance = spec_fields.importance(prune_spec, "l1", _IMPORTANCES, found)
    scope = spec_fields.scope(prune_spec, "per_layer", found)
    cap = spec_fields.max_layer_ratio(prune_spec, found)
    steps = spec_fields.steps(prune_spec, found)
    ignore, overrides = spec_fields.ignore_and_overrides(prune_spec, found, ratios=True)
    spec_fields.reject_unused(prune_spec, ("round_to", "n", "m", "auto_ratios"), "ATTENTION_HEAD", found)
    if found:
        raise invalid_spec(found)
    return HeadConfig(
        ratio=ratio,
        importance=importance,  # type: ignore[arg-type]
        scope=scope,  # type: ignore[arg-type]
        target_macs_reduction=macs,
        max_layer_ratio=cap,
        ignore=ignore,
        overrides=overrides,
        steps=steps,
        prune_output_layers=prune_spec.prune_output_layers,
    )


# -- detection ----------------------------------------------------------------------------------

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
    """A Q/K/V projection: the Linear's node and path, and the reshape splitting it into heads."""

    linear: fx.Node
    path: str
    split: fx.Node


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

    @property
    def paths(self) -> list[str]:
        return [self.q.path, self.k.path, self.v.path, self.o_path]


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


def _projection(gm: fx.GraphModule, start: Any) -> tuple[Projection, list[int], list[fx.Node]] | None:
    """Walk back from a matmul operand to the reshape of a Linear.

    Returns the projection, the map "axis of the operand -> axis of the split's
    output", and the nodes walked through.
    """
    chain: list[fx.Node] = []
    node = start
    while isinstance(node, fx.Node) and not _is_reshape(node):
        if _is_permute(node) or _is_pass_through(gm, node):
            chain.append(node)
            node = node.args[0]
            continue
        scaled = _tensor_operand(node)
        if scaled is None:
            return None
        chain.append(node)
        node = scaled
    if not isinstance(node, fx.Node):
        return None
    split = node
    linear = split.args[0]
    if not isinstance(linear, fx.Node) or linear.op != "call_module":
        return None
    if not isinstance(gm.get_submodule(str(linear.target)), nn.Linear):
        return None
    out = shape_of(split)
    if out is None:
        return None
    axes = list(range(len(out)))  # operand axis -> split output axis, built forward
    for step in reversed(chain):
        if _is_permute(step):
            perm = _permutation(step, len(axes))
            if perm is None:
                return None
            axes = [axes[p] for p in perm]
    return Projection(linear, str(linear.target), split), axes, chain


def _split_sizes(proj: Projection) -> tuple[int, int] | None:
    """``(H, d)`` when the split reshapes ``(..., H*d)`` into ``(..., H, d)``."""
    src, out = shape_of(proj.linear), shape_of(proj.split)
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


def _match(gm: fx.GraphModule, softmax: fx.Node) -> tuple[Attention | None, str]:
    scores_shape = shape_of(softmax)
    if scores_shape is None or len(scores_shape) < 3:
        return None, "not a batched score matrix"
    rank = len(scores_shape)
    dim = softmax.kwargs.get("dim", softmax.args[1] if len(softmax.args) > 1 else None)
    if not isinstance(dim, int) or dim % rank != rank - 1:
        return None, "softmax is not over the last axis"
    head_axis_holder: list[int] = []

    def head_free(other: tuple[int, ...] | None, here: tuple[int, ...] | None) -> bool:
        if other is None or here is None or len(other) == 0:
            return True
        pos = head_axis_holder[0] - (len(here) - len(other)) if head_axis_holder else -1
        return pos < 0 or other[pos] == 1

    # first pass: locate the score matmul ignoring masks, to learn the head axis
    source = _scores_source(softmax.args[0], lambda *_: True)  # type: ignore[arg-type]
    if source is None:
        return None, "no matmul(Q, K) before the softmax"
    qk, _ = source
    q_found = _projection(gm, qk.args[0])
    k_found = _projection(gm, qk.args[1])
    if q_found is None or k_found is None:
        return None, "Q or K does not come from a Linear split into heads"
    q, q_axes, q_chain = q_found
    k, k_axes, k_chain = k_found
    user = _single_user(softmax)
    chain_after: list[fx.Node] = []
    while user is not None and _is_pass_through(gm, user):
        chain_after.append(user)
        user = _single_user(user)
    if (
        user is None
        or not _is_matmul(user)
        or user.args[0] is not (chain_after[-1] if chain_after else softmax)
    ):
        return None, "the softmax does not feed matmul(probabilities, V)"
    pv = user
    v_found = _projection(gm, pv.args[1])
    if v_found is None:
        return None, "V does not come from a Linear split into heads"
    v, v_axes, v_chain = v_found
    sizes = {_split_sizes(p) for p in (q, k, v)}
    if len(sizes) != 1 or None in sizes:
        return None, "Q, K and V do not split into the same heads (grouped-query attention is not supported)"
    heads, head_dim = next(iter(sizes))  # type: ignore[misc]
    split_rank = len(shape_of(q.split) or ())
    head_in_split, dim_in_split = split_rank - 2, split_rank - 1
    try:
        q_head, k_head, v_head = (axes.index(head_in_split) for axes in (q_axes, k_axes, v_axes))
        q_dim, k_dim, v_dim = (axes.index(dim_in_split) for axes in (q_axes, k_axes, v_axes))
    except ValueError:
        return None, "the head axis is lost between the split and the matmul"
    if len({q_head, k_head, v_head}) != 1 or q_head >= rank - 2:
        return None, "Q, K and V do not carry the heads on the same batch axis"
    if (q_dim, k_dim, v_dim) != (rank - 1, rank - 2, rank - 1):
        return None, "the head width is not the contracted axis of Q x K^T"
    head_axis = q_head
    head_axis_holder.append(head_axis)
    checked = _scores_source(softmax.args[0], head_free)  # type: ignore[arg-type]
    if checked is None or checked[0] is not qk:
        return None, "a mask or bias between the scores and the softmax has a head axis"
    score_chain = checked[1]
    # forward from the context to the merge and the output projection
    walk: list[fx.Node] = []
    axes = list(range(rank))  # current axis -> context axis
    node = _single_user(pv)
    while node is not None and (_is_permute(node) or _is_pass_through(gm, node)):
        if _is_permute(node):
            perm = _permutation(node, len(axes))
            if perm is None:
                return None, "unreadable permute after the context matmul"
            axes = [axes[p] for p in perm]
        walk.append(node)
        node = _single_user(node)
    if node is None or not _is_reshape(node):
        return None, "the context is not merged back by a reshape"
    merge = node
    merged = shape_of(merge)
    if merged is None or len(merged) != rank - 1 or axes[-2:] != [head_axis, rank - 1]:
        return None, "the reshape does not merge (heads, head width) into the last axis"
    if merged[-1] != heads * head_dim:
        return None, "the merged width is not heads x head width"
    o_node = _single_user(merge)
    if (
        o_node is None
        or o_node.op != "call_module"
        or not isinstance(gm.get_submodule(str(o_node.target)), nn.Linear)
    ):
        return None, "the merged context does not feed a Linear output projection"
    nodes = [*q_chain, *k_chain, *v_chain, qk, *score_chain, softmax, *chain_after, pv, *walk, merge]
    nodes += [q.split, k.split, v.split]
    inner = set(nodes) | {o_node}
    for n in nodes:
        stray = [u for u in n.users if u not in inner and not _is_size_read(u)]
        if stray:
            return None, f"{n.name} is also read by {stray[0].name}"
    for proj in (q, k, v):
        stray = [u for u in proj.linear.users if u is not proj.split and not _is_size_read(u)]
        if stray:
            return None, f"projection {proj.path} is also read by {stray[0].name}"
    paths = [q.path, k.path, v.path, str(o_node.target)]
    if len(set(paths)) != 4:
        return None, "projections are shared"
    name = _common_prefix(paths) or str(o_node.target)
    attention = Attention(
        name, heads, head_dim, q, k, v, o_node, str(o_node.target), merge, pv, head_axis, nodes
    )
    if heads > 1:
        try:
            check_rewritable(attention)
        except _UnchangedError as exc:
            return None, str(exc)
    return attention, ""


def _common_prefix(paths: Sequence[str]) -> str:
    parts = [p.split(".") for p in paths]
    prefix: list[str] = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        prefix.append(items[0])
    return ".".join(prefix)


# -- importance -----------------------------------------------------------------------------------


def _linear(gm: fx.GraphModule, path: str) -> nn.Linear:
    module = gm.get_submodule(path)
    assert isinstance(module, nn.Linear)
    return module


def _slices(
    att: Attention, gm: fx.GraphModule, values: dict[str, torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Per projection, the tensor viewed so that head h is ``[h]``: Q/K/V rows, O columns."""
    out = []
    for path in (att.q.path, att.k.path, att.v.path):
        w = values[path] if values is not None else _linear(gm, path).weight.detach()
        out.append(w.reshape(att.heads, -1))
    w = values[att.o_path] if values is not None else _linear(gm, att.o_path).weight.detach()
    out.append(w.reshape(w.shape[0], att.heads, att.head_dim).transpose(0, 1).reshape(att.heads, -1))
    return out


def head_scores(
    gm: fx.GraphModule,
    attentions: Sequence[Attention],
    importance: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    seed: int = 0,
) -> list[np.ndarray]:
    """Per attention, one score per head (higher is more important)."""
    if importance in ("l1", "l2"):
        p = 1 if importance == "l1" else 2
        scores = []
        for att in attentions:
            total = torch.stack([s.abs().pow(p).sum(dim=1).double() for s in _slices(att, gm)]).sum(dim=0)
            scores.append(np.asarray(total.pow(1.0 / p).numpy()))
        return scores
    if importance == "random":
        rng = np.random.default_rng(seed)
        return [rng.random(att.heads) for att in attentions]
    if importance == "activation":
        return _activation_scores(gm, attentions, batches)
    return _taylor_scores(gm, attentions, batches)


class _Capture(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n in self.wanted and isinstance(result, torch.Tensor):
            self.values[n] = result.detach()
        return result


def _activation_scores(
    gm: fx.GraphModule, attentions: Sequence[Attention], batches: Sequence[tuple[torch.Tensor, ...]]
) -> list[np.ndarray]:
    totals = [np.zeros(att.heads) for att in attentions]
    wanted = {att.context for att in attentions}
    with torch.no_grad():
        for batch in batches:
            capture = _Capture(gm, wanted)
            capture.run(*batch)
            for i, att in enumerate(attentions):
                ctx = capture.values[att.context].abs().double()
                dims = [d for d in range(ctx.dim()) if d != att.head_axis]
                totals[i] += ctx.mean(dim=dims).numpy()
    return [t / max(1, len(batches)) for t in totals]


def _taylor_scores(
    gm: fx.GraphModule, attentions: Sequence[Attention], batches: Sequence[tuple[torch.Tensor, ...]]
) -> list[np.ndarray]:
    paths = sorted({p for att in attentions for p in att.paths})
    products = dict(
        zip(paths, taylor_products(gm, [_linear(gm, p).weight for p in paths], batches), strict=True)
    )
    return [
        np.asarray(
            torch.stack([s.sum(dim=1).double() for s in _slices(att, gm, products)]).sum(dim=0).numpy()
        )
        for att in attentions
    ]


# -- removal ----------------------------------------------------------------------------------------


class _UnchangedError(Exception):
    """An attention whose reshapes cannot be updated: it is left alone."""


@dataclass(frozen=True)
class _FloorDiv:
    """A new ``size // heads`` item (made when the rewrite is applied)."""

    size: fx.Node
    heads: int


def _split_items(att: Attention, split: fx.Node, keep: int) -> list[Any]:
    """The split's reshape target for ``keep`` heads; ``_UnchangedError`` when it cannot be updated."""
    items = _shape_items(split)
    if items is None:
        raise _UnchangedError(f"{split.name}: unreadable reshape target")
    h_pos, d_pos = len(items) - 2, len(items) - 1
    head_item, dim_item = items[h_pos], items[d_pos]
    if head_item == att.heads and isinstance(head_item, int):
        items[h_pos] = keep
    elif head_item != -1:
        raise _UnchangedError(f"{split.name}: the head count is not the constant {att.heads}")
    if isinstance(dim_item, fx.Node):
        if dim_item.target is operator.floordiv and dim_item.args[1] == att.heads:
            if not isinstance(dim_item.args[0], fx.Node):
                raise _UnchangedError(f"{split.name}: unreadable head width")
            items[d_pos] = _FloorDiv(dim_item.args[0], keep)
        elif head_item == -1:
            raise _UnchangedError(f"{split.name}: both the head count and the head width are computed")
        else:
            items[d_pos] = -1
    elif dim_item not in (-1, att.head_dim):
        raise _UnchangedError(f"{split.name}: head width {dim_item} is not {att.head_dim}")
    return items


def _merge_items(att: Attention, keep: int) -> list[Any]:
    """The merge's reshape target for ``keep`` heads; ``_UnchangedError`` when it cannot be updated."""
    items = _shape_items(att.merge)
    if items is None:
        raise _UnchangedError(f"{att.merge.name}: unreadable reshape target")
    last = items[-1]
    if isinstance(last, int) and last == att.heads * att.head_dim:
        items[-1] = keep * att.head_dim
    elif not (last == -1 or isinstance(last, fx.Node)):
        raise _UnchangedError(f"{att.merge.name}: merged width {last} is not {att.heads * att.head_dim}")
    return items


def _set_shape_items(node: fx.Node, items: list[Any]) -> None:
    made = []
    for item in items:
        if isinstance(item, _FloorDiv):
            with node.graph.inserting_before(node):
                item = node.graph.call_function(operator.floordiv, (item.size, item.heads))
        made.append(item)
    if "shape" in node.kwargs:
        node.kwargs = {**node.kwargs, "shape": made}
    elif len(node.args) == 2 and isinstance(node.args[1], list | tuple):
        node.args = (node.args[0], made)
    else:
        node.args = (node.args[0], *made)


def check_rewritable(att: Attention) -> None:
    """Raise ``_UnchangedError`` when the reshapes of ``att`` cannot follow a new head count."""
    for split in (att.q.split, att.k.split, att.v.split):
        _split_items(att, split, att.heads - 1)
    _merge_items(att, att.heads - 1)


def _shrink_linear(module: nn.Linear, index: torch.Tensor, *, rows: bool) -> None:
    with torch.no_grad():
        if rows:
            module.weight = nn.Parameter(module.weight.detach()[index].clone())
            if module.bias is not None:
                module.bias = nn.Parameter(module.bias.detach()[index].clone())
            module.out_features = int(index.numel())
        else:
            module.weight = nn.Parameter(module.weight.detach()[:, index].clone())
            module.in_features = int(index.numel())


def remove_heads(gm: fx.GraphModule, att: Attention, drop: Sequence[int]) -> None:
    """Remove heads ``drop`` of ``att`` from the projections and the reshapes (in place)."""
    keep_heads = [h for h in range(att.heads) if h not in set(drop)]
    if not keep_heads:
        raise ValueError("at least one head must stay")
    if not drop:
        return
    keep = len(keep_heads)
    targets = [(split, _split_items(att, split, keep)) for split in (att.q.split, att.k.split, att.v.split)]
    targets.append((att.merge, _merge_items(att, keep)))
    for node, items in targets:
        _set_shape_items(node, items)
    index = torch.tensor([h * att.head_dim + j for h in keep_heads for j in range(att.head_dim)])
    for path in (att.q.path, att.k.path, att.v.path):
        _shrink_linear(_linear(gm, path), index, rows=True)
    _shrink_linear(_linear(gm, att.o_path), index, rows=False)
    att.heads = keep


# -- the handler ------------------------------------------------------------------------------------


@dataclass
class _Site:
    att: Attention
    ratio: float
    original_heads: int
    own: bool = False
    skip_reason: str = ""
    removed: int = 0
    before: dict[str, tuple[tuple[int, ...], int, int]] = field(default_factory=dict)


def _plan(
    sites: Sequence[_Site],
    scores: Sequence[np.ndarray],
    config: HeadConfig,
    fraction: float,
    macs_per_head: Sequence[float],
    macs_to_remove: float,
) -> list[list[int]]:
    """Heads to drop per site this round (indices in the site's current numbering).

    ``fraction`` of the final ratio is due after this round; with a MACs
    target, ``macs_to_remove`` is this round's share. A site with an override
    (``own``) always loses its own ratio of heads; the others follow the scope
    or the MACs target.
    """
    caps = [
        max(0, min(s.att.heads - 1, math.floor(config.max_layer_ratio * s.original_heads) - s.removed))
        for s in sites
    ]
    wanted = [max(0, round(s.ratio * fraction * s.original_heads) - s.removed) for s in sites]
    alone = [s.own or (config.scope == "per_layer" and not config.target_macs_reduction) for s in sites]
    drops: list[list[int]] = [
        [int(h) for h in np.argsort(scores[i], kind="stable")[: min(wanted[i], caps[i])]] if alone[i] else []
        for i in range(len(sites))
    ]
    shared_caps = [0 if alone[i] else caps[i] for i in range(len(sites))]
    if config.target_macs_reduction:
        removed = sum(len(drops[i]) * macs_per_head[i] for i in range(len(sites)))
        for i, h in _global_order(scores, shared_caps):
            if removed >= macs_to_remove:
                break
            after = removed + macs_per_head[i]
            if after > macs_to_remove and after - macs_to_remove > macs_to_remove - removed:
                break  # stopping here lands closer to the target than one more head
            drops[i].append(h)
            removed = after
        return drops
    total = sum(w for w, a in zip(wanted, alone, strict=True) if not a)
    for i, h in _global_order(scores, shared_caps)[:total]:
        drops[i].append(h)
    return drops


def _global_order(scores: Sequence[np.ndarray], caps: Sequence[int]) -> list[tuple[int, int]]:
    """(site, head) pairs, least important first by per-site normalised score, each site within its cap."""
    pairs: list[tuple[float, int, int]] = []
    for i, s in enumerate(scores):
        mean = float(np.mean(s)) or 1.0
        pairs += [(float(s[h]) / mean, i, int(h)) for h in np.argsort(s, kind="stable")[: caps[i]]]
    pairs.sort()
    return [(i, h) for _, i, h in pairs]


def _weight_facts(module: nn.Linear) -> tuple[tuple[int, ...], int, int]:
    w = module.weight.detach()
    return tuple(int(d) for d in w.shape), int(w.numel()), int(torch.count_nonzero(w))


def _sites(gm: fx.GraphModule, attentions: Sequence[Attention], config: HeadConfig) -> list[_Site]:
    outputs = output_modules(gm)
    sites = []
    for att in attentions:
        names = [att.name, *(n for p in att.paths for n in names_of(gm, p))]
        hit = first_match(config.ignore, names)
        own = next((r for pattern, r in config.overrides if first_match([pattern], names)), None)
        site = _Site(att, own or config.ratio, original_heads=att.heads, own=own is not None)
        if hit is not None:
            site.skip_reason = f"matches ignore pattern {hit!r}"
        elif att.o_path in outputs and not config.prune_output_layers:
            site.skip_reason = "its output projection is an output layer (set prune_output_layers)"
        elif att.heads < 2:
            site.skip_reason = "a single head"
        site.before = {p: _weight_facts(_linear(gm, p)) for p in att.paths}
        sites.append(site)
    return sites


@register_pruner(HeadConfig)
def prune_heads(model: onnx.ModelProto, config: HeadConfig, context: PruneContext) -> PruneResult:
    """Remove attention heads as the module docstring states.

    Raises ``UNSUPPORTED_MODEL`` when the model has no attention this can
    prune, ``INVALID_SPEC`` when the ignore patterns leave none.
    """
    gm = to_graph(model, context)
    args = example_inputs(context)
    propagate(gm, args)
    attentions, misses = find_attentions(gm)
    if not attentions:
        detail = f" ({'; '.join(misses[:3])})" if misses else " (no softmax in the graph)"
        raise unsupported_model("no multi-head attention this method can prune" + detail)
    sites = _sites(gm, attentions, config)
    active = [s for s in sites if not s.skip_reason]
    if not active:
        if any(s.skip_reason.startswith("matches ignore") for s in sites):
            raise invalid_spec(
                [FieldViolation("spec.prune.ignore", "the patterns match every attention of the model")]
            )
        reasons = "; ".join(f"{s.att.name}: {s.skip_reason}" for s in sites)
        raise unsupported_model(f"no attention can lose heads: {reasons}")
    warnings: list[str] = []
    batches = feed_batches(context) or [args]
    if config.importance in _DATA_DRIVEN and context.synthetic:
        warnings.append(
            f"SYNTHETIC_IMPORTANCE: {config.importance} head importance was measured on synthetic inputs"
        )
    total_macs = float(sum(graph_macs(gm).values()))
    goal_macs = total_macs / config.target_macs_reduction if config.target_macs_reduction else total_macs
    for step in range(1, config.steps + 1):
        fraction = step / config.steps
        scores = head_scores(gm, [s.att for s in active], config.importance, batches, config.seed)
        macs_per_head = [_macs_per_head(gm, s.att) for s in active]
        current = float(sum(graph_macs(gm).values()))
        due = current - (total_macs - fraction * (total_macs - goal_macs))
        drops = _plan(active, scores, config, fraction, macs_per_head, due)
        for site, drop in zip(active, drops, strict=True):
            remove_heads(gm, site.att, drop)
            site.removed += len(drop)
        gm.recompile()
        propagate(gm, args)
        if context.recover is not None and step < config.steps:
            context.recover(gm)
            propagate(gm, args)
    remove_unused_modules(gm)
    return _result(model, gm, sites, warnings, total_macs, config, context)


def _macs_per_head(gm: fx.GraphModule, att: Attention) -> float:
    nodes = [att.q.linear, att.k.linear, att.v.linear, att.o_linear, att.context]
    nodes += [n for n in att.nodes if _is_matmul(n)]
    macs = graph_macs(gm)
    return sum(macs.get(n.name, 0) for n in set(nodes)) / max(1, att.heads)


def _result(
    model: onnx.ModelProto,
    gm: fx.GraphModule,
    sites: Sequence[_Site],
    warnings: list[str],
    total_macs: float,
    config: HeadConfig,
    context: PruneContext,
) -> PruneResult:
    layers: list[LayerPruneInfo] = []
    for site in sites:
        for path in site.att.paths:
            shape, params, nonzero = site.before[path]
            after_shape, after_params, after_nonzero = (shape, params, nonzero)
            if site.removed and not site.skip_reason:
                after_shape, after_params, after_nonzero = _weight_facts(_linear(gm, path))
            where = origin(gm, path)
            layers.append(
                LayerPruneInfo(
                    name=where.name,
                    op_type=where.op_type,
                    weight_name=where.weight_name,
                    shape_before=shape,
                    shape_after=after_shape,
                    parameters_before=params,
                    parameters_after=after_params,
                    nonzero_before=nonzero,
                    nonzero_after=after_nonzero,
                    skipped=bool(site.skip_reason) or not site.removed,
                    skip_reason=site.skip_reason or ("" if site.removed else "no head selected"),
                )
            )
    summary = ", ".join(f"{s.att.name}: {s.original_heads}->{s.original_heads - s.removed}" for s in sites)
    warnings.append(f"HEADS_PRUNED: heads per attention {summary}")
    if config.target_macs_reduction:
        after = float(sum(graph_macs(gm).values()))
        reached = total_macs / after if after else math.inf
        if abs(reached - config.target_macs_reduction) > 0.05 * config.target_macs_reduction:
            warnings.append(
                f"TARGET_NOT_REACHED: MACs divided by {reached:.3f}, not {config.target_macs_reduction:g} "
                "(heads come in whole units and at least one stays per attention)"
            )
    return PruneResult(
        tensors={}, layers=layers, warnings=warnings, model=to_onnx(gm, model, context), module=gm
    )
