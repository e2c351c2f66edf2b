"""The fine-tuning rules of a spec: budgets, optimizers, distillation, a server's caps."""

from __future__ import annotations

import math

from prunekit.spec import spec_violations
from prunekit.spec.limits import SpecLimits
from prunekit.v1 import spec_pb2

from .rules import DATA, ITERATIVE, ONNX, PRUNE
from .rules import violations as _violations


def test_a_full_finetune_spec_is_valid() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=ITERATIVE,
        data=spec_pb2.DataSpec(
            train=[DATA.train[0], "s3://bucket/tenants/default/datasets/more/"],
            eval=["file:///srv/tenants/default/datasets/eval.npz"],
            eval_fraction=0.1,
        ),
        finetune=spec_pb2.FinetuneSpec(
            epochs=3,
            steps=200,
            max_seconds=60.0,
            batch_size=4096,
            optimizer=spec_pb2.OPTIMIZER_SGD,
            learning_rate=10.0,
            momentum=0.95,
            weight_decay=1e-4,
            schedule=spec_pb2.LR_SCHEDULE_LINEAR,
            warmup_steps=10,
            grad_clip=1.0,
            seed=7,
            eval_every=20,
            patience=3,
            device=spec_pb2.DEVICE_CUDA,
            mixed_precision=False,
            distillation=spec_pb2.DistillationSpec(
                temperature=2.0, alpha=1.0, feature_layers=["/a/Conv", "/b/Conv"], feature_weight=0.5
            ),
            checkpoint_every_steps=50,
            checkpoint_every_seconds=30.0,
            steps_per_round=40,
        ),
        evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=1.0),
    )
    assert spec_violations(spec, ONNX) == []
    short = spec_pb2.OptimizationSpec(prune=PRUNE, data=DATA, finetune=spec_pb2.FinetuneSpec(steps=1))
    assert spec_violations(short, ONNX) == []
    eval_only = spec_pb2.OptimizationSpec(
        prune=PRUNE,
        data=spec_pb2.DataSpec(eval=DATA.train),
        evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=0.01),
    )
    assert spec_violations(eval_only, ONNX) == []


def test_finetune_needs_prune_data_and_a_budget() -> None:
    quantize = spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8)
    spec = spec_pb2.OptimizationSpec(quantize=quantize, finetune=spec_pb2.FinetuneSpec(batch_size=8))
    assert _violations(spec) == {
        "spec.finetune": [
            "needs prune or target: fine-tuning recovers a pruned model",
            "needs data.train: the shards to fine-tune on",
            "set a budget: epochs, steps or max_seconds (> 0)",
        ]
    }
    only_eval = spec_pb2.OptimizationSpec(
        prune=PRUNE, data=spec_pb2.DataSpec(eval=DATA.train), finetune=spec_pb2.FinetuneSpec(epochs=1)
    )
    assert list(_violations(only_eval)) == ["spec.finetune"]


def test_every_bad_finetune_number_is_listed() -> None:
    finetune = spec_pb2.FinetuneSpec(
        epochs=-1,
        steps=-2,
        max_seconds=math.nan,
        batch_size=4097,
        learning_rate=10.5,
        momentum=0.9,
        weight_decay=-0.1,
        warmup_steps=-1,
        grad_clip=math.inf,
        seed=-3,
        eval_every=-1,
        patience=-1,
        checkpoint_every_steps=-5,
        checkpoint_every_seconds=-1.0,
        steps_per_round=10,
        distillation=spec_pb2.DistillationSpec(
            temperature=-1.0, alpha=1.5, feature_weight=-2.0, feature_layers=["", "x", "x"]
        ),
    )
    found = _violations(spec_pb2.OptimizationSpec(prune=PRUNE, data=DATA, finetune=finetune))
    path = "spec.finetune"
    assert found == {
        path: ["set a budget: epochs, steps or max_seconds (> 0)"],
        **{
            f"{path}.{name}": ["must be >= 0"]
            for name in ("epochs", "steps", "warmup_steps", "seed", "eval_every", "patience")
        },
        f"{path}.checkpoint_every_steps": ["must be >= 0"],
        f"{path}.max_seconds": ["must be a finite number >= 0"],
        f"{path}.weight_decay": ["must be a finite number >= 0"],
        f"{path}.grad_clip": ["must be a finite number >= 0"],
        f"{path}.checkpoint_every_seconds": ["must be a finite number >= 0"],
        f"{path}.batch_size": ["must be between 0 (default 32) and 4096"],
        f"{path}.learning_rate": ["must be at most 10"],
        f"{path}.momentum": ["only with optimizer SGD"],
        f"{path}.steps_per_round": ["only with prune.schedule ITERATIVE"],
        f"{path}.distillation.temperature": ["must be 0 (default 4) or a finite number > 0"],
        f"{path}.distillation.alpha": ["must be between 0 and 1 (unset: 0.5)"],
        f"{path}.distillation.feature_weight": ["must be 0 (default 1) or a finite number > 0"],
        f"{path}.distillation.feature_layers[0]": ["an ONNX node name of 1 to 256 printable characters"],
        f"{path}.distillation.feature_layers[2]": ["'x' is listed twice"],
    }


