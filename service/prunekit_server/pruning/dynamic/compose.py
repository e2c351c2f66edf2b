"""The early-exit model: the original's nodes split at the exit points and nested in ONNX ``If`` nodes.

The main graph computes up to exit 1, its head and its condition, then an ``If``: the then-branch
returns the head's output, the else-branch computes up to exit 2 and nests the next ``If``, and the
innermost else-branch runs the rest of the network. ONNX Runtime runs only the branch taken, so an input
that leaves early never computes the later blocks. Subgraphs read the weights and the tensors computed
before them from the enclosing scopes; nothing is copied.

The condition is ``min over the batch of max softmax probability >= threshold`` (the threshold is one
scalar initializer, :data:`THRESHOLD`): a batch leaves only when every item in it is confident. Each exit
returns the head's logits, normalized like the original output (``Softmax`` / ``LogSoftmax``) and cast to
its element type, so every path gives the original's output name, shape and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .heads import Head, add_pool, axes_node, opset_of
from .points import ExitPoint, Graph, Output

__all__ = ["THRESHOLD", "build_early_exit", "exit_branch", "head_nodes", "stages", "with_threshold"]

THRESHOLD = "dyn_threshold"
FULL_SUFFIX = "__full"


def stages(graph: Graph, points: Sequence[ExitPoint], output: str) -> list[list[onnx.NodeProto]]:
    """The nodes computed before each point (beyond the previous one), then the rest, in graph order."""
    done: set[int] = set()
    stages = []
    for tensor in [*(p.tensor for p in points), output]:
        here = graph.ancestors(tensor) - done
        done |= here
        stages.append([graph.nodes[i] for i in sorted(here)])
    return stages


def _value(name: str, output: Output) -> onnx.ValueInfoProto:
    dims = [None if d == "?" else d for d in output.shape]
    return helper.make_tensor_value_info(name, output.elem_type, dims)


def head_nodes(
    k: int, point: ExitPoint, head: Head, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str, str]:
    """Exit ``k``'s head and condition: nodes, initializers, logits tensor, condition tensor."""
    prefix = f"dyn_exit{k}"
    nodes, consts, features, _ = add_pool(point, prefix, opset)
    weight, bias, logits = f"{prefix}_W", f"{prefix}_b", f"{prefix}_logits"
    consts += [numpy_helper.from_array(head.weight, weight), numpy_helper.from_array(head.bias, bias)]
    nodes.append(helper.make_node("Gemm", [features, weight, bias], [logits], name=logits, transB=1))
    probs, conf, least, cond = (f"{prefix}_{s}" for s in ("probs", "conf", "least", "cond"))
    nodes.append(helper.make_node("Softmax", [logits], [probs], name=probs, axis=1))
    reduce, more = axes_node("ReduceMax", probs, conf, [1], opset)
    nodes += reduce
    consts += more
    nodes.append(helper.make_node("ReduceMin", [conf], [least], name=least, keepdims=0))
    if opset >= 12:
        nodes.append(helper.make_node("GreaterOrEqual", [least, THRESHOLD], [cond], name=cond))
    else:
        below = f"{prefix}_below"
        nodes.append(helper.make_node("Less", [least, THRESHOLD], [below], name=below))
        nodes.append(helper.make_node("Not", [below], [cond], name=cond))
    return nodes, consts, logits, cond


def exit_branch(k: int, logits: str, output: Output) -> onnx.GraphProto:
    """The then-branch of exit ``k``: the head's logits as the original output would be."""
    prefix = f"dyn_exit{k}"
    nodes = []
    current = logits
    if output.final_op:
        normed = f"{prefix}_normed"
        nodes.append(
            helper.make_node(output.final_op, [current], [normed], name=normed, axis=output.final_axis)
        )
        current = normed
    out = f"{prefix}_out"
    if output.elem_type != onnx.TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], [out], name=out, to=output.elem_type))
    else:
        nodes.append(helper.make_node("Identity", [current], [out], name=out))
    return helper.make_graph(nodes, f"{prefix}_then", [], [_value(out, output)])


def _renamed(nodes: list[onnx.NodeProto], old: str, new: str) -> list[onnx.NodeProto]:
    out = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for i, name in enumerate(copy.output):
            if name == old:
                copy.output[i] = new
        for i, name in enumerate(copy.input):
            if name == old:
                copy.input[i] = new
        out.append(copy)
    return out


def build_early_exit(
    graph: Graph, output: Output, points: Sequence[ExitPoint], heads: Sequence[Head], threshold: float
) -> onnx.ModelProto:
    """The gated model (see the module docstring) with exits at ``points`` (depth order) and ``heads``."""
    model = graph.model
    opset = opset_of(model)
    parts = stages(graph, points, output.name)
    full = output.name + FULL_SUFFIX
    body = _renamed(parts[-1], output.name, full)
    body_out = full
    consts: list[onnx.TensorProto] = []
    for k in range(len(points), 0, -1):
        nodes, more, logits, cond = head_nodes(k, points[k - 1], heads[k - 1], opset)
        consts += more
        else_branch = helper.make_graph(body, f"dyn_exit{k}_else", [], [_value(body_out, output)])
        if_out = output.name if k == 1 else f"dyn_if{k}_out"
        branch = helper.make_node(
            "If",
            [cond],
            [if_out],
            name=f"dyn_if{k}",
            then_branch=exit_branch(k, logits, output),
            else_branch=else_branch,
        )
        body = [*parts[k - 1], *nodes, branch]
        body_out = if_out
    gated = onnx.ModelProto()
    gated.CopyFrom(model)
    del gated.graph.node[:]
    gated.graph.node.extend(body)
    del gated.graph.value_info[:]
    gated.graph.initializer.extend(consts)
    gated.graph.initializer.append(
        numpy_helper.from_array(np.asarray(threshold, dtype=np.float32), THRESHOLD)
    )
    return gated


def with_threshold(model: onnx.ModelProto, threshold: float) -> onnx.ModelProto:
    """A copy of a gated ``model`` whose exits leave at ``threshold``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.name == THRESHOLD:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(threshold, dtype=np.float32), THRESHOLD))
            return out
    raise KeyError(f"{THRESHOLD} is not an initializer: not an early-exit model")
