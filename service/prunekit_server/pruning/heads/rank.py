"""Head importance: L1/L2 of the head's slices, ACTIVATION, TAYLOR, RANDOM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import fx

from ..fx_tools import taylor_products
from .structure import Attention, _linear


def _slices(
    att: Attention, gm: fx.GraphModule, values: dict[str, torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Per projection, the tensor viewed so that unit h is ``[h]``: Q/K/V rows (of its part), O columns."""
    out = []
    for proj, width in ((att.q, att.group * att.head_dim), (att.k, att.head_dim), (att.v, att.head_dim)):
        w = values[proj.path] if values is not None else _linear(gm, proj.path).weight.detach()
        total = att.heads * width
        out.append(w[proj.part * total : (proj.part + 1) * total].reshape(att.heads, -1))
    w = values[att.o_path] if values is not None else _linear(gm, att.o_path).weight.detach()
    width = att.group * att.head_dim
    out.append(w.reshape(w.shape[0], att.heads, width).transpose(0, 1).reshape(att.heads, -1))
    return out


def head_scores(
    gm: fx.GraphModule,
    attentions: Sequence[Attention],
    importance: str,
    batches: Sequence[tuple[torch.Tensor, ...]],
    seed: int = 0,
) -> list[np.ndarray]:
    """Per attention, one score per head (higher is more important)."""
    if importance in ("l1", "l2"):
        p = 1 if importance == "l1" else 2
        scores = []
        for att in attentions:
            total = torch.stack([s.abs().pow(p).sum(dim=1).double() for s in _slices(att, gm)]).sum(dim=0)
            scores.append(np.asarray(total.pow(1.0 / p).numpy()))
        return scores
    if importance == "random":
        rng = np.random.default_rng(seed)
        return [rng.random(att.heads) for att in attentions]
    if importance == "activation":
        return _activation_scores(gm, attentions, batches)
    return _taylor_scores(gm, attentions, batches)


class _Capture(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n in self.wanted and isinstance(result, torch.Tensor):
            self.values[n] = result.detach()
        return result


def _activation_scores(
    gm: fx.GraphModule, attentions: Sequence[Attention], batches: Sequence[tuple[torch.Tensor, ...]]
) -> list[np.ndarray]:
    totals = [np.zeros(att.heads) for att in attentions]
    wanted = {att.context for att in attentions}
    with torch.no_grad():
        for batch in batches:
            capture = _Capture(gm, wanted)
            capture.run(*batch)
            for i, att in enumerate(attentions):
                ctx = capture.values[att.context].abs().double()
                dims = [d for d in range(ctx.dim()) if d != att.head_axis]
                totals[i] += ctx.mean(dim=dims).reshape(att.heads, att.group).mean(dim=1).numpy()
    return [t / max(1, len(batches)) for t in totals]


def _taylor_scores(
    gm: fx.GraphModule, attentions: Sequence[Attention], batches: Sequence[tuple[torch.Tensor, ...]]
) -> list[np.ndarray]:
    paths = sorted({p for att in attentions for p in att.paths})
    products = dict(
        zip(paths, taylor_products(gm, [_linear(gm, p).weight for p in paths], batches), strict=True)
    )
    return [
        np.asarray(
            torch.stack([s.sum(dim=1).double() for s in _slices(att, gm, products)]).sum(dim=0).numpy()
        )
        for att in attentions
    ]
