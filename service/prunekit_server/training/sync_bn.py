"""BatchNorm over the whole global batch while ranks fine-tune data-parallel (see :mod:`.replicas`).

``torch.nn.SyncBatchNorm`` runs on GPUs only; :func:`synced_batchnorm` does the same on any device
through the ranks' :class:`~.replicas.Replicas`: in training mode each BatchNorm layer sums its
shard's per-channel sum and count over the ranks, then the squared deviations from that mean (two
passes, in at least float32), normalises with the global batch's mean and (biased) variance, and
updates its running statistics with them (unbiased variance), as one process does on the whole
batch. Backward sums the statistics' gradients over the ranks, so with the ranks' loss scaling and
gradient averaging a step is one process's up to float rounding. In eval mode the layers use their
running statistics, unchanged.

Every rank must run its layers the same number of times per step (true of one model on shards of
one batch); models run in fixed-size chunks (``fixed_batch``) are not synced, as the ranks' chunk
counts may differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .replicas import Replicas

__all__ = ["synced_batchnorm"]


class _SumOverRanks(torch.autograd.Function):
    """The element-wise sum of a tensor over the ranks; its gradient is summed alike."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, replicas: Replicas) -> torch.Tensor:
        ctx.replicas = replicas
        total = tensor.detach().clone()
        replicas.average([total])
        return total * replicas.world

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        replicas: Replicas = ctx.replicas
        total = grads[0].detach().clone().contiguous()
        replicas.average([total])
        return total * replicas.world, None


def _synced_forward(bn: nn.modules.batchnorm._BatchNorm, replicas: Replicas) -> Callable[[torch.Tensor], Any]:
    plain = type(bn).forward

    def forward(x: torch.Tensor) -> Any:
        if not bn.training and bn.running_mean is not None:
            return plain(bn, x)
        channels = x.shape[1]
        shape = [1, channels] + [1] * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        count = xf.new_tensor([x.numel() / channels])
        total = _SumOverRanks.apply(torch.cat([xf.sum(dims), count]), replicas)  # type: ignore[no-untyped-call]
        n = total[-1]
        if float(n.detach()) <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got {x.shape}")
        mean = total[:channels] / n
        centred = xf - mean.reshape(shape)
        squares = _SumOverRanks.apply((centred * centred).sum(dims), replicas)  # type: ignore[no-untyped-call]
        var = squares / n  # two passes: no cancellation when the mean is large against the spread
        y = centred * torch.rsqrt(var.reshape(shape) + bn.eps)
        if bn.weight is not None and bn.bias is not None:
            y = y * bn.weight.reshape(shape) + bn.bias.reshape(shape)
        if bn.training and bn.running_mean is not None and bn.running_var is not None:
            _track(bn, mean.detach(), var.detach(), float(n.detach()))
        return y.to(x.dtype)

    return forward


def _track(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
    """Update ``bn``'s running statistics with a batch of ``n`` values per channel, as torch does."""
    assert bn.running_mean is not None
    assert bn.running_var is not None
    factor = bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if factor is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    factor = 0.0 if factor is None else factor
    unbiased = var * (n / max(n - 1.0, 1.0))
    bn.running_mean.mul_(1.0 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1.0 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)


@contextmanager
def synced_batchnorm(module: nn.Module, replicas: Replicas | None) -> Iterator[int]:
    """Within the block, ``module``'s BatchNorm layers normalise over all ranks (see the module's doc);
    yields how many layers are synced (0 without ``replicas``)."""
    if replicas is None or replicas.world <= 1:
        yield 0
        return
    layers = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, torch.jit.ScriptModule)
    ]
    for layer in layers:
        setattr(layer, "forward", _synced_forward(layer, replicas))  # noqa: B010 (an instance's own)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            delattr(layer, "forward")
