"""assemble_report with a real evaluation: accuracy per model, the accuracy rule's flags and warnings,
AUTO's choice under the accuracy rule, data and fine-tuning copied in, ACCURACY_NOT_MEASURED without labels.

The models are real ONNX files (a linear classifier, a noisy copy, a dynamic-int8 quantization) evaluated in
ORT; latencies are given (what AUTO chooses from is the subject, not the timing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from prunekit.v1 import model_pb2, report_pb2
from prunekit_server.measure.analysis import analyze
from prunekit_server.measure.evaluation import evaluate_models
from prunekit_server.measure.latency import Latency
from prunekit_server.measure.names import BASELINE, ORIGINAL
from prunekit_server.measure.quality import QualityRule
from prunekit_server.measure.timings import Timings
from prunekit_server.modelio.ingest import ingest
from prunekit_server.pipeline.variants import model_file
from prunekit_server.report.build import assemble_report
from prunekit_server.report.facts import Facts, Variant
from prunekit_server.training.datasets import Dataset
from tests.service.measure.test_evaluation import CLASSES, classifier_models, eval_split, settings
from tests.service.report_fields import unfilled

ONNX = model_pb2.MODEL_FORMAT_ONNX
FLAG = report_pb2.VariantFlag
P50 = {BASELINE: 3.0, "original_int8_dynamic": 2.0, "original_noisy": 1.0}


def _latency(p50: float) -> Latency:
    return Latency(
        p50,
        p50,
        p50,
        p50,
        0.0,
        p50,
        4000 / p50,
        4,
        1,
        1,
        3,
        "onnxruntime 1",
        "cpu",
        True,
        stable=True,
        windows=3,
    )


DATA = report_pb2.DataReport(
    train=[report_pb2.DatasetShard(uri="prunekit://datasets/a", sha256="ab" * 32, samples=100)],
    eval=[report_pb2.DatasetShard(uri="prunekit://datasets/b", sha256="cd" * 32, samples=42)],
    train_samples=100,
    eval_samples=42,
    supervision="label",
    num_classes=8,
)
FINETUNE = report_pb2.FinetuneReport(
    runs=[report_pb2.FinetuneRun(phase="finetune", steps=10, total_steps=10, loss="distillation")],
    attempts=1,
)


def _facts(root: Path, *, supervision: str = "label", max_drop: float = 0.01) -> Facts:
    models = classifier_models(root)
    job = settings()
    job = dataclasses.replace(job, rule=QualityRule(0.2, 0.2))
    ingested = ingest(models["original"], ONNX, [], root / "work", batch_size=4)
    analysis = analyze(ingested.onnx_model, list(ingested.inputs), source_format=ONNX, size_bytes=1)
    variants = [
        Variant(name, ORIGINAL, models[key], [model_file(ONNX, models[key])], auto_candidate=True)
        for name, key in (("original_int8_dynamic", "int8"), ("original_noisy", "noisy"))
    ]
    x, labels = eval_split()
    data = Dataset(
        ["x"],
        [x],
        label=labels if supervision == "label" else None,
        target=np.eye(CLASSES, dtype=np.float32)[labels] if supervision == "target" else None,
    )
    evaluation = evaluate_models(ingested.onnx_path, {v.name: v.onnx_path for v in variants}, data, [], job)
    return Facts(
        ingested=ingested,
        base_analysis=analysis,
        pruned=None,
        variants=variants,
        timings=Timings(by_model={name: [_latency(p50)] for name, p50 in P50.items()}),
        settings=job,
        auto=True,
        evaluation=evaluation,
        data=DATA,
        finetune=FINETUNE,
        finetuned={"original_noisy"},
        max_accuracy_drop=max_drop,
        extra_warnings=["FINETUNE_DISTILLATION_ONLY: the data has no labels; distillation alone"],
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> report_pb2.OptimizationReport:
    return assemble_report(_facts(tmp_path_factory.mktemp("acc")))


def _variant(report: report_pb2.OptimizationReport, name: str) -> report_pb2.ModelVariant:
    return next(v for v in report.variants if v.name == name)


def test_every_model_has_accuracy(report: report_pb2.OptimizationReport) -> None:
    assert report.baseline.accuracy.top1 == 1.0
    assert report.baseline.accuracy.HasField("top5")
    assert report.baseline.accuracy.samples == 42
    noisy = _variant(report, "original_noisy").stats
    assert noisy.accuracy.top1 == pytest.approx(noisy.quality.top1_agreement)
    assert noisy.accuracy.top1 < 0.9
    assert not noisy.accuracy.HasField("mse")
    assert report.protocol.quality_inputs == "eval split, 42 samples"
    assert report.protocol.quality_rule.max_accuracy_drop == 0.01
    assert report.data == DATA
    assert report.finetune == FINETUNE
    for stats in [report.baseline, *(v.stats for v in report.variants)]:
        assert unfilled(stats.accuracy, {"AccuracyStats.mse"}) == []


def test_accuracy_rule_flags_warnings_and_auto_choice(report: report_pb2.OptimizationReport) -> None:
    int8 = _variant(report, "original_int8_dynamic")
    noisy = _variant(report, "original_noisy")
    assert FLAG.VARIANT_FLAG_MEETS_ACCURACY_RULE in int8.flags
    assert FLAG.VARIANT_FLAG_BELOW_ACCURACY_RULE in noisy.flags
    assert FLAG.VARIANT_FLAG_MEETS_QUALITY_RULE in noisy.flags  # the quality rule alone would keep it
    assert FLAG.VARIANT_FLAG_SELECTED in int8.flags  # the fastest, noisy, misses the accuracy rule
    assert FLAG.VARIANT_FLAG_NOT_SELECTED in noisy.flags
    assert FLAG.VARIANT_FLAG_FINETUNED in noisy.flags
    assert FLAG.VARIANT_FLAG_FINETUNED not in int8.flags
    assert "accuracy" in report.protocol.selection_rule
    below = [w for w in report.warnings if w.code == "BELOW_ACCURACY_RULE"]
    assert len(below) == 1
    assert "'original_noisy'" in below[0].message
    assert "'original_int8_dynamic'" not in below[0].message
    codes = {w.code for w in report.warnings}
    assert "FINETUNE_DISTILLATION_ONLY" in codes
    assert not {"ACCURACY_NOT_MEASURED", "SYNTHETIC_INPUTS"} & codes


def test_without_a_rule_auto_takes_the_fastest_and_no_accuracy_flags(tmp_path: Path) -> None:
    report = assemble_report(_facts(tmp_path, max_drop=0.0))
    noisy = _variant(report, "original_noisy")
    assert FLAG.VARIANT_FLAG_SELECTED in noisy.flags
    flags = {f for v in report.variants for f in v.flags}
    assert not {FLAG.VARIANT_FLAG_MEETS_ACCURACY_RULE, FLAG.VARIANT_FLAG_BELOW_ACCURACY_RULE} & flags
    assert "BELOW_ACCURACY_RULE" not in {w.code for w in report.warnings}
    assert noisy.stats.HasField("accuracy")


def test_unlabelled_eval_data_says_accuracy_was_not_measured(tmp_path: Path) -> None:
    report = assemble_report(_facts(tmp_path, supervision="none"))
    assert not report.baseline.HasField("accuracy")
    assert not any(v.stats.HasField("accuracy") for v in report.variants)
    (warning,) = [w for w in report.warnings if w.code == "ACCURACY_NOT_MEASURED"]
    assert warning.message.startswith("accuracy could not be measured: the eval data has no label or target")
    assert "fidelity was measured on eval split, 42 samples" in warning.message
    assert "accuracy rule" in warning.message
    assert "SYNTHETIC_INPUTS" not in {w.code for w in report.warnings}
    flags = {f for v in report.variants for f in v.flags}
    assert FLAG.VARIANT_FLAG_BELOW_ACCURACY_RULE not in flags
    assert FLAG.VARIANT_FLAG_SELECTED in _variant(report, "original_noisy").flags


def test_targets_report_mse_and_the_rule_is_not_judged(tmp_path: Path) -> None:
    report = assemble_report(_facts(tmp_path, supervision="target"))
    assert report.baseline.accuracy.HasField("mse")
    assert all(v.stats.accuracy.HasField("mse") for v in report.variants)
    codes = {w.code for w in report.warnings}
    assert "ACCURACY_RULE_NOT_JUDGED" in codes
    assert not {"ACCURACY_NOT_MEASURED", "BELOW_ACCURACY_RULE"} & codes
    assert "accuracy" not in report.protocol.selection_rule
