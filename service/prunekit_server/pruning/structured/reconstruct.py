"""SPARSEGPT's structured reconstruction: refit the layers whose input channels a round removed.

Which channels survive comes from the pruning itself: :class:`Survivors` reads every Torch-Pruning
group just before it prunes (its in-channel and out-channel index lists, in the numbering of that
moment) and keeps, per layer, the original indices still there. Before refitting a layer, its pruned
weight must equal the original's kept rows and columns; a layer where it does not is left as pruned
(``RECONSTRUCTION_SKIPPED``), so a wrong index map can never corrupt weights silently.

:func:`reconstruct` then walks the calibratable layers whose inputs shrank in graph order, one at a
time: on each calibration batch it reads the layer's input in the model *before* the round (the
targets ``Y = M x + b`` on the kept output rows) and in the pruned model *with the layers before it
already refitted* (the rows ``x~`` it now reads), accumulates ``C = Y X~^T`` and ``G = X~ X~^T`` (a
column of ones for the bias), and replaces the kept weights (and bias) by
:func:`..calibrated.refit.refit`'s least-squares solution. One layer's statistics are held at a time.
Depthwise and grouped convolutions, whose inputs go with their outputs, are left as pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from ..calibrated.refit import refit
from ..fx_tools import origin
from .groups import prunes_inputs
from .layer_inputs import block_samples, calibratable, layer_inputs, layer_rows, matrix_of, solver, with_ones

__all__ = ["Survivors", "reconstruct"]


class Survivors:
    """Original input and output channel indices each Linear / Conv keeps through one round."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.paths: dict[nn.Module, str] = {}
        self.widths: dict[str, tuple[int, int]] = {}
        for path, module in gm.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, (nn.Linear, nn.Conv2d)) and isinstance(weight, torch.Tensor):
                self.paths[module] = path
                self.widths[path] = (int(weight.shape[0]), int(weight.shape[1]))
        self.inputs: dict[str, list[int]] = {}
        self.outputs: dict[str, list[int]] = {}

    def record(self, group: Any) -> None:
        """Note what ``group`` (about to be pruned) removes."""
        gone: dict[tuple[str, bool], set[int]] = {}
        for dep, idxs in group:
            path = self.paths.get(dep.target.module)
            if path is not None:
                gone.setdefault((path, prunes_inputs(dep)), set()).update(int(i) for i in idxs)
        for (path, reads), removed in gone.items():
            kept = self.inputs if reads else self.outputs
            current = kept.get(path, list(range(self.widths[path][1 if reads else 0])))
            kept[path] = [index for position, index in enumerate(current) if position not in removed]

    def kept(self, path: str) -> tuple[list[int], list[int]]:
        """The kept (output rows, input channels) of ``path``."""
        out_width, in_width = self.widths[path]
        return self.outputs.get(path, list(range(out_width))), self.inputs.get(path, list(range(in_width)))


def _targets(layer: nn.Module, rows: slice | list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = layer.bias if isinstance(layer.bias, torch.Tensor) else None
    return matrix_of(layer)[rows], (bias.detach()[rows] if bias is not None else None)


def _statistics(
    before: tuple[nn.Module, nn.Module],
    after: tuple[nn.Module, nn.Module],
    outs: list[int],
    batches: Sequence[tuple[torch.Tensor, ...]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``C = Y X~^T`` and ``G = X~ X~^T`` of one layer (see the module doc)."""
    device, dtype = solver()
    (reference, old), (model, layer) = before, after
    weight, bias = (t.to(device, dtype) if t is not None else None for t in _targets(old, outs))
    assert weight is not None
    columns = matrix_of(layer).shape[1] + (1 if bias is not None else 0)
    cross = torch.zeros((weight.shape[0], columns), dtype=dtype, device=device)
    gram = torch.zeros((columns, columns), dtype=dtype, device=device)
    pairs = zip(layer_inputs(reference, old, batches), layer_inputs(model, layer, batches), strict=True)
    for x_before, x_after in pairs:
        step = min(block_samples(old, x_before), block_samples(layer, x_after))
        blocks = zip(layer_rows(old, x_before, step), layer_rows(layer, x_after, step), strict=True)
        for rows_before, rows_after in blocks:
            y = rows_before.to(device, dtype) @ weight.T
            rows = rows_after.to(device, dtype)
            if bias is not None:
                y += bias
                rows = with_ones(rows)
            cross += y.T @ rows
            gram += rows.T @ rows
    return cross, gram


def _matches(old: nn.Module, layer: nn.Module, outs: list[int], ins: list[int]) -> bool:
    weight, now = old.weight, layer.weight
    assert isinstance(weight, torch.Tensor)
    assert isinstance(now, torch.Tensor)
    if len(outs) != now.shape[0] or len(ins) != now.shape[1]:
        return False
    return torch.equal(weight.detach()[outs][:, ins], now.detach())


def _refit_layer(
    reference: fx.GraphModule,
    gm: fx.GraphModule,
    path: str,
    outs: list[int],
    batches: Sequence[tuple[torch.Tensor, ...]],
) -> None:
    old, layer = reference.get_submodule(path), gm.get_submodule(path)
    cross, gram = _statistics((reference, old), (gm, layer), outs, batches)
    if not bool(torch.diag(gram).any()):
        return
    weight, bias = _targets(layer, slice(None))
    prior = weight if bias is None else torch.cat([weight, bias[:, None]], dim=1)
    solved = refit(cross, gram, prior.to(cross)).cpu()
    parameters = dict(layer.named_parameters(recurse=False))
    with torch.no_grad():
        parameters["weight"].copy_(solved[:, : weight.shape[1]].reshape(parameters["weight"].shape))
        if bias is not None:
            parameters["bias"].copy_(solved[:, -1])


def reconstruct(
    reference: fx.GraphModule,
    gm: fx.GraphModule,
    survivors: Survivors,
    batches: Sequence[tuple[torch.Tensor, ...]],
) -> list[str]:
    """Refit the layers of ``gm`` whose inputs ``survivors`` shrank; ``reference`` is ``gm`` before the
    round. Returns the warnings (layers left as pruned, with why)."""
    problems = calibratable(gm)
    warnings: list[str] = []
    order = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    for path in dict.fromkeys(p for p in order if p in survivors.inputs):
        reason = problems.get(path, "not a Linear or Conv layer")
        if isinstance(gm.get_submodule(path), nn.Conv2d) and gm.get_submodule(path).groups != 1:
            continue  # depthwise / grouped: its input channels left with its output channels
        outs, ins = survivors.kept(path)
        if not reason and not _matches(reference.get_submodule(path), gm.get_submodule(path), outs, ins):
            reason = "its pruned weight is not the original's kept rows and columns"
        if reason:
            warnings.append(f"RECONSTRUCTION_SKIPPED: {origin(gm, path).name}: {reason}")
            continue
        try:
            _refit_layer(reference, gm, path, outs, batches)
        except (RuntimeError, ValueError) as exc:
            warnings.append(f"RECONSTRUCTION_SKIPPED: {origin(gm, path).name}: {exc}"[:300])
    return warnings
