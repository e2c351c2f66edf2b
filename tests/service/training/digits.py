"""The digits task for the training tests: a re-export of :mod:`scripts.digits`.

Adds the cached splits and the cached teacher (trained once per process;
tests get fresh copies).
"""

from __future__ import annotations

import copy
import functools

import torch
from scripts.digits import (
    INPUTS,
    SmallCNN,
    digits_arrays,
    digits_split,
    load_digit_shards,
    prune_half,
    train_digits_cnn,
    unlabelled,
    write_shards,
)

from prunekit_server.training.datasets import Dataset

__all__ = [
    "INPUTS",
    "SmallCNN",
    "digits_arrays",
    "load_digit_shards",
    "prune_half",
    "splits",
    "teacher",
    "unlabelled",
    "write_shards",
]


@functools.cache
def _splits() -> tuple[Dataset, Dataset]:
    return digits_split()


def splits() -> tuple[Dataset, Dataset]:
    """(train, eval) digits, 75/25, seeded (cached)."""
    return _splits()


@functools.cache
def _teacher_state() -> dict[str, torch.Tensor]:
    train, held_out = splits()
    model = train_digits_cnn(0, 0, steps=300, train=train, eval=held_out, eval_every=100)
    return copy.deepcopy(model.state_dict())


def teacher() -> SmallCNN:
    """The CNN trained on the digits (cached; a fresh copy each call, in eval mode)."""
    model = SmallCNN()
    model.load_state_dict(_teacher_state())
    return model.eval()
