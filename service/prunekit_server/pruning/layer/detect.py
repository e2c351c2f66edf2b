"""Finding removable units: residual blocks, else identity-shaped layers."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import fx, nn

from prunekit.spec.structured_configs import LayerConfig

from ..fx_tools import (
    common_prefix,
    first_match,
    names_of,
    node_macs,
    output_modules,
    shape_of,
    weighted_module,
)

_ADDS = (operator.add, torch.add)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class Unit:
    """A removable unit: the node replaced (the addition, or the layer's last node), its input, its body."""

    name: str
    kind: Literal["block", "layer"]
    replaced: fx.Node
    source: fx.Node
    body: set[fx.Node]
    modules: list[str] = field(default_factory=list)
    macs: int = 0
    skip_reason: str = ""


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        return True
    return node.op == "call_method" and node.target in ("add", "__add__")


def _ancestors_after(node: fx.Node, floor: int, order: dict[fx.Node, int]) -> set[fx.Node]:
    """``node`` and its ancestors that come after position ``floor``."""
    seen = {node}
    stack = [node]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent not in seen and order[parent] > floor:
                seen.add(parent)
                stack.append(parent)
    return seen


def _descends_from(node: fx.Node, source: fx.Node, order: dict[fx.Node, int]) -> set[fx.Node]:
    """The ancestors of ``node`` (itself included) that are computed from ``source``."""
    candidates = _ancestors_after(node, order[source], order)
    result: set[fx.Node] = set()
    for n in sorted(candidates, key=order.__getitem__):
        if source in n.all_input_nodes or any(p in result for p in n.all_input_nodes):
            result.add(n)
    return result


def _modules_in(gm: fx.GraphModule, body: set[fx.Node]) -> list[str]:
    return [str(n.target) for n in sorted(body, key=lambda n: n.name) if weighted_module(gm, n) is not None]


def _unit_name(modules: Sequence[str], fallback: str) -> str:
    """``prefix.{a,b}`` for the modules under one prefix (``layer1.0.{conv1,conv2}``), or the one path."""
    if len(modules) == 1:
        return modules[0]
    prefix = common_prefix(modules)
    rest = [m[len(prefix) + 1 :] if prefix else m for m in modules]
    if not prefix and len(rest) > 4:
        return fallback
    joined = "{" + ",".join(rest) + "}"
    return f"{prefix}.{joined}" if prefix else joined


def find_blocks(gm: fx.GraphModule) -> list[Unit]:
    """Every residual block of ``gm`` (after :func:`~.fx_tools.propagate`), in graph order."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    units: list[Unit] = []
    for node in gm.graph.nodes:
        if not _is_add(node) or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            continue
        shape = shape_of(node)
        if shape is None or shape_of(a) != shape or shape_of(b) != shape:
            continue
        for skip, branch in ((a, b), (b, a)):
            if order[skip] >= order[branch]:
                continue
            body = _descends_from(branch, skip, order)
            if branch not in body:
                continue
            if any(u not in body and u is not node for n in body for u in n.users):
                continue
            if any(n.op in ("placeholder", "output") for n in body):
                continue
            modules = _modules_in(gm, body)
            if not modules:
                continue
            name = _unit_name(modules, node.name)
            macs = sum(node_macs(gm, n) for n in body)
            units.append(Unit(name, "block", node, skip, body, modules, macs))
            break
    return units


def find_identity_layers(gm: fx.GraphModule) -> list[Unit]:
    """Linear/Conv layers whose output has their input's shape (with a BatchNorm only they feed)."""
    units: list[Unit] = []
    for node in gm.graph.nodes:
        if weighted_module(gm, node) is None or len(node.all_input_nodes) != 1:
            continue
        source = node.all_input_nodes[0]
        if shape_of(node) is None or shape_of(node) != shape_of(source):
            continue
        body = {node}
        last = node
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module":
            follower = gm.get_submodule(str(users[0].target))
            if isinstance(follower, _NORMS) and shape_of(users[0]) == shape_of(node):
                last = users[0]
                body.add(last)
        path = str(node.target)
        units.append(Unit(path, "layer", last, source, body, [path], node_macs(gm, node)))
    return units


def find_units(gm: fx.GraphModule, config: LayerConfig) -> list[Unit]:
    """The removable units (blocks, else identity-shaped layers), with skip reasons set."""
    units = find_blocks(gm) or find_identity_layers(gm)
    outputs = output_modules(gm)
    for unit in units:
        names = [unit.name, *(n for p in unit.modules for n in names_of(gm, p))]
        hit = first_match(config.ignore, names)
        if hit is not None:
            unit.skip_reason = f"matches ignore pattern {hit!r}"
        elif not config.prune_output_layers and any(p in outputs for p in unit.modules):
            unit.skip_reason = "contains an output layer (set prune_output_layers)"
    return units
