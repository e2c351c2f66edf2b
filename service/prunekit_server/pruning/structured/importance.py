"""Channel importance: one score per channel of a dependency group (lowest pruned first).

Every criterion scores a Torch-Pruning group (the root's output channels and
every layer that shrinks with them) and returns one score per root channel,
normalised by the group's mean so that groups compare in a global ranking:

* ``l1`` / ``l2``: the group's weight norms (Torch-Pruning's
  ``GroupMagnitudeImportance``, ``p`` = 1 or 2, averaged over the group);
* ``fpgm``: distance to the other filters (geometric median criterion);
* ``bn_scale``: ``|gamma|`` of the group's BatchNorms; a group without one is
  ranked by ``l1`` (:attr:`Scorer.fallbacks` counts them);
* ``taylor``: ``|weight x gradient|`` summed over the group, the gradient of
  the mean squared outputs accumulated over the feeds (there are no labels);
* ``activation``: mean ``|input|`` of each channel where the group's layers
  read it (Conv / Linear inputs), averaged over the feeds;
* ``wanda`` / ``sparsegpt``: what losing the channel costs the layers reading it, from their
  calibration inputs (:mod:`.calibrated`);
* ``random``: seeded uniform scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import fx, nn

from ..fx_tools import loss_of, outputs_of
from .calibrated import CalibratedImportance

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class _Activation(tp.importance.GroupMagnitudeImportance):  # type: ignore[misc]
    """Mean |input| per channel of every Conv/Linear that reads the group's channels."""

    def __init__(self, stats: dict[nn.Module, torch.Tensor]) -> None:
        super().__init__(p=1, group_reduction="mean", normalizer="mean")
        self.stats = stats

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        scores: list[torch.Tensor] = []
        roots: list[Any] = []
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if layer not in self.stats or getattr(dep.handler, "__name__", "") != "prune_in_channels":
                continue
            stat = self.stats[layer]
            index = torch.as_tensor(list(idxs), dtype=torch.long)
            if int(index.max()) >= stat.numel():
                continue
            scores.append(stat[index])
            roots.append(group[i].root_idxs)
        if not scores:
            return None
        return self._normalize(self._reduce(scores, roots), self.normalizer)  # type: ignore[no-any-return]


def _input_statistics(
    module: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]
) -> dict[nn.Module, torch.Tensor]:
    """Mean |input| per input channel of every Conv and Linear, over ``batches``."""
    sums: dict[nn.Module, torch.Tensor] = {}
    counts: dict[nn.Module, int] = {}

    def hook(layer: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach().abs().float()
        dim = x.dim() - 1 if isinstance(layer, nn.Linear) else 1
        per_channel = x.transpose(0, dim).reshape(x.shape[dim], -1).mean(1)
        sums[layer] = sums.get(layer, torch.zeros_like(per_channel)) + per_channel
        counts[layer] = counts.get(layer, 0) + 1

    handles = [
        m.register_forward_pre_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Linear, *_CONV_LINEAR))
    ]
    try:
        with torch.no_grad():
            for batch in batches:
                module(*batch)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: total / counts[layer] for layer, total in sums.items()}


def _accumulate_gradients(module: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]) -> None:
    """Fill every parameter's ``.grad`` with the gradient of the outputs' mean square, summed over batches."""
    module.zero_grad(set_to_none=True)
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    with torch.enable_grad():
        for batch in batches:
            loss_of(outputs_of(module(*batch))).backward()  # type: ignore[no-untyped-call]


class Scorer:
    """Scores the groups of one round with one criterion (see the module doc).

    Data-driven criteria run the model on ``batches`` when created; call
    :meth:`close` to drop the gradients they leave.
    """

    def __init__(
        self, name: str, module: fx.GraphModule, batches: Sequence[tuple[torch.Tensor, ...]], seed: int = 0
    ) -> None:
        self.name = name
        self.fallbacks = 0
        self._module = module
        self._generator = torch.Generator().manual_seed(seed)
        self._l1 = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer="mean")
        criteria: dict[str, Callable[[], Any]] = {
            "l1": lambda: self._l1,
            "l2": lambda: tp.importance.GroupMagnitudeImportance(
                p=2, group_reduction="mean", normalizer="mean"
            ),
            "fpgm": lambda: tp.importance.FPGMImportance(p=2, normalizer="mean"),
            "bn_scale": lambda: tp.importance.BNScaleImportance(normalizer="mean"),
            "taylor": lambda: tp.importance.GroupTaylorImportance(normalizer="mean"),
            "activation": lambda: _Activation(_input_statistics(module, batches)),
            "wanda": lambda: CalibratedImportance("wanda", module, batches),
            "sparsegpt": lambda: CalibratedImportance("sparsegpt", module, batches),
            "random": lambda: None,
        }
        if name not in criteria:
            raise ValueError(f"unknown importance {name!r}")
        if name == "taylor":
            _accumulate_gradients(module, batches)
        self._criterion = criteria[name]()

    def __call__(self, group: Any) -> torch.Tensor:
        """One non-negative score per root channel of ``group``."""
        width = len(group[0].idxs)
        if self.name == "random":
            return torch.rand(width, generator=self._generator)
        try:
            scores = self._criterion(group)
        except (RuntimeError, ValueError, AttributeError, IndexError, TypeError):
            scores = None  # e.g. a layer without a gradient: ranked by l1 instead
        if scores is None or scores.numel() != width or not bool(torch.isfinite(scores).all()):
            self.fallbacks += 1
            scores = self._l1(group)
        if scores is None or scores.numel() != width:
            return torch.ones(width)
        return torch.nan_to_num(scores.detach().float().cpu(), nan=0.0)

    def close(self) -> None:
        """Drop the gradients a TAYLOR scorer accumulated."""
        if self.name == "taylor":
            self._module.zero_grad(set_to_none=True)
