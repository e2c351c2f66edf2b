"""Feature matching, sparsity masks and a time-only budget in the fine-tuning loop."""

from __future__ import annotations

import pytest
import torch

from prunekit_server.training.evaluate import fidelity
from prunekit_server.training.finetune import FinetuneConfig, finetune
from prunekit_server.training.losses import FeatureMatch
from prunekit_server.training.masks import SparsityMasks

from .digits import prune_half, splits, teacher, unlabelled


def test_feature_matching_pulls_a_layer_towards_the_teacher() -> None:
    train, held_out = splits()
    original = teacher()
    student = prune_half(original)
    match = FeatureMatch([(student.conv1, original.conv1), (student.fc, original.fc)], weight=2.0)
    x = torch.from_numpy(held_out.inputs[0][:64])
    assert match.mismatches(student, original, (x,)) == {}
    with torch.no_grad():
        with match.capture():
            student(x)
            original(x)
        # conv1 is untouched by prune_half: the loss is weight * (0 + MSE of the logits) / 2 pairs
        expected = float(torch.nn.functional.mse_loss(student(x), original(x)))
    assert float(match.loss()) == pytest.approx(expected, rel=1e-4)
    before = fidelity(student, original, held_out).cosine_similarity
    config = FinetuneConfig(epochs=0, steps=40, device="cpu", lr=1e-3)
    finetune(student, original, unlabelled(train), None, config, features=match)
    assert fidelity(student, original, held_out).cosine_similarity > before
    assert all(not hooks for hooks in (student.conv1._forward_hooks, original.fc._forward_hooks))


def test_pairs_whose_shapes_differ_are_found() -> None:
    original = teacher()
    student = prune_half(original)
    match = FeatureMatch([(student.fc, original.fc), (student.conv2, original.conv2)])
    x = torch.zeros(2, 1, 8, 8)
    problems = match.mismatches(student, original, (x,))
    assert list(problems) == [1]
    assert "[32, 4, 4] to [16, 4, 4]" in problems[1]
    with pytest.raises(ValueError, match="teacher"):
        finetune(student, None, splits()[0], None, FinetuneConfig(steps=1), features=match)


def test_masks_keep_pruned_weights_at_zero() -> None:
    train, _ = splits()
    model = prune_half(teacher())
    with torch.no_grad():
        model.conv2.weight[:, ::2] = 0.0
        model.fc.weight[::3] = 0.0
    masks = SparsityMasks.from_zeros(model, ["conv2.weight", "fc.weight"])
    zeros = masks.zeros()
    assert zeros == model.conv2.weight.numel() // 2 + model.fc.weight[::3].numel()
    before = model.conv2.weight.detach().clone()
    finetune(model, None, train, None, FinetuneConfig(epochs=0, steps=20, lr=1e-2, device="cpu"), masks=masks)
    assert int((model.conv2.weight == 0).sum() + (model.fc.weight == 0).sum()) == zeros
    assert not torch.equal(model.conv2.weight, before)
    with pytest.raises(KeyError):
        SparsityMasks.from_zeros(model, ["nope.weight"])


def test_a_time_budget_alone_runs_until_the_time_is_spent() -> None:
    train, held_out = splits()
    config = FinetuneConfig(epochs=0, steps=0, max_seconds=0.4, device="cpu", eval_every=10_000)
    lrs: list[float] = []
    result = finetune(prune_half(teacher()), None, train, held_out, config, lambda e: lrs.append(e.lr))
    assert result.stop_reason == "max_seconds"
    assert result.total_steps == 0
    assert result.steps > 5
    assert result.final_metric is not None
    assert result.best_step == result.steps
    assert lrs[-1] < lrs[0]
    with pytest.raises(ValueError, match="max_seconds"):
        FinetuneConfig(epochs=0, steps=0)
