"""Bases of the search: the original, and the original without its least important removable units.

With the ``layer`` technique the search also starts from models whose ``k`` least important units
(residual blocks, else identity-shaped layers: LAYER's units, ranked by measured sensitivity, the
cosine lost when each alone is bypassed) are removed, for ``k`` = 1 .. :data:`MAX_REMOVED`. Each base
gets its own width path; on small inputs, where each operator's fixed cost dominates, removing a layer
is often the cheapest way to a latency target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from torch import fx

from prunekit.spec.structured_configs import LayerConfig

from ..pruning.base import PruneContext
from ..pruning.fx_tools import propagate
from ..pruning.graph import example_inputs, feed_batches, to_graph, to_onnx
from ..pruning.layer import Unit, find_units, remove_units, unit_scores

MAX_REMOVED = 3
"""At most this many units are removed (one base per count)."""


@dataclass(frozen=True)
class Base:
    """A model the search narrows: the original (``removed`` empty) or it without some units."""

    model: onnx.ModelProto
    path: Path
    removed: tuple[str, ...] = ()


def _units(gm: fx.GraphModule, ignore: Sequence[str]) -> list[Unit]:
    return [u for u in find_units(gm, LayerConfig(ratio=0.5, ignore=tuple(ignore))) if not u.skip_reason]


def _ranked(model: onnx.ModelProto, context: PruneContext, ignore: Sequence[str]) -> list[str]:
    """Removable unit names, least important first, never two overlapping ones."""
    gm = to_graph(model, context)
    args = example_inputs(context)
    propagate(gm, args)
    units = _units(gm, ignore)
    if not units:
        return []
    scores = unit_scores(gm, units, "sensitivity", feed_batches(context) or [args])
    names: list[str] = []
    taken: set[fx.Node] = set()
    for i in sorted(range(len(units)), key=lambda i: (scores[i], i)):
        covered = units[i].body | {units[i].replaced}
        if not covered & taken:
            names.append(units[i].name)
            taken |= covered
    return names


def _without(model: onnx.ModelProto, context: PruneContext, names: Sequence[str]) -> onnx.ModelProto:
    gm = to_graph(model, context)
    propagate(gm, example_inputs(context))
    remove_units(gm, [u for u in find_units(gm, LayerConfig(ratio=0.5)) if u.name in names])
    return to_onnx(gm, model, context)


def unit_bases(
    model: onnx.ModelProto, context: PruneContext, scratch: Path, ignore: Sequence[str] = ()
) -> list[Base]:
    """The bases without 1 .. :data:`MAX_REMOVED` units (none when the model has no removable unit).

    Each is written to ``scratch`` (``base-<k>.onnx``).
    """
    ranked = _ranked(model, context, ignore)
    bases = []
    for count in range(1, min(MAX_REMOVED, len(ranked)) + 1):
        names = tuple(ranked[:count])
        pruned = _without(model, context, names)
        path = scratch / f"base-{count}.onnx"
        path.write_bytes(pruned.SerializeToString())
        bases.append(Base(pruned, path, names))
    return bases
