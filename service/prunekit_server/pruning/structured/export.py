"""Writing the pruned graph back to ONNX: sizes frozen where they are fixed, original layer names.

The converted graph reads its sizes from the data (``x.size(1) // 2`` for a
split), so that channels can be removed. Once they are, every size that does
not follow the batch is fixed again: :func:`freeze_static_sizes` runs the graph
at two batch sizes and turns each ``size()`` read that gives the same number
in both into that number (and each ``torch.chunk`` that cuts the same sizes
into a ``torch.split`` with those sizes). The exported model then carries plain constants
(which shape inference, and so the model analysis, can follow) instead of
``Shape -> Gather -> Div`` chains. :func:`~prunekit_server.pruning.graph.restore_layer_names` gives the
exported layers their original ONNX node names back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import onnx
import torch
from torch import fx

from prunekit.v1 import model_pb2

from ...measure.timings import with_batch
from ...modelio.torchscript import random_input
from ..base import PruneContext
from ..graph import to_onnx

_PASS_THROUGH = frozenset({"Identity", "Transpose", "Cast"})


def _chunk_dim(n: fx.Node) -> int:
    return int(n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0))  # type: ignore[arg-type]


class _SizeRecorder(fx.Interpreter):
    """Records what every ``size()`` read returns, and the sizes every ``torch.chunk`` cuts."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.sizes: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.op == "call_method" and n.target == "size":
            self.sizes[n] = result
        elif n.op == "call_function" and n.target is torch.chunk:
            dim = _chunk_dim(n)
            self.sizes[n] = tuple(int(t.shape[dim]) for t in result)
        return result


def _sizes(gm: fx.GraphModule, inputs: Sequence[model_pb2.InputSpec], batch: int) -> dict[fx.Node, Any]:
    generator = torch.Generator().manual_seed(0)
    specs = with_batch(inputs, batch)
    recorder = _SizeRecorder(gm)
    with torch.no_grad():
        recorder.run(*(random_input(spec, generator) for spec in specs))
    return recorder.sizes


def freeze_static_sizes(gm: fx.GraphModule, inputs: Sequence[model_pb2.InputSpec]) -> int:
    """Replace every ``size()`` read of ``gm`` that does not change with the batch by its value.

    Returns how many were frozen. A graph that fails at another batch size is left as it is.
    """
    ranked = [spec for spec in inputs if spec.shape]
    if not ranked:
        return 0
    first = int(ranked[0].shape[0])
    try:
        one, other = _sizes(gm, inputs, first), _sizes(gm, inputs, first + 1)
    except Exception:
        return 0
    frozen = 0
    for node, value in one.items():
        if other.get(node) != value:
            continue
        if isinstance(value, int):
            node.replace_all_uses_with(value)  # type: ignore[arg-type]
            gm.graph.erase_node(node)
        else:  # a chunk cutting fixed sizes: a split with constant sizes, which exporters keep constant
            node.target = torch.split
            node.args = (node.args[0], list(value), _chunk_dim(node))
            node.kwargs = {}
        frozen += 1
    if frozen:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return frozen


def export_pruned(gm: fx.GraphModule, original: onnx.ModelProto, context: PruneContext) -> onnx.ModelProto:
    """The pruned graph as ONNX: sizes frozen on a copy, then exported and its layers renamed."""
    work = copy.deepcopy(gm)
    freeze_static_sizes(work, context.inputs)
    return to_onnx(work, original, context)
