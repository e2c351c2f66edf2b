"""Accuracy and fidelity: the numbers on known outputs, and the digits teacher against itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit_server.measure.accuracy import accuracy_of
from prunekit_server.training.datasets import Dataset
from prunekit_server.training.evaluate import accuracy, fidelity, fidelity_of, first_output

from .digits import prune_half, splits, teacher


def test_accuracy_of_known_logits() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    result = accuracy_of(logits.numpy(), torch.tensor([1, 0, 1, 2]).numpy())
    assert result.top1 == 0.5
    assert result.samples == 4
    assert result.top5 is None  # 3 classes: top-5 does not apply


def test_top5_applies_beyond_five_classes() -> None:
    logits = torch.arange(7.0).repeat(2, 1)  # class 6 most likely, then 5, 4, 3, 2
    result = accuracy_of(logits.numpy(), torch.tensor([6, 2]).numpy())
    assert result.top1 == 0.5
    assert result.top5 == 1.0
    assert accuracy_of(logits.numpy(), torch.tensor([0, 1]).numpy()).top5 == 0.0


def test_fidelity_of_known_outputs() -> None:
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = fidelity_of(reference, reference)
    assert same.top1_agreement == 1.0
    assert same.cosine_similarity == pytest.approx(1.0)
    assert same.max_abs_error == 0.0
    flipped = fidelity_of(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), reference)
    assert flipped.top1_agreement == 0.5
    assert flipped.cosine_similarity == pytest.approx(0.5)
    assert flipped.max_abs_error == 1.0
    assert flipped.samples == 2
    with pytest.raises(ValueError, match="shapes differ"):
        fidelity_of(reference, torch.zeros(2, 3))


def test_on_the_digits_and_modes_are_kept() -> None:
    _, held_out = splits()
    original = teacher()
    original.train()
    assert fidelity(original, original, held_out).top1_agreement == 1.0
    assert original.training
    pruned = fidelity(prune_half(original), original, held_out)
    assert pruned.top1_agreement < 1.0
    assert pruned.samples == len(held_out)
    with pytest.raises(ValueError, match="labels"):
        accuracy(original, Dataset(["image"], list(held_out.inputs)))


def test_first_output_of_containers() -> None:
    t = torch.ones(1)
    assert first_output((t, torch.zeros(1))) is t
    assert first_output({"logits": [t]}) is t
    with pytest.raises(TypeError):
        first_output(None)


def test_multi_input_models_get_inputs_in_order() -> None:
    class Sub(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a - b

    a = torch.tensor([[3.0, 0.0]]).numpy()
    b = torch.tensor([[1.0, 0.0]]).numpy()
    data = Dataset(["a", "b"], [a, b], torch.tensor([0]).numpy())
    assert accuracy(Sub(), data).top1 == 1.0
