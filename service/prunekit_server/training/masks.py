"""Keeping pruned weights at zero while fine-tuning.

:class:`SparsityMasks` is built from the zeros the pruning left and re-applied
after every optimizer step, so the sparsity (and an N:M pattern) survives
fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


class SparsityMasks:
    """Parameter name -> keep mask (True where a weight may be non-zero); :meth:`apply` zeroes the rest."""

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = {name: mask.to(torch.bool) for name, mask in masks.items()}

    @classmethod
    def from_zeros(cls, module: nn.Module, names: Sequence[str]) -> SparsityMasks:
        """Masks keeping the non-zero entries of the named parameters of ``module``."""
        params = dict(module.named_parameters())
        missing = [name for name in names if name not in params]
        if missing:
            raise KeyError(f"not parameters of the module: {', '.join(missing)}")
        return cls({name: params[name].detach() != 0 for name in names})

    def apply(self, module: nn.Module) -> None:
        """Zero every masked-out weight of ``module`` in place (masks follow the parameters' device)."""
        params = dict(module.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                param = params[name]
                if mask.device != param.device:
                    mask = self.masks[name] = mask.to(param.device)
                param.mul_(mask)

    def zeros(self) -> int:
        """How many weights the masks hold at zero."""
        return sum(int((~mask).sum()) for mask in self.masks.values())
