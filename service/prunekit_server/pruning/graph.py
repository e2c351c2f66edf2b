"""The bridge structured methods share: ONNX -> trainable GraphModule -> ONNX.

Structured methods (channel, neuron, layer, attention head) prune a
``torch.fx.GraphModule`` made by :func:`~prunekit_server.modelio.onnx_to_fx.onnx_to_fx`
and hand back a new ONNX model with the same input and output names.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import fx

from ..modelio.onnx_to_fx import fx_to_onnx, model_opset, onnx_to_fx
from ..modelio.torchscript import random_input
from .base import PruneContext

#: Lowest opset the pruned model is written with (the input's, when newer).
MIN_EXPORT_OPSET = 17


def to_graph(model: onnx.ModelProto, context: PruneContext) -> fx.GraphModule:
    """The model as a GraphModule of real layers, converted at the context's input shapes."""
    return onnx_to_fx(model, inputs=list(context.inputs) or None)


def example_inputs(context: PruneContext, *, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """One batch to trace the graph with: the first feed when there is one, else random inputs."""
    if context.feeds:
        feed = context.feeds[0]
        return tuple(torch.from_numpy(np.asarray(feed[spec.name], order="C")) for spec in context.inputs)
    generator = torch.Generator().manual_seed(seed)
    return tuple(random_input(spec, generator) for spec in context.inputs)


def feed_batches(context: PruneContext) -> list[tuple[torch.Tensor, ...]]:
    """Every feed as a tuple of tensors in input order (data-driven criteria run on these)."""
    return [
        tuple(torch.from_numpy(np.asarray(feed[spec.name], order="C")) for spec in context.inputs)
        for feed in context.feeds
    ]


def to_onnx(gm: fx.GraphModule, original: onnx.ModelProto, context: PruneContext) -> onnx.ModelProto:
    """The pruned graph as ONNX (legacy exporter, BatchNorm kept), named like ``original``.

    Inputs and outputs keep their names; so do the weighted layers (see
    :func:`restore_layer_names`), which lets a report match them with the original's.
    """
    opset = max(MIN_EXPORT_OPSET, min(model_opset(original), 20))
    with tempfile.TemporaryDirectory(prefix="prunekit-export-") as tmp:
        exported = fx_to_onnx(gm, list(context.inputs), Path(tmp) / "pruned.onnx", opset=opset)
    restore_layer_names(exported, gm)
    return exported


_PASS_THROUGH = frozenset({"Identity", "Transpose", "Cast"})


def restore_layer_names(exported: onnx.ModelProto, gm: fx.GraphModule) -> None:
    """Rename the exported Conv/ConvTranspose/Gemm/MatMul nodes to the original model's node names.

    A node is matched through its weight initializer (``<module path>.weight``,
    possibly behind Identity/Transpose/Cast) to the module and the ONNX node the
    converter made it from (``gm.meta["prunekit_onnx_names"]``).
    """
    graph = exported.graph
    initializers = {t.name for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    origins = gm.meta.get("prunekit_onnx_names", {})
    wanted: dict[int, str] = {}
    for index, node in enumerate(graph.node):
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        source, seen = node.input[1], 0
        while source not in initializers and source in producers and seen < 4:
            producer = producers[source]
            if producer.op_type not in _PASS_THROUGH or not producer.input:
                break
            source, seen = producer.input[0], seen + 1
        entry = origins.get(source[: -len(".weight")]) if source.endswith(".weight") else None
        if isinstance(entry, dict) and entry.get("node"):
            wanted[index] = str(entry["node"])
    taken = {n.name for i, n in enumerate(graph.node) if i not in wanted}
    for index, name in wanted.items():
        if name not in taken:
            graph.node[index].name = name
            taken.add(name)
