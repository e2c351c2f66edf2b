"""Small helpers the GraphModule methods (layer, heads, sensitivity) share.

Shapes come from a sample run (:func:`propagate`); names from the converter's
``gm.meta["prunekit_onnx_names"]`` (module path -> the ONNX node it came
from); MACs are counted per node the way the model analysis counts them
(Conv, ConvTranspose, Linear and matmul); fidelity compares outputs the way
the quality stage does (cosine of the flattened first output per sample,
arg-max agreement over its last axis).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..measure.quality import Quality, cosine, max_abs, top1_matches

WEIGHTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
MATMULS = (torch.matmul, operator.matmul, torch.bmm)


def propagate(gm: fx.GraphModule, args: Sequence[torch.Tensor]) -> None:
    """Record every node's output shape (``node.meta["tensor_meta"]``) from one run on ``args``."""
    with torch.no_grad():
        ShapeProp(gm).propagate(*args)


def shape_of(node: Any) -> tuple[int, ...] | None:
    """The shape :func:`propagate` recorded for a tensor-valued node, else None."""
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def module_at(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The submodule a ``call_module`` node calls, else None."""
    if node.op != "call_module":
        return None
    return gm.get_submodule(str(node.target))


def weighted_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The Linear/Conv/ConvTranspose module a node calls, else None."""
    module = module_at(gm, node)
    return module if isinstance(module, WEIGHTED_MODULES) else None


@dataclass(frozen=True)
class OnnxOrigin:
    """Where a module came from: its ONNX node name, op type and weight initializer."""

    name: str
    op_type: str
    weight_name: str


def origin(gm: fx.GraphModule, path: str) -> OnnxOrigin:
    """The ONNX origin of the module at ``path`` (the path itself when the converter left none)."""
    names = gm.meta.get("prunekit_onnx_names", {})
    entry = names.get(path) if isinstance(names, dict) else None
    if not isinstance(entry, dict):
        module = gm.get_submodule(path)
        kind = "Gemm" if isinstance(module, nn.Linear) else type(module).__name__.rstrip("123d")
        return OnnxOrigin(path, kind, f"{path}.weight")
    inits = entry.get("initializers") or [f"{path}.weight"]
    return OnnxOrigin(str(entry.get("node") or path), str(entry.get("op_type") or ""), str(inits[0]))


def names_of(gm: fx.GraphModule, path: str) -> list[str]:
    """Every name a glob may match for the module at ``path``: the path, its ONNX nodes and initializers."""
    names = [path]
    entry = gm.meta.get("prunekit_onnx_names", {}).get(path)
    if isinstance(entry, dict):
        names += [str(n) for n in entry.get("nodes", [])] + [str(n) for n in entry.get("initializers", [])]
        if entry.get("node"):
            names.append(str(entry["node"]))
    return names


def first_match(patterns: Iterable[str], names: Iterable[str]) -> str | None:
    """The first pattern matching any of ``names`` (fnmatch, case-sensitive), else None."""
    items = list(names)
    return next((p for p in patterns if any(fnmatchcase(n, p) for n in items)), None)


def common_prefix(paths: Sequence[str]) -> str:
    """The dotted prefix all ``paths`` share (``a.b`` for ``a.b.c`` and ``a.b.d``), ``""`` if none."""
    parts = [p.split(".") for p in paths]
    prefix: list[str] = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        prefix.append(items[0])
    return ".".join(prefix)


def node_macs(gm: fx.GraphModule, node: fx.Node) -> int:
    """Multiply-accumulates of one node for the propagated shapes (0 for nodes that do none)."""
    out = shape_of(node)
    if out is None:
        return 0
    module = module_at(gm, node)
    if isinstance(module, nn.Linear):
        return math.prod(out) * module.in_features
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        kernel = math.prod(module.kernel_size)
        return math.prod(out) * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        source = shape_of(node.args[0]) if node.args else None
        if source is None:
            return 0
        kernel = math.prod(module.kernel_size)
        return math.prod(source) * (module.out_channels // module.groups) * kernel
    if node.op == "call_function" and node.target in MATMULS and len(node.args) >= 2:
        left = shape_of(node.args[0])
        return math.prod(out) * left[-1] if left else 0
    return 0


def graph_macs(gm: fx.GraphModule) -> dict[str, int]:
    """Node name -> MACs, for every node doing any (after :func:`propagate`)."""
    found = {node.name: node_macs(gm, node) for node in gm.graph.nodes}
    return {name: macs for name, macs in found.items() if macs}


def output_modules(gm: fx.GraphModule) -> set[str]:
    """Paths of weighted modules from which a graph output is reached without passing another one."""
    found: set[str] = set()
    for node in gm.graph.nodes:
        if weighted_module(gm, node) is None:
            continue
        stack, seen = [node], {node}
        while stack:
            current = stack.pop()
            if any(user.op == "output" for user in current.users):
                found.add(str(node.target))
                break
            for user in current.users:
                if user not in seen and weighted_module(gm, user) is None:
                    seen.add(user)
                    stack.append(user)
    return found


def outputs_of(result: Any) -> list[torch.Tensor]:
    """A module's result as a list of tensors."""
    items = list(result) if isinstance(result, tuple | list) else [result]
    return [item for item in items if isinstance(item, torch.Tensor)]


def run_batches(module: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]) -> list[list[torch.Tensor]]:
    """The module's outputs on each batch (no gradients)."""
    with torch.no_grad():
        return [[o.detach() for o in outputs_of(module(*batch))] for batch in batches]


def fidelity(
    reference: Sequence[Sequence[torch.Tensor]], outputs: Sequence[Sequence[torch.Tensor]]
) -> Quality:
    """Compare the first output of each batch: cosine per sample (batch row), arg-max per last-axis row.

    ``max_abs_error`` is over the first outputs; ``samples`` counts the compared rows (cosines).
    """
    cosines: list[float] = []
    matched = rows = 0
    worst = 0.0
    for ref_items, out_items in zip(reference, outputs, strict=True):
        ref = ref_items[0].double().numpy()
        out = out_items[0].double().numpy()
        if ref.shape != out.shape:
            raise ValueError(f"output shape changed: {tuple(ref.shape)} -> {tuple(out.shape)}")
        per_sample = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
        per_out = out.reshape(per_sample.shape)
        cosines += [cosine(a, b) for a, b in zip(per_sample, per_out, strict=True)]
        worst = max(worst, max_abs(ref, out))
        if ref.ndim and ref.shape[-1]:
            good, count = top1_matches(ref, out)
            matched, rows = matched + good, rows + count
    return Quality(
        top1_agreement=matched / rows if rows else 1.0,
        cosine_similarity=float(np.mean(cosines)) if cosines else 1.0,
        max_abs_error=worst,
        samples=len(cosines),
    )


def remove_unused_modules(gm: fx.GraphModule) -> None:
    """Drop dead nodes, then every submodule no remaining node calls, and recompile."""
    gm.graph.eliminate_dead_code()
    used = {str(node.target) for node in gm.graph.nodes if node.op in ("call_module", "get_attr")}
    for name, _ in list(gm.named_modules()):
        if name and not any(u == name or u.startswith(name + ".") for u in used):
            gm.delete_submodule(name)
    gm.graph.lint()
    gm.recompile()


def taylor_products(
    module: nn.Module, params: Sequence[torch.Tensor], batches: Sequence[tuple[torch.Tensor, ...]]
) -> list[torch.Tensor]:
    """``|gradient x weight|`` per tensor of ``params``; gradients of :func:`loss_of`, summed over batches."""
    totals = [torch.zeros_like(p) for p in params]
    was = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        for batch in batches:
            grads = torch.autograd.grad(loss_of(outputs_of(module(*batch))), list(params), allow_unused=True)
            for total, grad in zip(totals, grads, strict=True):
                if grad is not None:
                    total += grad.detach()
    finally:
        for p, flag in zip(params, was, strict=True):
            p.requires_grad_(flag)
    return [(total * p.detach()).abs() for total, p in zip(totals, params, strict=True)]


def loss_of(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """A scalar to take gradients of when no labels exist: mean squared value of every float output."""
    terms = [o.float().pow(2).mean() for o in outputs if o.is_floating_point()]
    if not terms:
        raise ValueError("the model has no floating-point output to take gradients of")
    return torch.stack(terms).sum()
