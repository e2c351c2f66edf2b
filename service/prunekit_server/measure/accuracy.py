"""Accuracy of an ONNX model on real data, and its outputs batched over a whole dataset.

:func:`run_batched` feeds a dataset through an ONNX Runtime session in
batches of the model's batch size: a static leading (batch) dimension shared
by every input fixes it, and the last partial batch is padded (with that
batch's own samples, cyclically) and its outputs cut back; a dynamic one
takes ``batch_size`` and runs the last batch at its size. An output whose
leading dimension is the run's batch is *batch-major* and split per sample;
the first output must be batch-major for accuracy.

Accuracy reads the first output flattened to ``(samples, -1)``:

- with integer ``label`` s: top-1 (arg-max equals the label) and, when the
  output has more than 5 classes, top-5 (the label among the 5 highest); the
  output must hold one score per class (a per-sample shape with at most one
  dimension above 1, e.g. ``(classes,)`` or ``(classes, 1, 1)``) and every
  label must be below the number of classes;
- with float ``target`` s: the mean squared error over every element
  (``target`` reshaped to ``(samples, -1)``; the sizes must agree).

:class:`AccuracyRule` judges a candidate's top-1 against the baseline's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

TOP5_MIN_CLASSES = 6
"""Top-5 is reported only for outputs with more than 5 classes."""


@dataclass(frozen=True)
class Accuracy:
    """Accuracy on labels (``top1``, ``top5`` with > 5 classes) or error on targets (``mse``)."""

    top1: float | None
    top5: float | None
    mse: float | None
    samples: int


@dataclass(frozen=True)
class Outputs:
    """A model's outputs over a dataset.

    ``items`` holds, per sample (when every output is batch-major) or else per
    run, every output; ``first`` is the first output as ``(samples, -1)``
    float64 when it is batch-major, else None; ``first_shape`` its shape per
    sample before flattening.
    """

    items: list[list[np.ndarray]]
    first: np.ndarray | None
    samples: int
    first_shape: tuple[int, ...] = ()


def static_batch(session: Any) -> int | None:
    """The static leading dimension every input of ``session`` shares, or None when it is dynamic."""
    dims = {i.shape[0] if i.shape else None for i in session.get_inputs()}
    if len(dims) == 1:
        (dim,) = dims
        if isinstance(dim, int) and dim > 0:
            return dim
    return None


def _feed(session: Any, arrays: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    feed = {}
    for spec in session.get_inputs():
        if spec.name not in arrays:
            raise ValueError(f"the data has no array for model input {spec.name!r}")
        feed[spec.name] = arrays[spec.name][idx]
    return feed


def run_batched(session: Any, arrays: Mapping[str, np.ndarray], batch_size: int) -> Outputs:
    """Every output of ``session`` for every sample of ``arrays`` (see the module docstring).

    ``arrays`` maps each model input name to its samples (first dimension);
    ``batch_size`` applies when the batch dimension is dynamic.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    counts = {int(a.shape[0]) for a in arrays.values()}
    if len(counts) != 1:
        raise ValueError(f"arrays disagree on the sample count: {sorted(counts)}")
    (n,) = counts
    fixed = static_batch(session)
    step = fixed or batch_size
    runs: list[tuple[int, list[np.ndarray]]] = []
    batch_major = first_major = True
    for start in range(0, n, step):
        idx = np.arange(start, min(start + step, n))
        real = len(idx)
        rows = fixed or real
        if fixed is not None and real < fixed:
            idx = np.resize(idx, fixed)
        raw = [np.asarray(o) for o in session.run(None, _feed(session, arrays, idx))]
        major = [o.ndim >= 1 and o.shape[0] == rows for o in raw]
        batch_major = batch_major and all(major)
        first_major = first_major and bool(major) and major[0]
        runs.append((real, [o[:real] if m else o for o, m in zip(raw, major, strict=True)]))
    first = None
    first_shape: tuple[int, ...] = ()
    if runs and first_major:
        first = np.concatenate([o[0].reshape(real, -1).astype(np.float64) for real, o in runs])
        first_shape = tuple(int(d) for d in runs[0][1][0].shape[1:])
    if batch_major:
        items = [[o[i : i + 1] for o in out] for real, out in runs for i in range(real)]
    else:
        items = [out for _, out in runs]
    return Outputs(items=items, first=first, samples=n, first_shape=first_shape)


