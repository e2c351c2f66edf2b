"""The digits task: scikit-learn's bundled 8x8 digits, a small CNN, its ONNX export and npz shards.

Real data shipped inside scikit-learn (``load_digits``: 1797 grey 8x8 images of
the digits 0-9, no download), used by ``make demo`` (``scripts/demo.py``
imports it from beside itself), the fine-tuning bench and the tests (as
``scripts.digits``, from the repository root). scikit-learn comes with the
``dev`` and ``demo`` extras; the server never imports this module. Everything runs on the CPU in seconds.

Contracts:

- The model has one input, :data:`INPUT_NAME` (``"image"``), float32
  ``(batch, 1, 8, 8)`` with values in [0, 1], and one output ``logits``
  ``(batch, 10)``; :data:`INPUTS` is its ``InputSpec`` at batch 1.
- :func:`write_shards` writes ``.npz`` shards that
  :func:`prunekit_server.training.datasets.load_shards` accepts for that
  input: one array named after the input plus ``label`` (int64).
- :func:`digits_split` is the seeded 75/25 train/eval split every consumer
  shares, so "held out" means the same samples everywhere.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch import nn
from torch.nn import functional

from prunekit.v1 import model_pb2
from prunekit_server.training.datasets import LABEL, Dataset, load_shards
from prunekit_server.training.finetune import FinetuneConfig, finetune

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
NUM_CLASSES = 10
EVAL_FRACTION = 0.25
INPUTS = (model_pb2.InputSpec(name=INPUT_NAME, shape=[1, 1, 8, 8], dtype=model_pb2.DATA_TYPE_FLOAT32),)


class SmallCNN(nn.Module):
    """conv(1->c1)-BN-ReLU, pool, conv(c1->c2)-BN-ReLU, conv(c2->c3)-ReLU, global pool, linear(c3->10)."""

    def __init__(self, c1: int = 16, c2: int = 32, c3: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.fc = nn.Linear(c3, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.max_pool2d(functional.relu(self.bn1(self.conv1(x))), 2)
        x = functional.relu(self.bn2(self.conv2(x)))
        x = functional.relu(self.conv3(x))
        out: torch.Tensor = self.fc(functional.adaptive_avg_pool2d(x, 1).flatten(1))
        return out


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits: images ``(n, 1, 8, 8)`` float32 in [0, 1] and int64 labels ``(n,)``."""
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    return images, data.target.astype(np.int64)


def digits_split(eval_fraction: float = EVAL_FRACTION, seed: int = 0) -> tuple[Dataset, Dataset]:
    """The digits as seeded ``(train, eval)`` datasets (``Dataset.split``): 1348 / 449 samples by default."""
    images, label = digits_arrays()
    train, held_out = Dataset([INPUT_NAME], [images], label).split(eval_fraction, seed=seed)
    if held_out is None:
        raise ValueError("eval_fraction leaves no eval samples")
    return train, held_out


def train_digits_cnn(
    epochs: int = 8,
    seed: int = 0,
    *,
    steps: int = 0,
    c1: int = 16,
    c2: int = 32,
    c3: int = 32,
    batch_size: int = 32,
    lr: float = 3e-3,
    train: Dataset | None = None,
    eval: Dataset | None = None,
    eval_every: int = 0,
) -> SmallCNN:
    """A :class:`SmallCNN` trained from a ``seed``-ed init on ``train`` (default: the train split), on CPU.

    AdamW with a cosine schedule for ``epochs`` and/or ``steps`` (the smaller
    wins). With ``eval`` the best-evaluated weights are kept (every
    ``eval_every`` steps, or each epoch); without it, the last ones. Returns
    the model in eval mode. Seeds the global RNGs (see ``finetune``).
    """
    if train is None:
        train, _ = digits_split()
    torch.manual_seed(seed)
    model = SmallCNN(c1, c2, c3)
    config = FinetuneConfig(
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        device="cpu",
        seed=seed,
        eval_every=eval_every,
    )
    finetune(model, None, train, eval, config)
    return model.eval()


def export_onnx(
    model: nn.Module,
    path: Path,
    batch_size: int | None = None,
    opset: int = 17,
    *,
    keep_batchnorm: bool = True,
) -> Path:
    """Write ``model`` (a digits classifier) to ``path`` as ONNX and return ``path``.

    Input :data:`INPUT_NAME`, output :data:`OUTPUT_NAME`; the batch dimension
    is symbolic (``batch``) when ``batch_size`` is None, else fixed. The model
    is exported in eval mode on CPU from a copy; ``model`` is left as it was.
    With ``keep_batchnorm`` the exporter's constant folding is off, so each
    BatchNorm stays a ``BatchNormalization`` node that fine-tuning can train
    (folded into the convolutions, the network trains without normalization
    and recovers less); ONNX Runtime fuses them when it runs the model.
    """
    module = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(batch_size or 1, 1, 8, 8)
    dynamic = None
    if batch_size is None:
        dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes=dynamic,
        opset_version=opset,
        do_constant_folding=not keep_batchnorm,
        dynamo=False,
    )
    return path


def write_shards(
    directory: Path,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    shards: int = 2,
    labels: bool = True,
    *,
    input_name: str = INPUT_NAME,
    prefix: str = "digits",
) -> list[Path]:
    """Write ``x`` (and ``y`` as ``label`` when ``labels``) as ``shards`` npz files; return their paths.

    ``x`` and ``y`` default to all the digits (:func:`digits_arrays`). Files
    are ``<directory>/<prefix>-<i>.npz``, holding the array ``input_name``
    (the model input's name) and, with ``labels``, ``label``; samples are
    split in order into ``shards`` near-equal parts.
    """
    if x is None:
        x, all_labels = digits_arrays()
        y = all_labels if y is None else y
    if labels and y is None:
        raise ValueError("labels=True needs y")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if not 1 <= shards <= len(x):
        raise ValueError(f"shards must be in [1, {len(x)}], got {shards}")
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(len(x)), shards)):
        path = directory / f"{prefix}-{i}.npz"
        arrays: dict[str, Any] = {input_name: x[idx]}
        if labels and y is not None:
            arrays[LABEL] = y[idx].astype(np.int64)
        np.savez(path, **arrays)
        paths.append(path)
    return paths


def load_digit_shards(paths: list[Path]) -> Dataset:
    """Shards written by :func:`write_shards`, read back as a job reads them (validated)."""
    return load_shards(paths, INPUTS)


def unlabelled(dataset: Dataset) -> Dataset:
    """The same samples without labels (for distillation-only runs)."""
    return Dataset(dataset.input_names, list(dataset.inputs))


def prune_half(model: SmallCNN) -> SmallCNN:
    """A copy with half of conv2's output channels removed (lowest L1 norm) and conv3's inputs to match.

    A hand-written structured prune for tests of the training loop, independent
    of the pruning engine.
    """
    c2 = model.conv2.out_channels
    norms = model.conv2.weight.detach().abs().sum(dim=(1, 2, 3))
    keep = norms.argsort(descending=True)[: c2 // 2].sort().values
    pruned = SmallCNN(model.conv1.out_channels, c2 // 2, model.conv3.out_channels)
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
