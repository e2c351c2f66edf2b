"""run_optimization with fine-tuning on the digits: labels, distillation, sparsity kept, iterative rounds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scripts.digits import digits_arrays, write_shards

from prunekit.v1 import report_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pipeline import JobData, StagedShard
from prunekit_server.pipeline.stages import FINETUNE_WEIGHT, STAGES, at

from .finetune_cases import CHANNEL, digits_data, digits_model, initializers, run, spec, variant

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FINETUNED = report_pb2.VARIANT_FLAG_FINETUNED


def _codes(report: report_pb2.OptimizationReport) -> set[str]:
    return {w.code for w in report.warnings}


def test_channel_pruning_with_labels_recovers_accuracy(tmp_path: Path) -> None:
    model = digits_model(tmp_path)
    data = digits_data(tmp_path / "data")
    plain = run(model, spec(CHANNEL), tmp_path / "plain", data).report
    tuned = run(model, spec(CHANNEL, spec_pb2.FinetuneSpec(steps=60)), tmp_path / "tuned", data).report

    before, after = variant(plain).stats.accuracy.top1, variant(tuned).stats.accuracy.top1
    assert before + 0.02 < after
    assert after > tuned.baseline.accuracy.top1 - 0.05
    assert variant(tuned).macs_reduction == pytest.approx(variant(plain).macs_reduction)
    assert FINETUNED in variant(tuned).flags
    assert FINETUNED not in variant(plain).flags
    assert not plain.HasField("finetune")
    (only,) = tuned.finetune.runs
    assert (only.phase, only.steps, only.total_steps, only.stop_reason) == ("finetune", 60, 60, "budget")
    assert (only.loss, only.metric, only.device, only.resumed_from_step) == (
        "cross_entropy",
        "accuracy",
        "cuda" if torch.cuda.is_available() else "cpu",
        0,
    )
    assert only.best_metric == pytest.approx(after, abs=1e-6)
    assert only.loss_curve_steps[-1] == 60
    assert len(only.loss_curve) == len(only.loss_curve_steps) == 60
    assert tuned.finetune.before.top1 == pytest.approx(before, abs=1e-6)
    assert tuned.finetune.before.samples == tuned.data.eval_samples == 359
    assert 0 < tuned.finetune.quality_before.top1_agreement < 1
    assert (tuned.data.supervision, tuned.data.num_classes, tuned.data.eval_fraction) == ("label", 10, 0.2)
    assert [s.samples for s in tuned.data.train] == [899, 898]
    assert "SYNTHETIC_IMPORTANCE" not in _codes(tuned)
    assert (tmp_path / "tuned" / "checkpoints" / "finetune" / "latest.json").is_file()


def test_distillation_on_unlabelled_data_closes_the_fidelity_gap(tmp_path: Path) -> None:
    model = digits_model(tmp_path)
    data = digits_data(tmp_path / "data", labels=False)
    plain = run(model, spec(CHANNEL), tmp_path / "plain", data).report
    finetune = spec_pb2.FinetuneSpec(steps=80, distillation=spec_pb2.DistillationSpec(temperature=2.0))
    tuned = run(model, spec(CHANNEL, finetune), tmp_path / "tuned", data).report

    before, after = variant(plain).stats.quality, variant(tuned).stats.quality
    assert 1 - after.top1_agreement < (1 - before.top1_agreement) / 2
    assert after.cosine_similarity > before.cosine_similarity
    assert after.samples == 359
    assert not variant(tuned).stats.HasField("accuracy")
    (only,) = tuned.finetune.runs
    assert (only.loss, only.metric) == ("distillation", "top1_agreement")
    assert only.best_metric == pytest.approx(after.top1_agreement, abs=0.01)
    assert not tuned.finetune.HasField("before")
    assert tuned.finetune.quality_before.top1_agreement == pytest.approx(before.top1_agreement, abs=1e-6)
    assert "FINETUNE_DISTILLATION_ONLY" in _codes(tuned)
    assert tuned.data.supervision == "none"


@pytest.mark.parametrize(
    "prune",
    [
        {"method": spec_pb2.PRUNE_METHOD_UNSTRUCTURED, "ratio": 0.7},
        {"method": spec_pb2.PRUNE_METHOD_N_M, "n": 2, "m": 4},
    ],
    ids=["unstructured", "n_m"],
)
def test_values_only_pruning_keeps_its_zeros_while_tuning(tmp_path: Path, prune: dict[str, Any]) -> None:
    model = digits_model(tmp_path)
    data = digits_data(tmp_path / "data")
    plain = run(model, spec(prune), tmp_path / "plain", data)
    finetune = spec_pb2.FinetuneSpec(steps=40, learning_rate=3e-3)
    tuned = run(model, spec(prune, finetune), tmp_path / "tuned", data)

    pruned_values = initializers(plain.artifacts["pruned.onnx"])
    tuned_values = initializers(tuned.artifacts["pruned.onnx"])
    assert pruned_values.keys() == tuned_values.keys()
    changed = 0
    for name, value in pruned_values.items():
        if (value == 0).mean() > 0.3:
            assert np.array_equal(tuned_values[name] == 0, value == 0), name
        changed += int(not np.array_equal(tuned_values[name], value))
    assert changed >= 4
    report = tuned.report
    assert variant(report).stats.nonzero_parameters == variant(plain.report).stats.nonzero_parameters
    assert variant(report).stats.accuracy.top1 > variant(plain.report).stats.accuracy.top1
    assert FINETUNED in variant(report).flags


def test_iterative_schedule_fine_tunes_between_rounds(tmp_path: Path) -> None:
    model = digits_model(tmp_path)
    data = digits_data(tmp_path / "data")
    iterative = {**CHANNEL, "schedule": spec_pb2.PRUNE_SCHEDULE_ITERATIVE, "steps": 3}
    events: list[tuple[str, float, Mapping[str, Any]]] = []

    def progress(stage: str, fraction: float, message: str, details: Mapping[str, Any] | None = None) -> None:
        if details is not None:
            events.append((stage, fraction, details))

    job = spec(iterative, spec_pb2.FinetuneSpec(steps=30, checkpoint_every_steps=5))
    report = run(model, job, tmp_path / "job", data, progress).report
    runs = report.finetune.runs
    assert [r.phase for r in runs] == ["round-01", "round-02", "finetune"]
    assert [r.total_steps for r in runs] == [10, 10, 10]
    assert len(report.schedule) == 3
    assert "SYNTHETIC_RECOVERY" not in _codes(report)
    assert "RECOVERY_FAILED" not in _codes(report)
    for phase in ("round-01", "round-02", "finetune"):
        assert (tmp_path / "job" / "checkpoints" / phase / "latest.json").is_file()
    checkpoints = [d["checkpoint"] for _, _, d in events if "checkpoint" in d]
    assert [(c["phase"], c["step"]) for c in checkpoints][:2] == [("round-01", 5), ("round-01", 10)]
    assert checkpoints[-1] == {"phase": "finetune", "name": "ckpt-00000010", "step": 10}
    steps = [d["finetune"] for _, _, d in events if "finetune" in d]
    assert {s["phase"] for s in steps} == {"round-01", "round-02", "finetune"}
    assert all(s["total_steps"] == 10 and s["metric"] == "accuracy" for s in steps)
    fractions = [f for _, f, _ in events]
    assert fractions == sorted(fractions)
    total = sum(w for _, w in STAGES) + FINETUNE_WEIGHT  # fine-tuning weighs the prune stage
    prune_start = at("prune") * (total - FINETUNE_WEIGHT) / total
    prune_end = prune_start + (dict(STAGES)["prune"] + FINETUNE_WEIGHT) / total
    assert fractions[0] >= prune_start
    assert fractions[-1] <= prune_end + 1e-9


def test_feature_layers_must_exist_and_keep_their_shape(tmp_path: Path) -> None:
    model = digits_model(tmp_path)
    data = digits_data(tmp_path / "data")

    def job(*layers: str) -> spec_pb2.OptimizationSpec:
        distillation = spec_pb2.DistillationSpec(feature_layers=list(layers))
        return spec(CHANNEL, spec_pb2.FinetuneSpec(steps=10, distillation=distillation))

    report = run(model, job("/fc/Gemm"), tmp_path / "ok", data).report
    assert report.finetune.runs[0].loss == "cross_entropy+distillation+feature_mse"
    for layers, index, words in [
        (("/fc/Gemm", "/nowhere/Conv"), 1, "names no layer"),
        (("/conv2/Conv",), 0, "output shape changed"),
    ]:
        with pytest.raises(ServiceError) as caught:
            run(model, job(*layers), tmp_path / f"bad{index}", data)
        assert caught.value.reason == "INVALID_SPEC"
        (violation,) = caught.value.violations
        assert violation.field == f"spec.finetune.distillation.feature_layers[{index}]"
        assert words in violation.description


def test_unlabelled_train_data_with_a_labelled_eval_split_reports_accuracy(tmp_path: Path) -> None:
    model = digits_model(tmp_path)
    x, y = digits_arrays()
    train = write_shards(tmp_path / "train", x[:1400], shards=1, labels=False)
    held_out = write_shards(tmp_path / "eval", x[1400:], y[1400:], shards=1)
    data = JobData(
        train=[StagedShard(p, uri=f"s3://bucket/train/{p.name}") for p in train],
        eval=[StagedShard(p, uri=f"s3://bucket/eval/{p.name}") for p in held_out],
    )
    finetune = spec_pb2.FinetuneSpec(steps=60, distillation=spec_pb2.DistillationSpec(temperature=2.0))
    tuned = run(model, spec(CHANNEL, finetune), tmp_path / "tuned", data).report

    (only,) = tuned.finetune.runs
    assert (only.loss, only.metric) == ("distillation", "accuracy")
    assert tuned.baseline.accuracy.samples == variant(tuned).stats.accuracy.samples == 397
    assert tuned.finetune.before.top1 < variant(tuned).stats.accuracy.top1
    assert only.best_metric == pytest.approx(variant(tuned).stats.accuracy.top1, abs=1e-6)
    codes = _codes(tuned)
    assert "FINETUNE_DISTILLATION_ONLY" in codes
    assert "ACCURACY_NOT_MEASURED" not in codes
    assert (tuned.data.supervision, tuned.data.eval_samples) == ("none", 397)