def accuracy_of(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    """Top-1 (top-5 too above 5 classes) of ``logits`` ``(n, classes)`` against integer ``labels``.

    ``ValueError`` when the shapes disagree or a label is not below ``classes``.
    """
    n = int(labels.shape[0])
    if logits.ndim != 2 or logits.shape[0] != n:
        raise ValueError(f"logits of shape {logits.shape} do not fit {n} labels")
    if n and int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"class id {int(labels.max())} is out of range for {logits.shape[1]} classes")
    if n == 0:
        return Accuracy(None, None, None, 0)
    labels = labels.astype(np.int64)
    top1 = float(np.mean(np.argmax(logits, axis=1) == labels))
    top5 = None
    if logits.shape[1] >= TOP5_MIN_CLASSES:
        best = np.argpartition(-logits, 4, axis=1)[:, :5]
        top5 = float(np.mean(np.any(best == labels[:, None], axis=1)))
    return Accuracy(top1, top5, None, n)


def mse_of(outputs: np.ndarray, targets: np.ndarray) -> Accuracy:
    """Mean squared error of ``outputs`` ``(n, -1)`` against ``targets`` (``n`` samples, any shape)."""
    n = int(targets.shape[0])
    flat = targets.reshape(n, -1).astype(np.float64)
    if outputs.shape != flat.shape:
        raise ValueError(f"outputs of shape {outputs.shape} do not fit targets of shape {targets.shape}")
    mse = float(np.mean((outputs.astype(np.float64) - flat) ** 2)) if flat.size else 0.0
    return Accuracy(None, None, mse, n)


def measure_accuracy(
    outputs: Outputs, *, label: np.ndarray | None = None, target: np.ndarray | None = None
) -> Accuracy:
    """Accuracy of ``outputs`` on ``label`` s or error on ``target`` s.

    Raises ``ValueError`` when neither is given, when the first output is not
    batch-major, or when its shape does not fit them (labels: one score per
    class, every label below the number of classes).
    """
    if outputs.first is None:
        raise ValueError("the model's first output has no per-sample (batch) dimension")
    if label is not None:
        if sum(d != 1 for d in outputs.first_shape) > 1:
            shape = list(outputs.first_shape)
            raise ValueError(f"labels need one score per class, the output's per-sample shape is {shape}")
        return accuracy_of(outputs.first, label)
    if target is not None:
        return mse_of(outputs.first, target)
    raise ValueError("accuracy needs labels or targets")


@dataclass(frozen=True)
class AccuracyRule:
    """A candidate meets the rule when its top-1 is at most ``max_drop`` below the baseline's.

    ``max_drop`` 0 means no rule. Only top-1 accuracy is judged: error on
    targets is not.
    """

    max_drop: float = 0.0

    def judges(self, baseline: Accuracy | None) -> bool:
        """True when the rule is set and ``baseline`` has a top-1 to compare with."""
        return self.max_drop > 0 and baseline is not None and baseline.top1 is not None

    def met_by(self, candidate: Accuracy | None, baseline: Accuracy | None) -> bool | None:
        """Whether ``candidate`` meets the rule; None when it cannot be judged."""
        if self.max_drop <= 0 or baseline is None or candidate is None:
            return None
        if baseline.top1 is None or candidate.top1 is None:
            return None
        return baseline.top1 - candidate.top1 <= self.max_drop + 1e-12

    def describe(self) -> str:
        """The rule in words."""
        return f"top-1 accuracy at most {self.max_drop * 100:g} points below the baseline's"
