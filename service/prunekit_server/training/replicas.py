"""Data-parallel fine-tuning: the processes (ranks) a training loop shares each step with.

A :class:`Replicas` is this process's place among ``world`` ranks that train copies of one model on
one global batch. Every rank draws the same global batch (same seed, same order), trains on its
:func:`shard` of it and averages the gradients, weighted by shard size, so a step's update is the
one a single process makes on the whole batch (up to float summation order). BatchNorm layers see
their rank's shard only; their running statistics are averaged after each step, so the ranks' models
stay identical. Decisions (stop on time) are agreed with :meth:`Replicas.any`; only rank 0 writes
checkpoints, and every rank resumes from rank 0's (:meth:`Replicas.share`).

How the ranks talk (a ``torch.distributed`` process group, Ray, ...) is the caller's: the training
loop only sees this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import torch

from .datasets import Batch, Dataset

if TYPE_CHECKING:
    from prunekit.spec.finetune_configs import FinetuneConfig

    from .losses import FeatureMatch
    from .masks import SparsityMasks

T = TypeVar("T")

__all__ = ["RankWork", "Replicas", "shard"]


class Replicas(Protocol):
    """This process's rank (0 writes checkpoints) among ``world`` ranks training one model."""

    @property
    def rank(self) -> int: ...

    @property
    def world(self) -> int: ...

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor, in place, by its element-wise mean over the ranks (every rank calls it
        with tensors of the same shapes, dtypes and device)."""
        ...

    def share(self, value: T) -> T:
        """Rank 0's ``value`` (picklable), on every rank."""
        ...

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is True on some rank."""
        ...


def average_gradients(replicas: Replicas | None, module: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """Average every trainable parameter's gradient (zeros where a rank has none) and ``loss`` over the
    ranks; the mean loss. Every rank calls this at the same step, so the run follows a one-process
    run of the same seed and global batch; every rank resumes from rank 0's checkpoints."""
    assert replicas is not None
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    mean = loss.reshape(1).float()
    replicas.average([*grads, mean])
    return mean[0]


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """Rank ``rank``'s contiguous share of ``batch``: sizes differ by at most one sample."""
    n = len(batch)
    start, stop = rank * n // world, (rank + 1) * n // world

    def part(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[start:stop]

    inputs = tuple(a[start:stop] for a in batch.inputs)
    return Batch(inputs, part(batch.label), part(batch.target))


@dataclass(frozen=True)
class RankWork:
    """One fine-tuning run, as rank 0 hands it to the other ranks (:meth:`Replicas.share`): the
    arguments of :func:`~.finetune.finetune` but progress and checkpoints, which are rank 0's."""

    student: torch.nn.Module
    teacher: torch.nn.Module | None
    train: Dataset
    eval: Dataset | None
    config: FinetuneConfig
    features: FeatureMatch | None
    masks: SparsityMasks | None
    fixed_batch: int | None
