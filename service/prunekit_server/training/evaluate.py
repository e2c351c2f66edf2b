"""Accuracy on labelled data and fidelity of a torch model against a reference.

The numbers are :mod:`..measure`'s: an :class:`~prunekit_server.measure.accuracy.Accuracy`
and a :class:`~prunekit_server.measure.quality.Quality` (fidelity).

A model is called with the dataset's input arrays in the model's input order
(``model(*inputs)``); its first output (the first tensor of a tuple/list, or
the tensor itself) is the logits, flattened to ``(samples, -1)``. Models are
run in eval mode under ``torch.no_grad`` and returned to the mode they were in.

A model that only runs at its own batch size (a converted ONNX graph whose
batch dimension was baked into a constant) is called through
:func:`run_model` with ``fixed_batch``: in chunks of that many samples, the
last chunk filled up with its own samples, cyclically, and the outputs cut
back to the real samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from ..measure.accuracy import Accuracy, accuracy_of
from ..measure.quality import Quality
from .datasets import Batch, Dataset


def first_output(output: object) -> torch.Tensor:
    """The tensor a model returned, or the first tensor of a tuple/list/dict it returned."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output:
        return first_output(output[0])
    if isinstance(output, dict) and output:
        return first_output(next(iter(output.values())))
    raise TypeError(f"the model returned no tensor ({type(output).__name__})")


def batch_tensors(batch: Batch, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The batch's input arrays as tensors on ``device``."""
    return tuple(torch.from_numpy(a).to(device) for a in batch.inputs)


def run_model(
    model: nn.Module, inputs: Sequence[torch.Tensor], fixed_batch: int | None = None
) -> torch.Tensor:
    """The first output of ``model(*inputs)``; with ``fixed_batch``, run in chunks of exactly that size.

    Chunks: samples ``k*b .. k*b+b-1``; a short last chunk is filled up with
    its own samples, cyclically, and every chunk's output is cut back to its
    real samples, so the result has ``len(inputs[0])`` rows (the first output
    must be batch-major). Gradients flow as in one call.
    """
    n = int(inputs[0].shape[0])
    if fixed_batch is None or n == fixed_batch:
        return first_output(model(*inputs))
    chunks = []
    for start in range(0, n, fixed_batch):
        real = min(fixed_batch, n - start)
        index = torch.arange(start, start + real, device=inputs[0].device)
        if real < fixed_batch:
            index = index.repeat(-(-fixed_batch // real))[:fixed_batch]
        chunks.append(first_output(model(*(x[index] for x in inputs)))[:real])
    return torch.cat(chunks)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def predict(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, *, fixed_batch: int | None = None
) -> torch.Tensor:
    """The model's first output for every sample, ``(samples, -1)`` float32 on the CPU.

    ``fixed_batch``: the model runs in chunks of exactly that size (:func:`run_model`).
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for batch in dataset.batches(batch_size):
                out = run_model(model, batch_tensors(batch, device), fixed_batch)
                outputs.append(out.detach().float().reshape(len(batch), -1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


def accuracy(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, *, fixed_batch: int | None = None
) -> Accuracy:
    """Accuracy of ``model`` on ``dataset``'s labels; ``ValueError`` when it has none."""
    if dataset.label is None:
        raise ValueError("accuracy needs a dataset with labels")
    outputs = predict(model, dataset, batch_size, fixed_batch=fixed_batch)
    return accuracy_of(outputs.numpy(), dataset.label)


def fidelity_of(outputs: torch.Tensor, reference: torch.Tensor) -> Quality:
    """Fidelity of ``outputs`` to ``reference`` (both ``(n, -1)`` and of the same shape).

    ``top1_agreement``: fraction of samples whose arg-max agrees; ``cosine_similarity``:
    mean per-sample cosine; ``max_abs_error``: the largest difference of any element.
    """
    if outputs.shape != reference.shape:
        raise ValueError(f"output shapes differ: {tuple(outputs.shape)} vs {tuple(reference.shape)}")
    n = int(outputs.shape[0])
    if n == 0:
        return Quality(0.0, 0.0, 0.0, 0)
    agree = float((outputs.argmax(dim=1) == reference.argmax(dim=1)).float().mean())
    cosine = float(
        functional.cosine_similarity(outputs.double(), reference.double(), dim=1, eps=1e-12).mean()
    )
    max_abs = float((outputs - reference).abs().max())
    return Quality(agree, cosine, max_abs, n)


def fidelity(
    model: nn.Module,
    reference: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    *,
    fixed_batch: int | None = None,
) -> Quality:
    """Fidelity of ``model`` to ``reference`` (e.g. a pruned student to its teacher) on ``dataset``."""
    return fidelity_of(
        predict(model, dataset, batch_size, fixed_batch=fixed_batch),
        predict(reference, dataset, batch_size, fixed_batch=fixed_batch),
    )
