"""ONNX helpers the weight-reading methods share: a weight behind Identity/Transpose, output layers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from .base import WEIGHTED_OPS

__all__ = ["matrix_to_weight", "output_layers", "resolve_weight", "weight_matrix"]


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def weight_matrix(
    node: onnx.NodeProto, value: np.ndarray, perm: tuple[int, ...]
) -> tuple[np.ndarray | None, str]:
    """The layer as a float64 matrix ``M`` (``out x fan_in``, ``y = M x``), or None and why it is not one.

    ``value`` is the weight initializer, ``perm`` the permutation it is consumed
    through (:func:`resolve_weight`). Gemm: ``transA=0``, ``alpha=beta=1``; MatMul:
    a 2-D weight; Conv: ``group=1``, the weight read as ``(out, in * prod(kernel))``.
    """
    attrs = _attrs(node)
    wide = value.astype(np.float64)
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None, "Gemm with transA, alpha or beta other than the defaults"
        if wide.ndim != 2 or perm != (0, 1):
            return None, "Gemm weight is not a plain 2-D initializer"
        return (wide if attrs.get("transB", 0) else wide.T), ""
    if node.op_type == "MatMul":
        if wide.ndim != 2:
            return None, "MatMul weight is not 2-D"
        return np.transpose(wide, perm).T, ""
    if node.op_type == "Conv":
        if int(attrs.get("group", 1)) != 1:  # type: ignore[call-overload]
            return None, "grouped or depthwise convolution"
        if wide.ndim < 3:
            return None, "Conv weight of rank below 3"
        return wide.reshape(wide.shape[0], -1), ""
    return None, f"{node.op_type}: not a matrix layer"


def matrix_to_weight(
    node: onnx.NodeProto, matrix: np.ndarray, shape: tuple[int, ...], perm: tuple[int, ...]
) -> np.ndarray:
    """The inverse of :func:`weight_matrix`: ``matrix`` laid out as the initializer of ``shape``."""
    if node.op_type == "Gemm":
        return matrix if _attrs(node).get("transB", 0) else matrix.T
    if node.op_type == "MatMul":
        return np.transpose(matrix.T, np.argsort(perm))
    return matrix.reshape(shape)


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
