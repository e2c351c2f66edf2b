"""The spec rules (``spec_violations``) the CLI and the server run: every violation listed."""

from __future__ import annotations

import math

import pytest

from prunekit.spec import spec_violations
from prunekit.spec.limits import ANY_SERVER, SpecLimits
from prunekit.v1 import model_pb2, spec_pb2

ONNX = model_pb2.MODEL_FORMAT_ONNX
PRUNE = spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5)


def _fields(spec: spec_pb2.OptimizationSpec) -> list[str]:
    return [v.field for v in spec_violations(spec, ONNX)]


@pytest.mark.parametrize(
    "spec",
    [
        spec_pb2.OptimizationSpec(prune=PRUNE),
        spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8)),
        spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_FP16)),
        spec_pb2.OptimizationSpec(
            prune=PRUNE,
            quantize=spec_pb2.QuantizeSpec(
                mode=spec_pb2.QUANTIZE_MODE_AUTO,
                calibration=spec_pb2.CALIBRATION_METHOD_PERCENTILE,
                calibration_samples=1024,
                percentile=99.99,
                include_original=True,
                candidates=[spec_pb2.QUANTIZE_MODE_STATIC_INT8, spec_pb2.QUANTIZE_MODE_FP16],
                exclude=["*fc*"],
            ),
            benchmark=spec_pb2.BenchmarkSpec(
                batch_sizes=[1, 8, 32], max_seconds=120.0, device=spec_pb2.DEVICE_CUDA
            ),
            evaluation=spec_pb2.EvaluationSpec(min_top1_agreement=0.95, min_cosine_similarity=1.0),
        ),
        spec_pb2.OptimizationSpec(
            prune=PRUNE, quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_NONE)
        ),
    ],
    ids=["prune-only", "static-only", "fp16-only", "everything", "prune-and-none"],
)
def test_valid_specs(spec: spec_pb2.OptimizationSpec) -> None:
    assert spec_violations(spec, ONNX) == []


def test_a_spec_must_ask_for_something() -> None:
    assert _fields(spec_pb2.OptimizationSpec()) == ["spec.prune"]
    none = spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_NONE))
    assert _fields(none) == ["spec.prune"]


def test_unspecified_mode_with_fields_lists_every_violation() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            calibration=spec_pb2.CALIBRATION_METHOD_ENTROPY,
            calibration_samples=5000,
            percentile=50.0,
            include_original=True,
            candidates=[spec_pb2.QUANTIZE_MODE_FP16],
            exclude=[""],
        )
    )
    assert sorted(v.field for v in spec_violations(spec, ONNX)) == [
        "spec.quantize.calibration_samples",
        "spec.quantize.candidates",
        "spec.quantize.exclude[0]",
        "spec.quantize.include_original",
        "spec.quantize.mode",
        "spec.quantize.percentile",
    ]


@pytest.mark.parametrize("samples", [-1, 1025, 2**31 - 1])
def test_calibration_samples_out_of_range(samples: int) -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8, calibration_samples=samples)
    )
    assert _fields(spec) == ["spec.quantize.calibration_samples"]


def test_calibration_fields_need_a_calibrating_mode() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8,
            calibration=spec_pb2.CALIBRATION_METHOD_MINMAX,
            calibration_samples=10,
        )
    )
    assert _fields(spec) == ["spec.quantize.calibration", "spec.quantize.calibration_samples"]


@pytest.mark.parametrize(
    ("percentile", "calibration", "message"),
    [
        (89.0, spec_pb2.CALIBRATION_METHOD_PERCENTILE, "between 90 and 100"),
        (100.5, spec_pb2.CALIBRATION_METHOD_PERCENTILE, "between 90 and 100"),
        (math.nan, spec_pb2.CALIBRATION_METHOD_PERCENTILE, "between 90 and 100"),
        (99.0, spec_pb2.CALIBRATION_METHOD_MINMAX, "only with calibration PERCENTILE"),
    ],
)
def test_percentile_rules(percentile: float, calibration: int, message: str) -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8,
            calibration=calibration,  # type: ignore[arg-type]
            percentile=percentile,
        )
    )
    (violation,) = spec_violations(spec, ONNX)
    assert violation.field == "spec.quantize.percentile"
    assert message in violation.description


def test_auto_candidates() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_AUTO,
            candidates=[
                spec_pb2.QUANTIZE_MODE_FP16,
                spec_pb2.QUANTIZE_MODE_AUTO,
                spec_pb2.QUANTIZE_MODE_FP16,
                spec_pb2.QUANTIZE_MODE_NONE,
            ],
        )
    )
    assert _fields(spec) == [
        "spec.quantize.candidates[1]",
        "spec.quantize.candidates[2]",
        "spec.quantize.candidates[3]",
    ]


def test_none_mode_takes_no_options() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=PRUNE,
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_NONE, exclude=["x"], calibration_samples=3
        ),
    )
    assert _fields(spec) == ["spec.quantize.calibration_samples", "spec.quantize.exclude"]


def test_include_original_needs_prune() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8, include_original=True)
    )
    assert _fields(spec) == ["spec.quantize.include_original"]


