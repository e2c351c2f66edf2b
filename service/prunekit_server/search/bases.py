"""Bases of the search: the original, it without its least important removable units, and it factorized.

With the ``layer`` technique the search also starts from models whose ``k`` least important units
(residual blocks, else identity-shaped layers: LAYER's units, ranked by measured sensitivity, the
cosine lost when each alone is bypassed) are removed, for ``k`` = 1 .. :data:`MAX_REMOVED`. Each base
gets its own width path; on small inputs, where each operator's fixed cost dominates, removing a layer
is often the cheapest way to a latency target.

With the ``low_rank`` technique the search also starts from the model with its layers factorized by
truncated SVD (LOW_RANK) at each kept energy of :data:`LOW_RANK_ENERGIES`: layers whose spectrum is
flat stay dense (their rank would not lower MACs), the others become two layers whose rank dimension is
an ordinary channel group, so the width search then cuts ranks where they cost least per millisecond
saved, exactly as it cuts channels: ranks chosen by the measured latency target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from torch import fx

from prunekit.spec.low_rank_configs import LowRankConfig
from prunekit.spec.structured_configs import LayerConfig

from ..errors import ServiceError
from ..pruning.base import PruneContext
from ..pruning.fx_tools import propagate
from ..pruning.graph import example_inputs, feed_batches, to_graph, to_onnx
from ..pruning.layer import Unit, find_units, remove_units, unit_scores
from ..pruning.low_rank import prune_low_rank

MAX_REMOVED = 3
"""At most this many units are removed (one base per count)."""
LOW_RANK_ENERGIES = (0.95, 0.8)
"""Kept energies of the factorized bases (one base each)."""


@dataclass(frozen=True)
class Base:
    """A model the search narrows: the original, it without some units, or it factorized."""

    model: onnx.ModelProto
    path: Path
    removed: tuple[str, ...] = ()
    factorized: tuple[str, ...] = ()
    """Layers factorized in two (the ``low_rank`` technique)."""
    energy: float = 0.0
    """The kept energy they were factorized at."""

    @property
    def derived(self) -> bool:
        """Whether this is not the original."""
        return bool(self.removed or self.factorized)

    @property
    def label(self) -> str:
        """What this base is, for progress lines."""
        if self.factorized:
            return f"{len(self.factorized)} layer(s) factorized at energy {self.energy:g}"
        return f"without {', '.join(self.removed)}" if self.removed else "the original"


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


def low_rank_bases(
    model: onnx.ModelProto, context: PruneContext, scratch: Path, ignore: Sequence[str] = ()
) -> tuple[list[Base], list[str]]:
    """The factorized bases, one per :data:`LOW_RANK_ENERGIES` that factorizes something new, and why
    no (more) could be made (a model without a factorizable layer is no error here).

    Each is written to ``scratch`` (``low-rank-<energy>.onnx``).
    """
    bases: list[Base] = []
    seen: set[tuple[tuple[str, int], ...]] = set()
    for energy in LOW_RANK_ENERGIES:
        try:
            result = prune_low_rank(model, LowRankConfig(energy=energy, ignore=tuple(ignore)), context)
        except ServiceError as exc:
            return bases, [f"LOW_RANK_NOT_SEARCHED: {exc.message}"]
        ranks = tuple((i.name, i.rank) for i in result.layers if i.rank)
        if result.model is None or not ranks or ranks in seen:
            continue
        seen.add(ranks)
        factorized = tuple(name for name, _ in ranks)
        path = scratch / f"low-rank-{energy:g}.onnx"
        path.write_bytes(result.model.SerializeToString())
        bases.append(Base(result.model, path, factorized=factorized, energy=energy))
    if not bases:
        return [], ["LOW_RANK_NOT_SEARCHED: no layer's rank lowers its MACs at the search's energies"]
    return bases, []
