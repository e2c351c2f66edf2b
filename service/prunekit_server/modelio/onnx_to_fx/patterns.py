"""ONNX-level rewrites applied before conversion.

Exporters older than opset 17 spell LayerNorm out as
``ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div [-> Mul(gamma)] [-> Add(beta)]``
over the last axis. :func:`fuse_patterns` replaces each such chain (whose inner values
nothing else reads) by one ``LayerNormalization`` node, so it becomes a real
``nn.LayerNorm``; the replaced nodes' names are kept in the attribute
``prunekit_fused_from``. The input graph is never modified: a copy is returned when
anything was fused. Chains that do not match exactly are converted op by op.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper


class _Graph:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            elif node.op_type == "Identity" and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
        self.users: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.users.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def only_user(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.users.get(name, [])
        if len(users) != 1 or name in self.outputs or users[0].op_type != op_type or users[0].domain:
            return None
        return users[0]

    def scalar(self, name: str) -> float | None:
        value = self.consts.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def other(self, node: onnx.NodeProto, mine: str) -> str | None:
        if len(node.input) != 2 or node.input[0] == node.input[1]:
            return None
        return node.input[1] if node.input[0] == mine else node.input[0]


def _last_axis_mean(g: _Graph, node: onnx.NodeProto) -> bool:
    if node.op_type != "ReduceMean" or node.domain:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = list(attrs.get("axes", []))
    if len(node.input) > 1 and node.input[1]:
        value = g.consts.get(node.input[1])
        axes = [] if value is None else [int(v) for v in value.reshape(-1)]
    return axes == [-1] and int(attrs.get("keepdims", 1)) == 1


def _match(g: _Graph, mean: onnx.NodeProto) -> tuple[list[onnx.NodeProto], list[str], float] | None:
    x = mean.input[0]
    subs = [
        n
        for n in g.users.get(mean.output[0], [])
        if n.op_type == "Sub" and list(n.input) == [x, mean.output[0]]
    ]
    if len(subs) != 1 or len(g.users.get(mean.output[0], [])) != 1:
        return None
    sub = subs[0]
    users = g.users.get(sub.output[0], [])
    pows = [
        n for n in users if n.op_type == "Pow" and n.input[0] == sub.output[0] and g.scalar(n.input[1]) == 2.0
    ]
    divs = [n for n in users if n.op_type == "Div" and n.input[0] == sub.output[0]]
    if len(users) != 2 or len(pows) != 1 or len(divs) != 1 or sub.output[0] in g.outputs:
        return None
    var = g.only_user(pows[0].output[0], "ReduceMean")
    if var is None or not _last_axis_mean(g, var):
        return None
    add = g.only_user(var.output[0], "Add")
    eps_name = g.other(add, var.output[0]) if add is not None else None
    eps = g.scalar(eps_name) if eps_name else None
    sqrt = g.only_user(add.output[0], "Sqrt") if add is not None else None
    if eps is None or sqrt is None or add is None:
        return None
    div = divs[0]
    if list(div.input) != [sub.output[0], sqrt.output[0]] or g.only_user(sqrt.output[0], "Div") is not div:
        return None
    chain = [mean, sub, pows[0], var, add, sqrt, div]
    affine: list[str] = []
    tail = div.output[0]
    for op_type in ("Mul", "Add"):
        step = g.only_user(tail, op_type)
        param = g.other(step, tail) if step is not None else None
        if step is None or param is None or param not in g.consts or g.consts[param].ndim != 1:
            break
        if op_type == "Add" and not affine:
            break
        chain.append(step)
        affine.append(param)
        tail = step.output[0]
    return chain, affine, eps


def fuse_patterns(graph: onnx.GraphProto) -> onnx.GraphProto:
    """``graph`` with decomposed LayerNorms fused (the same object when nothing matched)."""
    g = _Graph(graph)
    replaced: dict[tuple[str, ...], onnx.NodeProto | None] = {}
    for node in graph.node:
        if tuple(node.output) in replaced or not _last_axis_mean(g, node):
            continue
        found = _match(g, node)
        if found is None:
            continue
        chain, affine, eps = found
        if not affine:
            continue
        scale = affine[0]
        inputs = [node.input[0], scale, *affine[1:]]
        fused = helper.make_node(
            "LayerNormalization",
            inputs,
            [chain[-1].output[0]],
            name=node.name.rsplit("/", 1)[0] + "/LayerNormalization"
            if "/" in node.name
            else node.name + "_ln",
            axis=-1,
            epsilon=eps,
            prunekit_fused_from=[n.name for n in chain],
        )
        for k, member in enumerate(chain):
            replaced[tuple(member.output)] = fused if k == len(chain) - 1 else None
    if not replaced:
        return graph
    copy = onnx.GraphProto()
    copy.CopyFrom(graph)
    del copy.node[:]
    for node in graph.node:
        key = tuple(node.output)
        if key not in replaced:
            copy.node.append(node)
        elif (new := replaced[key]) is not None:
            copy.node.append(new)
    return copy