def test_sgd_momentum_and_distillation_details() -> None:
    sgd = spec_pb2.FinetuneSpec(steps=5, optimizer=spec_pb2.OPTIMIZER_SGD, momentum=1.0)
    found = _violations(spec_pb2.OptimizationSpec(prune=PRUNE, data=DATA, finetune=sgd))
    assert found == {"spec.finetune.momentum": ["must be 0 (default 0.9) or 0 < value < 1"]}
    weight_alone = spec_pb2.FinetuneSpec(steps=5, distillation=spec_pb2.DistillationSpec(feature_weight=2.0))
    found = _violations(spec_pb2.OptimizationSpec(prune=PRUNE, data=DATA, finetune=weight_alone))
    assert found == {"spec.finetune.distillation.feature_weight": ["only with feature_layers"]}
    zero_alpha = spec_pb2.FinetuneSpec(steps=5, distillation=spec_pb2.DistillationSpec(alpha=0.0))
    assert _violations(spec_pb2.OptimizationSpec(prune=PRUNE, data=DATA, finetune=zero_alpha)) == {}


def test_a_servers_budget_caps_name_the_field() -> None:
    budget = spec_pb2.FinetuneSpec(epochs=2147483647, steps=101, max_seconds=61.0, steps_per_round=101)
    spec = spec_pb2.OptimizationSpec(prune=ITERATIVE, data=DATA, finetune=budget)
    assert _violations(spec) == {}
    caps = SpecLimits(max_finetune_epochs=10, max_finetune_steps=100, max_finetune_seconds=60.0)
    assert _violations(spec, caps) == {
        "spec.finetune.epochs": ["at most 10 on this server (max_finetune_epochs)"],
        "spec.finetune.steps": ["at most 100 on this server (max_finetune_steps)"],
        "spec.finetune.steps_per_round": ["at most 100 on this server (max_finetune_steps)"],
        "spec.finetune.max_seconds": ["at most 60 on this server (max_finetune_seconds)"],
    }
    spec.finetune.CopyFrom(spec_pb2.FinetuneSpec(epochs=10, steps=100, max_seconds=60.0, steps_per_round=100))
    assert _violations(spec, caps) == {}


def test_finetune_workers_rules() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=PRUNE, data=DATA, finetune=spec_pb2.FinetuneSpec(steps=10, workers=4)
    )
    assert _violations(spec) == {}
    assert _violations(spec, SpecLimits(max_finetune_workers=4)) == {}
    assert _violations(spec, SpecLimits(max_finetune_workers=2)) == {
        "spec.finetune.workers": ["at most 2 on this server (max_finetune_workers)"]
    }
    assert _violations(spec, SpecLimits(max_finetune_workers=1)) == {
        "spec.finetune.workers": ["more than 1 needs a server with PRUNEKIT_EXECUTOR=ray"]
    }
    spec.finetune.batch_size = 3
    assert _violations(spec) == {"spec.finetune.workers": ["at most batch_size (3): each rank needs samples"]}
    spec.finetune.workers = -1
    assert _violations(spec) == {"spec.finetune.workers": ["must be 0 or more (0 and 1: one process)"]}
    spec.finetune.workers = 1
    assert _violations(spec, SpecLimits(max_finetune_workers=1)) == {}
