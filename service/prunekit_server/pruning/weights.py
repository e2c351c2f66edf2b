"""ONNX helpers the weight-reading methods share: a weight behind Identity/Transpose, output layers."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from .base import WEIGHTED_OPS

__all__ = ["output_layers", "resolve_weight"]


def resolve_weight(
    source: str, inits: dict[str, TensorProto], producers: dict[str, onnx.NodeProto]
) -> tuple[str, list[int]] | None:
    """The initializer behind ``source`` (through Identity and Transpose) and the permutation applied to it.

    The permutation maps the consumed tensor's axes to the initializer's:
    consumed axis ``a`` is initializer axis ``perm[a]``.
    """
    perm: list[int] | None = None
    seen: set[str] = set()
    while source not in inits:
        node = producers.get(source)
        if node is None or source in seen or node.op_type not in ("Identity", "Transpose") or not node.input:
            return None
        seen.add(source)
        if node.op_type == "Transpose":
            attr = next((a for a in node.attribute if a.name == "perm"), None)
            step = list(attr.ints) if attr is not None else None
            # consumed axis a of this Transpose's output is axis step[a] of its input
            if step is None:
                return None
            perm = step if perm is None else [step[p] for p in perm]
        source = node.input[0]
    rank = len(inits[source].dims)
    if perm is None:
        perm = list(range(rank))
    if sorted(perm) != list(range(rank)):
        return None
    return source, perm


def output_layers(model: onnx.ModelProto) -> set[str]:
    """Names of weighted nodes from which a graph output is reached without passing another weighted node."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    found: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHTED_OPS:
            continue
        stack, seen = list(node.output), set(node.output)
        while stack:
            value = stack.pop()
            if value in outputs:
                found.add(node.name or f"{node.op_type}_{index}")
                break
            for reader in consumers.get(value, []):
                if reader.op_type in WEIGHTED_OPS and len(reader.input) > 1 and reader.input[1] != value:
                    continue
                for out in reader.output:
                    if out not in seen:
                        seen.add(out)
                        stack.append(out)
    return found