def test_benchmark_and_evaluation_rules() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=PRUNE,
        benchmark=spec_pb2.BenchmarkSpec(batch_size=2, batch_sizes=[1, 0, 1, 5000], max_seconds=-1.0),
        evaluation=spec_pb2.EvaluationSpec(min_top1_agreement=1.5, min_cosine_similarity=-0.1),
    )
    assert _fields(spec) == [
        "spec.benchmark.batch_sizes",
        "spec.benchmark.batch_sizes[1]",
        "spec.benchmark.batch_sizes[2]",
        "spec.benchmark.batch_sizes[3]",
        "spec.benchmark.max_seconds",
        "spec.evaluation.min_top1_agreement",
        "spec.evaluation.min_cosine_similarity",
    ]
    too_many = spec_pb2.OptimizationSpec(
        prune=PRUNE, benchmark=spec_pb2.BenchmarkSpec(batch_sizes=range(1, 10))
    )
    assert _fields(too_many) == ["spec.benchmark.batch_sizes"]
    for seconds in (math.inf, 3601.0):
        slow = spec_pb2.OptimizationSpec(prune=PRUNE, benchmark=spec_pb2.BenchmarkSpec(max_seconds=seconds))
        assert _fields(slow) == ["spec.benchmark.max_seconds"]


def test_undefined_enum_values_are_named() -> None:
    spec = spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=99))  # type: ignore[arg-type]
    spec.benchmark.device = 7  # type: ignore[assignment]
    fields = _fields(spec)
    assert "spec.quantize.mode" in fields
    assert "spec.benchmark.device" in fields


def test_prune_rules_still_apply_next_to_quantize() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(ratio=1.5),
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_FP16),
    )
    assert _fields(spec) == ["spec.prune.method", "spec.prune.ratio"]


DATA = spec_pb2.DataSpec(train=["s3://bucket/tenants/default/datasets/a.npz"])
ITERATIVE = spec_pb2.PruneSpec(
    method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=0.3, schedule=spec_pb2.PRUNE_SCHEDULE_ITERATIVE, steps=3
)


def _violations(spec: spec_pb2.OptimizationSpec, limits: SpecLimits = ANY_SERVER) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for v in spec_violations(spec, ONNX, limits=limits):
        found.setdefault(v.field, []).append(v.description)
    return found


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


def test_data_rules() -> None:
    data = spec_pb2.DataSpec(
        train=["", "train.npz", "s3://b/x.npz", "s3://b/x.npz", "s3://b/\x00.npz"],
        eval=["s3://b/x.npz", "s3://b/y.npz"],
        eval_fraction=1.0,
    )
    found = _violations(spec_pb2.OptimizationSpec(prune=PRUNE, data=data), SpecLimits(max_data_shards=6))
    assert found == {
        "spec.data.train[0]": ["a URI of 1 to 2048 printable characters"],
        "spec.data.train[1]": ["'train.npz' is not a URI: use the uri UploadDataset returned"],
        "spec.data.train[3]": ["'s3://b/x.npz' is listed twice"],
        "spec.data.train[4]": ["a URI of 1 to 2048 printable characters"],
        "spec.data": ["at most 6 train and eval entries in all"],
        "spec.data.eval_fraction": ["must be 0 (default 0.2) or 0 < value < 1"],
    }
    empty = spec_pb2.OptimizationSpec(prune=PRUNE)
    empty.data.SetInParent()
    assert _violations(empty) == {"spec.data": ["name train or eval shards, or leave data out"]}


@pytest.mark.parametrize("drop", [-0.1, 1.5, math.nan])
def test_max_accuracy_drop_range(drop: float) -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=PRUNE, data=DATA, evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=drop)
    )
    assert _violations(spec) == {
        "spec.evaluation.max_accuracy_drop": ["must be 0 (no rule) or 0 < value <= 1 (a fraction)"]
    }


def test_max_accuracy_drop_needs_data() -> None:
    spec = spec_pb2.OptimizationSpec(prune=PRUNE, evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=0.02))
    assert _violations(spec) == {
        "spec.evaluation.max_accuracy_drop": ["needs data: labelled eval (or train) shards"]
    }


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


def test_a_servers_input_bytes_cap() -> None:
    inputs = [
        model_pb2.InputSpec(name="image", shape=[8, 3, 224, 224]),
        model_pb2.InputSpec(name="mask", shape=[8, 224, 224], dtype=model_pb2.DATA_TYPE_UINT8),
    ]
    spec = spec_pb2.OptimizationSpec(prune=PRUNE, inputs=inputs)
    total = 8 * 3 * 224 * 224 * 4 + 8 * 224 * 224
    assert _violations(spec, SpecLimits(max_input_bytes=total)) == {}
    assert _violations(spec, SpecLimits(max_input_bytes=total - 1)) == {
        "spec.inputs": [
            f"one batch of the inputs takes {total} bytes ('image': 1204224 elements); "
            f"this server allows at most {total - 1} (max_input_bytes)"
        ]
    }


@pytest.mark.parametrize(
    ("seconds", "limits", "message"),
    [
        (-1.0, ANY_SERVER, "seconds, > 0 (or 0: the server's job timeout), got -1.0"),
        (math.nan, ANY_SERVER, "seconds, > 0 (or 0: the server's job timeout), got nan"),
        (7200.0, SpecLimits(max_timeout_seconds=3600.0), "at most 3600 on this server (job_timeout_s)"),
    ],
)
def test_timeout_seconds_rules(seconds: float, limits: SpecLimits, message: str) -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5),
        timeout_seconds=seconds,
    )
    found = spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX, limits=limits)
    assert [(v.field, v.description) for v in found] == [("spec.timeout_seconds", message)]
    spec.timeout_seconds = 60.0
    assert spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX, limits=limits) == []
