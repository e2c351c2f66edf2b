"""The digits task shared by the training tests: scikit-learn's bundled 8x8 digits, a small CNN, a pruner.

``load_digits`` ships inside scikit-learn (no download). The teacher is
trained once per process and cached; tests get deep copies.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch import nn
from torch.nn import functional

from prunekit.v1 import model_pb2
from prunekit_server.training.datasets import Dataset, load_shards
from prunekit_server.training.finetune import FinetuneConfig, finetune

INPUTS = (model_pb2.InputSpec(name="image", shape=[1, 1, 8, 8], dtype=model_pb2.DATA_TYPE_FLOAT32),)


class SmallCNN(nn.Module):
    """conv(1->c1)-BN-ReLU, pool, conv(c1->c2)-BN-ReLU, conv(c2->32)-ReLU, global pool, linear(32->10)."""

    def __init__(self, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.max_pool2d(functional.relu(self.bn1(self.conv1(x))), 2)
        x = functional.relu(self.bn2(self.conv2(x)))
        x = functional.relu(self.conv3(x))
        out: torch.Tensor = self.fc(functional.adaptive_avg_pool2d(x, 1).flatten(1))
        return out


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images ``(1797, 1, 8, 8)`` float32 in [0, 1] and int64 labels."""
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    return images, data.target.astype(np.int64)


def write_shards(directory: Path, shards: int = 2, labels: bool = True) -> list[Path]:
    """The digits as ``shards`` npz files (``image`` and, with ``labels``, ``label``)."""
    images, label = digits_arrays()
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(len(label)), shards)):
        path = directory / f"digits-{i}.npz"
        arrays: dict[str, Any] = {"image": images[idx]}
        if labels:
            arrays["label"] = label[idx]
        np.savez(path, **arrays)
        paths.append(path)
    return paths


@functools.cache
def _splits() -> tuple[Dataset, Dataset]:
    images, label = digits_arrays()
    train, held_out = Dataset(["image"], [images], label).split(0.25, seed=0)
    assert held_out is not None
    return train, held_out


def splits() -> tuple[Dataset, Dataset]:
    """(train, eval) digits, 75/25, seeded."""
    return _splits()


@functools.cache
def _teacher_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallCNN()
    train, held_out = splits()
    config = FinetuneConfig(epochs=0, steps=300, batch_size=32, lr=3e-3, device="cpu", eval_every=100)
    finetune(model, None, train, held_out, config)
    return copy.deepcopy(model.state_dict())


def teacher() -> SmallCNN:
    """The CNN trained on the digits (cached; a fresh copy each call, in eval mode)."""
    model = SmallCNN()
    model.load_state_dict(_teacher_state())
    return model.eval()


def prune_half(model: SmallCNN) -> SmallCNN:
    """A copy with half of conv2's output channels removed (lowest L1 norm) and conv3's inputs to match."""
    c2 = model.conv2.out_channels
    norms = model.conv2.weight.detach().abs().sum(dim=(1, 2, 3))
    keep = norms.argsort(descending=True)[: c2 // 2].sort().values
    pruned = SmallCNN(model.conv1.out_channels, c2 // 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name in (
        "conv2.weight",
        "conv2.bias",
        "bn2.weight",
        "bn2.bias",
        "bn2.running_mean",
        "bn2.running_var",
    ):
        state[name] = state[name][keep]
    state["conv3.weight"] = state["conv3.weight"][:, keep]
    pruned.load_state_dict(state)
    return pruned.eval()


def unlabelled(dataset: Dataset) -> Dataset:
    """The same samples without labels."""
    return Dataset(dataset.input_names, list(dataset.inputs))


def load_digit_shards(directory: Path) -> Dataset:
    """Round trip through npz shards, as a job would read them."""
    return load_shards(write_shards(directory), INPUTS)
