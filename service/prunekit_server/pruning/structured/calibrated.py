"""WANDA and SPARSEGPT channel importance: what losing a channel costs the layers that read it.

A group's channels are scored where they are *read*: at every calibratable layer
(:mod:`.layer_inputs`) among the group's consumers (the layers whose input channels shrink with it),
one score per input channel, averaged over the consumers and normalised by the group's mean like the
other criteria. A group with no calibratable consumer is ranked by l1 (``IMPORTANCE_FALLBACK``).

* ``wanda``: ``sum |w| x ||x_col||_2`` over the channel's weight columns (one pass over the
  calibration batches for every layer at once);
* ``sparsegpt``: the Optimal Brain Surgeon cost of the channel with every other column (and the bias)
  refitted (:func:`..calibrated.refit.channel_saliency`), from ``H = X X^T`` of one layer's inputs at a time,
  computed when a group first asks for that layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import fx, nn

from ..calibrated.refit import channel_saliency
from .groups import prunes_inputs
from .layer_inputs import (
    calibratable,
    evaluating,
    kernel_size,
    layer_inputs,
    layer_rows,
    matrix_of,
    solver,
    with_ones,
)

__all__ = ["CALIBRATED", "CalibratedImportance"]

CALIBRATED = frozenset({"wanda", "sparsegpt"})


def _column_squares(
    gm: fx.GraphModule, layers: Sequence[nn.Module], batches: Sequence[tuple[torch.Tensor, ...]]
) -> dict[nn.Module, torch.Tensor]:
    """Squared L2 norm of each matrix column's inputs over ``batches``, for every layer in one pass."""
    sums: dict[nn.Module, torch.Tensor] = {}

    def hook(layer: nn.Module, args: tuple[Any, ...]) -> None:
        for rows in layer_rows(layer, args[0].detach().float()):
            squares = (rows.double() ** 2).sum(dim=0)
            sums[layer] = sums[layer] + squares if layer in sums else squares

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        with torch.no_grad(), evaluating(gm):
            for batch in batches:
                gm(*batch)
    finally:
        for handle in handles:
            handle.remove()
    return sums


def _per_channel(columns: torch.Tensor, k: int) -> torch.Tensor:
    return columns.reshape(-1, k).sum(dim=1)


class CalibratedImportance(tp.importance.GroupMagnitudeImportance):  # type: ignore[misc]
    """Torch-Pruning importance scoring a group's channels by ``criterion`` (see the module doc)."""

    def __init__(
        self, criterion: str, gm: fx.GraphModule, batches: Sequence[tuple[torch.Tensor, ...]]
    ) -> None:
        super().__init__(p=1, group_reduction="mean", normalizer="mean")
        if criterion not in CALIBRATED:
            raise ValueError(f"unknown calibrated importance {criterion!r}")
        self.criterion, self.gm, self.batches = criterion, gm, batches
        paths = calibratable(gm)
        self.layers = {gm.get_submodule(p) for p, reason in paths.items() if not reason}
        self.scores: dict[nn.Module, torch.Tensor] = {}
        if criterion == "wanda":
            for layer, squares in _column_squares(gm, list(self.layers), batches).items():
                weights = matrix_of(layer).double().abs().sum(dim=0)
                self.scores[layer] = _per_channel(weights * squares.sqrt(), kernel_size(layer)).float()

    def _saliency(self, layer: nn.Module) -> torch.Tensor | None:
        device, dtype = solver()
        matrix = matrix_of(layer).to(device, dtype)
        bias = isinstance(layer.bias, torch.Tensor)
        size = matrix.shape[1] + int(bias)
        hessian = torch.zeros((size, size), dtype=dtype, device=device)
        with evaluating(self.gm):
            for x in layer_inputs(self.gm, layer, self.batches):
                for rows in layer_rows(layer, x):
                    rows = with_ones(rows.to(device, dtype)) if bias else rows.to(device, dtype)
                    hessian += rows.T @ rows
        if not bool(torch.diag(hessian).any()):
            return None
        return channel_saliency(matrix, hessian, kernel_size(layer)).float().cpu()

    def channel_scores(self, layer: nn.Module) -> torch.Tensor | None:
        """One score per input channel of ``layer`` (None when it is not calibratable or saw no input)."""
        if layer not in self.layers:
            return None
        if layer not in self.scores and self.criterion == "sparsegpt":
            found = self._saliency(layer)
            if found is None:
                self.layers.discard(layer)
                return None
            self.scores[layer] = found
        return self.scores.get(layer)

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        scores: list[torch.Tensor] = []
        roots: list[Any] = []
        for item in group:
            dep, idxs = item.dep, item.idxs
            if not prunes_inputs(dep) or not isinstance(dep.target.module, nn.Module):
                continue
            stat = self.channel_scores(dep.target.module)
            index = torch.as_tensor([int(i) for i in idxs], dtype=torch.long)
            if stat is None or int(index.max()) >= stat.numel():
                continue
            scores.append(stat[index].clamp_min(0.0))
            roots.append(item.root_idxs)
        if not scores:
            return None
        return self._normalize(self._reduce(scores, roots), self.normalizer)  # type: ignore[no-any-return]
