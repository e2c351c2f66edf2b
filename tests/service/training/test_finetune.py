"""The fine-tuning loop on the digits: accuracy, recovery after pruning, distillation, budgets, schedules."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from prunekit_server.training.datasets import Dataset
from prunekit_server.training.evaluate import accuracy, fidelity
from prunekit_server.training.finetune import (
    FinetuneConfig,
    FinetuneEvent,
    distillation_loss,
    finetune,
    lr_factor,
    resolve_device,
)

from .digits import SmallCNN, prune_half, splits, teacher, unlabelled


def _config(**overrides: object) -> FinetuneConfig:
    values: dict[str, object] = {"epochs": 0, "steps": 40, "lr": 1e-3, "device": "cpu"}
    values.update(overrides)
    return FinetuneConfig.from_dict(values)


def test_the_small_cnn_learns_the_digits() -> None:
    _train, held_out = splits()
    result = accuracy(teacher(), held_out)
    assert result.top1 > 0.9
    assert result.top5 is not None
    assert result.top5 >= result.top1
    assert result.samples == len(held_out) == 449


def test_cross_entropy_recovers_a_channel_pruned_copy() -> None:
    train, held_out = splits()
    student = prune_half(teacher())
    before = accuracy(student, held_out).top1
    events: list[FinetuneEvent] = []
    result = finetune(student, None, train, held_out, _config(steps=100, eval_every=50), events.append)
    after = accuracy(student, held_out).top1
    assert before < 0.85 < 0.9 < after
    assert result.metric_name == "accuracy"
    assert result.best_metric == pytest.approx(after)
    assert result.steps == 100
    assert result.stop_reason == "budget"
    assert len(result.losses) == 100
    assert [e.step for e in events] == list(range(1, 101))
    assert events[0].eval_metric is None
    assert events[-1].eval_metric == pytest.approx(after)
    assert events[-1].epoch == 100 // (len(train) // 32)
    assert not student.training


def test_distillation_alone_on_unlabelled_data_closes_the_fidelity_gap() -> None:
    train, held_out = splits()
    original = teacher()
    student = prune_half(original)
    gap_before = 1.0 - fidelity(student, original, held_out).top1_agreement
    cosine_before = fidelity(student, original, held_out).cosine_similarity
    result = finetune(
        student, original, unlabelled(train), unlabelled(held_out), _config(steps=100, eval_every=50)
    )
    after = fidelity(student, original, held_out)
    assert result.metric_name == "teacher_agreement"
    assert result.best_metric == pytest.approx(after.top1_agreement)
    assert 1.0 - after.top1_agreement < gap_before / 3
    assert after.cosine_similarity > cosine_before
    assert accuracy(student, held_out).top1 > 0.9
    assert all(not p.requires_grad or p.grad is None for p in original.parameters())


def test_distillation_mixed_with_labels() -> None:
    train, held_out = splits()
    original = teacher()
    student = prune_half(original)
    finetune(student, original, train, held_out, _config(steps=60, alpha=0.7, temperature=2.0))
    assert accuracy(student, held_out).top1 > 0.9


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_both_optimizers_train_from_scratch(optimizer: str) -> None:
    train, _ = splits()
    torch.manual_seed(1)
    model = SmallCNN()
    lr = 0.05 if optimizer == "sgd" else 3e-3
    result = finetune(
        model, None, train, None, _config(steps=80, optimizer=optimizer, lr=lr, weight_decay=1e-4)
    )
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:10])
    assert result.metric_name == "none"
    assert result.best_metric is None


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules_with_warmup(schedule: str) -> None:
    train, _ = splits()
    lrs: list[float] = []
    config = _config(steps=20, schedule=schedule, warmup_steps=5, lr=0.01)
    finetune(prune_half(teacher()), None, train, None, config, lambda e: lrs.append(e.lr))
    # An event's lr is the rate for the next step; the first step ran at lr/5.
    factor = lr_factor(config, 20)
    assert lrs == pytest.approx([0.01 * factor(i) for i in range(1, 21)])
    assert factor(0) == pytest.approx(0.2)
    assert factor(4) == pytest.approx(1.0)
    assert lrs[:4] == sorted(lrs[:4])
    tail = lrs[4:]
    if schedule == "constant":
        assert tail == pytest.approx([0.01] * 16)
    else:
        assert tail == sorted(tail, reverse=True)
        assert tail[-1] == pytest.approx(0.0, abs=1e-12)
    if schedule == "linear":
        steps = np.diff(tail)
        assert np.allclose(steps, steps[0])


def test_gradient_clipping_bounds_the_update() -> None:
    train, _ = splits()
    model = prune_half(teacher())
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    config = _config(steps=1, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=1e-3, schedule="constant")
    finetune(model, None, train, None, config)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < float((after - before).norm()) <= 1e-3 * (1 + 1e-4)


def test_early_stopping_on_a_metric_that_no_longer_improves() -> None:
    train, held_out = splits()
    model = teacher()
    result = finetune(model, None, train, held_out, _config(steps=400, lr=0.0, eval_every=5, patience=2))
    assert result.stop_reason == "early_stopping"
    # lr 0 leaves the weights alone (BatchNorm statistics still move): it stops 2 evaluations after the best.
    assert result.best_step is not None
    assert result.steps == result.best_step + 2 * 5 < 400


def test_best_weights_are_restored() -> None:
    train, held_out = splits()
    model = teacher()
    before = accuracy(model, held_out).top1
    config = _config(steps=20, lr=1.0, optimizer="sgd", eval_every=1, schedule="constant")
    result = finetune(model, None, train, held_out, config)
    assert result.best_metric is not None
    assert result.final_metric is not None
    assert result.best_metric > result.final_metric
    assert accuracy(model, held_out).top1 == pytest.approx(result.best_metric)
    assert result.best_metric <= before + 0.01


def test_max_seconds_is_honoured() -> None:
    train, _ = splits()
    began = time.monotonic()
    result = finetune(prune_half(teacher()), None, train, None, _config(steps=100_000, max_seconds=0.5))
    assert result.stop_reason == "max_seconds"
    assert 0.5 <= result.seconds < 2.0
    assert time.monotonic() - began < 5.0
    assert 0 < result.steps < 100_000


def test_epochs_budget_and_mse_on_targets() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 2))).astype(np.float32)
    data = Dataset(["x"], [x], target=y)
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    result = finetune(model, None, data, data, _config(epochs=30, steps=0, lr=0.05, batch_size=32))
    assert result.steps == result.total_steps == 30 * 8
    assert result.epochs == 30
    assert result.metric_name == "neg_mse"
    assert result.best_metric is not None
    assert -result.best_metric < 0.01


def test_distillation_loss_is_zero_on_identical_logits() -> None:
    logits = torch.randn(8, 10)
    assert float(distillation_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, torch.randn(8, 10), 4.0)) > 0


def test_unlabelled_data_needs_a_teacher() -> None:
    train, _ = splits()
    with pytest.raises(ValueError, match="teacher"):
        finetune(SmallCNN(), None, unlabelled(train), None, _config())


def test_config_json_round_trip_and_validation() -> None:
    config = FinetuneConfig(
        epochs=3, steps=500, max_seconds=60.0, optimizer="sgd", schedule="linear", warmup_steps=10, patience=2
    )
    text = json.dumps(config.to_dict())
    assert json.loads(text)["technique"] == "finetune"
    assert FinetuneConfig.from_dict(json.loads(text)) == config
    assert FinetuneConfig.from_dict({}) == FinetuneConfig()
    assert set(FinetuneConfig.describe()) == set(config.to_dict()) - {"technique"}
    assert all(FinetuneConfig.describe().values())
    for bad in (
        {"epochs": 0, "steps": 0},
        {"optimizer": "adam"},
        {"schedule": "step"},
        {"device": "tpu"},
        {"alpha": 1.5},
        {"temperature": 0.0},
        {"lr": math.nan},
        {"batch_size": 0},
        {"steps": -1},
        {"bogus": 1},
        {"technique": "prune"},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            FinetuneConfig.from_dict(bad)


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_batchnorm_statistics_move_while_tuning_and_the_model_ends_in_eval_mode() -> None:
    train, _ = splits()
    model = prune_half(teacher())
    before = model.bn2.running_mean.clone()  # type: ignore[union-attr]
    finetune(model, None, train, None, _config(steps=3, lr=0.0))
    assert not torch.equal(model.bn2.running_mean, before)  # type: ignore[arg-type]
    assert not model.training
    assert all(not m.training for m in model.modules())
