"""Unit importance: L1/L2, ACTIVATION, TAYLOR, RANDOM and measured SENSITIVITY."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from ..fx_tools import fidelity, outputs_of, run_batches, taylor_products
from .detect import Unit


def _unit_parameters(gm: fx.GraphModule, unit: Unit) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for n in unit.body:
        if n.op == "call_module":
            params += list(gm.get_submodule(str(n.target)).parameters())
    return params


class _Run(fx.Interpreter):
    """Runs the graph, optionally bypassing one unit, recording values of chosen nodes."""

    def __init__(
        self, gm: fx.GraphModule, bypass: Unit | None = None, record: Sequence[fx.Node] = ()
    ) -> None:
        super().__init__(gm)
        self.bypass = bypass
        self.record = set(record)
        self.values: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        if self.bypass is not None and n is self.bypass.replaced:
            result = self.env[self.bypass.source]
        else:
            result = super().run_node(n)
        if n in self.record and isinstance(result, torch.Tensor):
            self.values[n] = result.detach()
        return result


def unit_scores(
    gm: fx.GraphModule,
    units: Sequence[Unit],
    importance: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    seed: int = 0,
) -> np.ndarray:
    """One score per unit: higher is more important."""
    if importance in ("l1", "l2"):
        p = 1 if importance == "l1" else 2
        out = []
        for unit in units:
            total = sum(float(w.detach().abs().double().pow(p).sum()) for w in _unit_parameters(gm, unit))
            out.append(total ** (1.0 / p))
        return np.asarray(out)
    if importance == "random":
        return np.random.default_rng(seed).random(len(units))
    if importance == "activation":
        return _activation(gm, units, batches)
    if importance == "taylor":
        return _taylor(gm, units, batches)
    return _sensitivity(gm, units, batches)


def _activation(
    gm: fx.GraphModule, units: Sequence[Unit], batches: Sequence[tuple[torch.Tensor, ...]]
) -> np.ndarray:
    record = [n for u in units for n in (u.replaced, u.source)]
    totals = np.zeros(len(units))
    with torch.no_grad():
        for batch in batches:
            run = _Run(gm, record=record)
            run.run(*batch)
            for i, unit in enumerate(units):
                out, src = run.values[unit.replaced].double(), run.values[unit.source].double()
                totals[i] += float((out - src).norm() / max(float(src.norm()), 1e-12))
    return totals / max(1, len(batches))


def _taylor(
    gm: fx.GraphModule, units: Sequence[Unit], batches: Sequence[tuple[torch.Tensor, ...]]
) -> np.ndarray:
    params = {id(w): w for u in units for w in _unit_parameters(gm, u)}
    products = dict(zip(params, taylor_products(gm, list(params.values()), batches), strict=True))
    return np.asarray(
        [sum(float(products[id(w)].sum()) for w in _unit_parameters(gm, unit)) for unit in units]
    )


def _sensitivity(
    gm: fx.GraphModule, units: Sequence[Unit], batches: Sequence[tuple[torch.Tensor, ...]]
) -> np.ndarray:
    reference = run_batches(gm, batches)
    drops = []
    with torch.no_grad():
        for unit in units:
            outputs = [
                [o.detach() for o in outputs_of(_Run(gm, bypass=unit).run(*batch))] for batch in batches
            ]
            drops.append(1.0 - fidelity(reference, outputs).cosine_similarity)
    return np.asarray(drops)
