"""Scripted TorchScript specialised to its inputs, so that branches the ONNX exporter cannot write go.

A scripted module keeps its Python control flow: ``nn.TransformerEncoderLayer``
and ``nn.MultiheadAttention`` ask at run time whether their fast path applies
(autocast, gradients, devices, nesting, masks, the input's rank, the training
flag), and torch's legacy exporter can neither write ``aten::is_autocast_enabled``
nor type every branch. For one model and one declared input shape those
questions have one answer. :func:`specialize` inlines the forward graph and
answers them: a branch condition computed only from shapes, dtypes, devices,
flags, ``None`` checks and the module's attributes (never from a tensor's
values, nor from what a loop or a nested branch computes) is evaluated on
samples: the declared inputs, other random values with one more row of batch,
and a batch of one (``x.size(0) == 1`` is a common question); when all agree it becomes a constant and
the branch not taken is dropped (torch's constant propagation), level by level
until no branch is left. A condition reading the data, or one the samples
disagree on (the batch size), is left, and the export fails as before. A question only other batch
sizes answer otherwise (``x.size(0) > 8``) cannot be seen this way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

_ROUNDS = 64
"""Nesting levels unfolded at most (each round answers the branches at the top level)."""
_METADATA = {
    "aten::dim",
    "aten::size",
    "aten::len",
    "aten::numel",
    "aten::is_floating_point",
    "aten::__is__",
    "aten::__isnot__",
    "prim::dtype",
    "prim::device",
    "prim::layout",
    "prim::requires_grad",
    "prim::is_nested",
    "prim::is_cuda",
    "prim::GetAttr",
    "prim::Constant",
}
"""Nodes whose result says something about a tensor (or the module) but nothing of its values."""


def _reads_data(condition: torch._C.Value) -> bool:
    """Whether ``condition`` is computed from a tensor's values (or a graph input's), not only from
    shapes, types, flags and the module's attributes. What a loop or a branch computes counts as
    data (its body is not followed)."""
    stack, seen = [condition], set()
    while stack:
        value = stack.pop()
        node = value.node()
        if node.kind() in _METADATA:
            continue
        if node.kind() in ("prim::Param", "prim::Loop", "prim::If") or isinstance(
            value.type(), torch._C.TensorType
        ):
            return True
        for item in node.inputs():
            if item.debugName() not in seen:
                seen.add(item.debugName())
                stack.append(item)
    return False


def _branches(graph: torch._C.Graph) -> list[torch._C.Node]:
    return [node for node in graph.nodes() if node.kind() == "prim::If"]


def _answers(
    module: torch.jit.ScriptModule, graph: torch._C.Graph, args: Sequence[torch.Tensor]
) -> list[bool]:
    """The condition of every top-level branch of ``graph`` when ``module`` runs on ``args``."""
    probe = graph.copy()
    conditions = [next(iter(node.inputs())) for node in _branches(probe)]
    packed = probe.create("prim::TupleConstruct", conditions, 1)
    packed.insertBefore(probe.return_node())
    packed.output().setType(torch._C.TupleType([c.type() for c in conditions]))
    while len(list(probe.outputs())):
        probe.eraseOutput(0)
    probe.registerOutput(packed.output())
    function = torch._C._create_function_from_graph("prunekit_branch_conditions", probe)
    with torch.no_grad():
        return [bool(value) for value in function(module._c, *args)]


def has_branches(module: torch.jit.ScriptModule) -> bool:
    """Whether ``module``'s forward (its calls inlined) has any branch."""
    graph = module.graph.copy()
    torch._C._jit_pass_inline(graph)
    return _count(graph.nodes()) > 0


def _count(nodes: Iterable[torch._C.Node]) -> int:
    """Branches among ``nodes`` and in their blocks."""
    return sum(
        (node.kind() == "prim::If") + sum(_count(block.nodes()) for block in node.blocks()) for node in nodes
    )


def _constant(graph: torch._C.Graph, answer: bool, before: torch._C.Node) -> torch._C.Value:
    node = graph.create("prim::Constant", [], 1)
    node.i_("value", int(answer))
    node.output().setType(torch._C.BoolType.get())
    node.insertBefore(before)
    return node.output()


def specialize(module: torch.jit.ScriptModule, samples: Sequence[Sequence[torch.Tensor]]) -> int:
    """Answer ``module``'s branch conditions in place (see the module doc): those every sample in
    ``samples`` answers alike; the branches left."""
    graph = module.graph
    torch._C._jit_pass_inline(graph)
    for _ in range(_ROUNDS):
        branches = _branches(graph)
        if not branches:
            break
        answers = [_answers(module, graph, args) for args in samples]
        agreed = [
            (node, seen[0])
            for node, *seen in zip(branches, *answers, strict=True)
            if len(set(seen)) == 1 and not _reads_data(next(iter(node.inputs())))
        ]
        if not agreed:
            break
        for node, answer in agreed:
            node.replaceInput(0, _constant(graph, answer, node))
        torch._C._jit_pass_constant_propagation(graph)
        torch._C._jit_pass_dce(graph)
    return _count(graph.nodes())
