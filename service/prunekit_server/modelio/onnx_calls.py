"""How many nodes an ONNX model has once its local functions are inlined, counted without inlining.

A function whose body calls another function twice, nested thirty deep, is a 2 KB file that inlines to
2**30 nodes. :func:`inlined_node_count` walks the call graph instead: each function's expanded size is
computed once (its nodes, a call counting as the callee's expanded size, subgraphs included) in an order
where callees come first, so the work is linear in the file's size. Counts saturate just past the cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx

from ..errors import invalid_model

FunctionKey = tuple[str, str, str]
"""A local function's (domain, name, overload), as a calling node's (domain, op_type, overload) names it."""


def _key(node: onnx.NodeProto) -> FunctionKey:
    return node.domain, node.op_type, node.overload


def _all_nodes(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    """``nodes`` and every node of their subgraph attributes, at any depth."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            graphs = [attr.g] if attr.HasField("g") else []
            for graph in [*graphs, *attr.graphs]:
                yield from _all_nodes(graph.node)


def inlined_node_count(model: onnx.ModelProto, cap: int, name: str = "the model") -> int:
    """Nodes of ``model``'s graph once every local function call is inlined; ``cap + 1`` when over ``cap``.

    Raises INVALID_MODEL when local functions call one another in a cycle (they could never be inlined).
    """
    bodies = {(f.domain, f.name, f.overload): f for f in model.functions}
    sizes: dict[FunctionKey, int] = {}

    def size_of(nodes: Iterable[onnx.NodeProto]) -> int:
        total = 0
        for node in _all_nodes(nodes):
            total = min(cap + 1, total + sizes.get(_key(node), 1))
        return total

    for key in _callees_first(bodies, name):
        sizes[key] = size_of(bodies[key].node)
    return size_of(model.graph.node)


def _callees_first(bodies: dict[FunctionKey, onnx.FunctionProto], name: str) -> list[FunctionKey]:
    """The functions in an order where every function comes after those it calls (iterative DFS)."""
    calls = {
        key: sorted({_key(n) for n in _all_nodes(body.node)} & bodies.keys()) for key, body in bodies.items()
    }
    order: list[FunctionKey] = []
    done: set[FunctionKey] = set()
    for root in bodies:
        if root in done:
            continue
        path: list[tuple[FunctionKey, Iterator[FunctionKey]]] = [(root, iter(calls[root]))]
        on_path = {root}
        while path:
            key, pending = path[-1]
            callee = next(pending, None)
            if callee is None:
                path.pop()
                on_path.discard(key)
                done.add(key)
                order.append(key)
            elif callee in on_path:
                raise invalid_model(
                    f"{name} is not a valid ONNX model: local function {callee[1]!r} calls itself "
                    "(directly or through other functions)"
                )
            elif callee not in done:
                path.append((callee, iter(calls[callee])))
                on_path.add(callee)
    return order
