"""How the job's data fits the model before fine-tuning: its batch size, and its labels or targets.

:func:`probe_batch` finds whether a converted model only runs at the batch
size it was exported with (an ONNX graph with a static batch dimension often
bakes it into constants); such a model is then trained and evaluated in
chunks of that size. :func:`supervision_violations` checks ``label`` and
``target`` arrays against the model's first output: a label needs one score
per class (a per-sample output with at most one dimension above 1) and a
class id below their count; a target needs as many values per sample as the
output has. Both run the (original) model once or twice on a few samples,
in eval mode, without gradients.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import FieldViolation
from .datasets import Dataset
from .evaluate import batch_tensors, first_output


def sample_batch(dataset: Dataset, size: int) -> tuple[torch.Tensor, ...]:
    """Input tensors (CPU) of ``size`` samples: the first ones, repeated cyclically when there are fewer."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    batch = next(dataset.subset(np.arange(size) % len(dataset)).batches(size))
    return batch_tensors(batch, torch.device("cpu"))


def _run(model: nn.Module, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return first_output(model(*args))
    finally:
        model.train(was)


def probe_batch(model: nn.Module, dataset: Dataset, model_batch: int) -> tuple[int | None, tuple[int, ...]]:
    """``(fixed batch or None, per-sample shape of the first output)`` of ``model`` on ``dataset``.

    The model runs on ``model_batch + 1`` samples; when that fails or does not
    give one output row per sample, the model is fixed to ``model_batch`` (and
    must run at it: its errors propagate).
    """
    other = model_batch + 1
    try:
        out = _run(model, sample_batch(dataset, other))
        if out.ndim >= 1 and out.shape[0] == other:
            return None, tuple(int(d) for d in out.shape[1:])
    except (RuntimeError, ValueError, IndexError):
        pass
    out = _run(model, sample_batch(dataset, model_batch))
    return model_batch, tuple(int(d) for d in out.shape[1:])


def supervision_violations(
    split: str, dataset: Dataset | None, output: tuple[int, ...]
) -> list[FieldViolation]:
    """Why ``dataset``'s labels or targets do not fit a first output of per-sample shape ``output``.

    Violation fields are ``data.<split>:label`` / ``data.<split>:target``.
    """
    if dataset is None or len(dataset) == 0:
        return []
    size = math.prod(output)
    found: list[FieldViolation] = []
    if dataset.label is not None:
        where = f"data.{split}:label"
        if sum(d != 1 for d in output) > 1:
            found.append(
                FieldViolation(
                    where,
                    f"labels need one score per class, but the model's first output has the per-sample "
                    f"shape {list(output)}",
                )
            )
        elif (top := int(dataset.label.max())) >= size:
            found.append(FieldViolation(where, f"class id {top} is out of range for the {size} outputs"))
    if dataset.target is not None and math.prod(dataset.target.shape[1:]) != size:
        found.append(
            FieldViolation(
                f"data.{split}:target",
                f"per-sample target shape {list(dataset.target.shape[1:])} does not fit the model's first "
                f"output ({list(output)}, {size} values)",
            )
        )
    return found
