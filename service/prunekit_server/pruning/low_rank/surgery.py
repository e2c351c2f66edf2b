"""Rewriting the ONNX graph: each factorized layer becomes two nodes, the dense weight and its chain go.

With ``M ~= U_r S_r V_r^T`` the first node computes ``h = (S_r^1/2 V_r^T) x`` (``r``
features) and the second ``y = (U_r S_r^1/2) h`` plus the original bias. The
second node keeps the layer's name and output tensor, so everything downstream
is untouched; the first is named ``<name>_low_rank``. A Conv's first factor
keeps the kernel, strides, pads and dilations; its second is a 1x1 Conv. In the spatial form the
first is the ``kh x 1`` conv (the vertical stride, pads and dilation) and the second the ``1 x kw``
conv (the horizontal ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .factors import SPATIAL, Candidate

FIRST_SUFFIX = "_low_rank"
"""The first factor of layer ``name`` is the node ``name + FIRST_SUFFIX``."""


def factor_values(c: Candidate, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` with ``M ~= B @ A``: ``A`` is ``rank x fan_in``, ``B`` is ``out x rank`` (float64)."""
    assert c.u is not None
    assert c.singular is not None
    assert c.vt is not None
    root = np.sqrt(c.singular[:rank])
    return root[:, None] * c.vt[:rank], c.u[:, :rank] * root[None, :]


def _nodes(
    c: Candidate, rank: int, dtype: np.dtype[np.generic]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    first_w, second_w = factor_values(c, rank)
    node, name = c.node, c.name
    hidden, first_name, second_name = (
        f"{name}{FIRST_SUFFIX}_out",
        f"{c.weight_name}_lr_a",
        f"{c.weight_name}_lr_b",
    )
    bias = list(node.input[2:3])
    if node.op_type == "Gemm":
        first = helper.make_node("Gemm", [node.input[0], first_name], [hidden], name + FIRST_SUFFIX, transB=1)
        second = helper.make_node("Gemm", [hidden, second_name, *bias], [node.output[0]], name, transB=1)
    elif node.op_type == "MatMul":
        first_w, second_w = first_w.T, second_w.T
        first = helper.make_node("MatMul", [node.input[0], first_name], [hidden], name + FIRST_SUFFIX)
        second = helper.make_node("MatMul", [hidden, second_name], [node.output[0]], name)
    elif c.form == SPATIAL:
        first, second, first_w, second_w = _spatial(c, rank, hidden, (first_name, second_name))
    else:
        kernel = c.weight_shape[2:]
        first_w = first_w.reshape(rank, *c.weight_shape[1:])
        second_w = second_w.reshape(c.out, rank, *([1] * len(kernel)))
        first = helper.make_node("Conv", [node.input[0], first_name], [hidden], name + FIRST_SUFFIX)
        first.attribute.extend(node.attribute)
        second = helper.make_node("Conv", [hidden, second_name, *bias], [node.output[0]], name)
    tensors = [
        numpy_helper.from_array(first_w.astype(dtype), first_name),
        numpy_helper.from_array(second_w.astype(dtype), second_name),
    ]
    return [first, second], tensors


def _spatial(
    c: Candidate, rank: int, hidden: str, weights: tuple[str, str]
) -> tuple[onnx.NodeProto, onnx.NodeProto, np.ndarray, np.ndarray]:
    """The ``kh x 1`` and ``1 x kw`` convs of a spatial factorization, and their weights."""
    o, i, kh, kw = c.weight_shape
    cols, rows = factor_values(c, rank)
    first_w = rows.T.reshape(rank, i, kh, 1)
    second_w = cols.reshape(rank, o, kw).transpose(1, 0, 2).reshape(o, rank, 1, kw)
    attrs = {a.name: helper.get_attribute_value(a) for a in c.node.attribute}
    sh, sw = list(attrs.get("strides", [1, 1]))
    dh, dw = list(attrs.get("dilations", [1, 1]))
    top, left, bottom, right = list(attrs.get("pads", [0, 0, 0, 0]))
    node = c.node
    first = helper.make_node(
        "Conv", [node.input[0], weights[0]], [hidden], c.name + FIRST_SUFFIX,
        kernel_shape=[kh, 1], strides=[sh, 1], dilations=[dh, 1], pads=[top, 0, bottom, 0],
    )  # fmt: skip
    second = helper.make_node(
        "Conv", [hidden, weights[1], *node.input[2:3]], [node.output[0]], c.name,
        kernel_shape=[1, kw], strides=[1, sw], dilations=[1, dw], pads=[0, left, 0, right],
    )  # fmt: skip
    return first, second, first_w, second_w


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove weight-chain nodes (Identity, Transpose) and initializers nothing reads any more."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [
            n
            for n in graph.node
            if n.op_type in ("Identity", "Transpose") and not any(o in read for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {name for node in graph.node for name in node.input} | outputs
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
    for value in [v for v in graph.input if v.name not in read]:
        graph.input.remove(value)
    produced = {o for node in graph.node for o in node.output}
    for value in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(value)


def factorize(model: onnx.ModelProto, chosen: Sequence[tuple[Candidate, int]]) -> onnx.ModelProto:
    """A copy of ``model`` with each ``(layer, rank)`` of ``chosen`` split in two (ranks above 0)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in model.graph.initializer}
    by_index = {c.index: (c, rank) for c, rank in chosen}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    for index, node in enumerate(model.graph.node):
        if index not in by_index:
            nodes.append(node)
            continue
        c, rank = by_index[index]
        dtype = helper.tensor_dtype_to_np_dtype(inits[c.weight_name].data_type)
        pair, tensors = _nodes(c, rank, dtype)
        nodes.extend(pair)
        added.extend(tensors)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(added)
    _drop_dead(out.graph)
    return out
