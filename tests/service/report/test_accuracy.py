"""Accuracy in report messages: AccuracyStats, the accuracy-rule flags, the warnings about accuracy."""

from __future__ import annotations

import pytest

from prunekit.v1 import report_pb2
from prunekit_server.measure.accuracy import Accuracy, AccuracyRule
from prunekit_server.measure.quality import Quality, QualityRule
from prunekit_server.report import build_report, model_stats, model_variant, variant_flags
from prunekit_server.report.accuracy import (
    accuracy_from_stats,
    accuracy_not_measured,
    accuracy_rule_not_judged,
)
from prunekit_server.report.protocol import benchmark_protocol
from prunekit_server.report.stats import accuracy_stats
from tests.service.report.test_build import _latency

FLAG = report_pb2.VariantFlag
GOOD = Quality(1.0, 0.999, 0.01, 8)


def _stats(accuracy: Accuracy | None, quality: Quality | None = GOOD) -> report_pb2.ModelStats:
    return model_stats(
        parameters=10,
        nonzero_parameters=10,
        macs=100,
        size_bytes=400,
        compressed_size_bytes=300,
        latency=_latency(1.0),
        quality=quality,
        accuracy=accuracy,
    )


def _variant(
    name: str, accuracy: Accuracy | None, baseline: report_pb2.ModelStats
) -> report_pb2.ModelVariant:
    file = report_pb2.ModelFile(artifact=f"{name}.onnx", sha256="0" * 64, size_bytes=1)
    return model_variant(name, _stats(accuracy), [file], baseline)


def test_accuracy_stats_round_trip() -> None:
    labels = Accuracy(0.9, 0.99, None, 360)
    stats = accuracy_stats(labels)
    assert (stats.top1, stats.top5, stats.samples) == (pytest.approx(0.9), pytest.approx(0.99), 360)
    assert not stats.HasField("mse")
    assert accuracy_from_stats(_stats(labels)) == labels
    few_classes = accuracy_stats(Accuracy(0.5, None, None, 4))
    assert not few_classes.HasField("top5")
    targets = Accuracy(None, None, 0.25, 5)
    stats = accuracy_stats(targets)
    assert (stats.top1, stats.mse) == (0.0, 0.25)
    assert accuracy_from_stats(_stats(targets)) == targets
    assert accuracy_from_stats(_stats(None)) is None


def test_flags_judge_top1_drop_against_the_baseline() -> None:
    baseline = _stats(Accuracy(0.90, None, None, 100), quality=None)
    rule = AccuracyRule(0.02)
    close = _variant("close", Accuracy(0.885, None, None, 100), baseline)
    far = _variant("far", Accuracy(0.80, None, None, 100), baseline)
    unmeasured = _variant("unmeasured", None, baseline)
    flags = {
        v.name: variant_flags(v, baseline, QualityRule(), accuracy_rule=rule)
        for v in (close, far, unmeasured)
    }
    assert FLAG.VARIANT_FLAG_MEETS_ACCURACY_RULE in flags["close"]
    assert FLAG.VARIANT_FLAG_BELOW_ACCURACY_RULE in flags["far"]
    accuracy_flags = {FLAG.VARIANT_FLAG_MEETS_ACCURACY_RULE, FLAG.VARIANT_FLAG_BELOW_ACCURACY_RULE}
    assert not accuracy_flags & set(flags["unmeasured"])
    assert not accuracy_flags & set(
        variant_flags(far, baseline, QualityRule(), accuracy_rule=AccuracyRule(0.0))
    )
    assert FLAG.VARIANT_FLAG_FINETUNED in variant_flags(far, baseline, QualityRule(), finetuned=True)
    assert FLAG.VARIANT_FLAG_FINETUNED not in variant_flags(far, baseline, QualityRule())
    mse_base = _stats(Accuracy(None, None, 0.1, 5), quality=None)
    mse = _variant("mse", Accuracy(None, None, 0.9, 5), mse_base)
    assert not accuracy_flags & set(variant_flags(mse, mse_base, QualityRule(), accuracy_rule=rule))


def test_one_warning_names_every_variant_below_the_rule() -> None:
    baseline = _stats(Accuracy(0.90, None, None, 100), quality=None)
    variants = [
        _variant("pruned", Accuracy(0.85, None, None, 100), baseline),
        _variant("pruned_int8", Accuracy(0.84, None, None, 100), baseline),
        _variant("pruned_fp16", Accuracy(0.899, None, None, 100), baseline),
    ]
    protocol = benchmark_protocol(
        _latency(1.0),
        inputs=[],
        cpu_model="cpu",
        quality_inputs="eval split, 100 samples",
        quality_rule=QualityRule(),
        max_accuracy_drop=0.01,
    )
    report = build_report(
        input_format=1,
        baseline=baseline,
        variants=variants,
        layers=[],
        protocol=protocol,
        accuracy_rule=AccuracyRule(0.01),
    )
    (warning,) = [w for w in report.warnings if w.code == "BELOW_ACCURACY_RULE"]
    assert "'pruned' (top-1 85.00%)" in warning.message
    assert "'pruned_int8' (top-1 84.00%)" in warning.message
    assert "pruned_fp16" not in warning.message
    assert "90.00%" in warning.message
    assert "The job succeeded" in warning.message
    assert report.protocol.quality_rule.max_accuracy_drop == 0.01
    assert not report.HasField("data")
    assert not report.HasField("finetune")
    relaxed = build_report(
        input_format=1,
        baseline=baseline,
        variants=variants,
        layers=[],
        protocol=protocol,
        accuracy_rule=AccuracyRule(0.1),
    )
    assert "BELOW_ACCURACY_RULE" not in {w.code for w in relaxed.warnings}


def test_accuracy_not_measured_says_why_and_on_what() -> None:
    warning = accuracy_not_measured(
        "the job had no labelled eval data", "32 synthetic samples", AccuracyRule()
    )
    assert warning.code == "ACCURACY_NOT_MEASURED"
    assert warning.message == (
        "accuracy could not be measured: the job had no labelled eval data; "
        "fidelity was measured on 32 synthetic samples."
    )
    with_rule = accuracy_not_measured("x", "y", AccuracyRule(0.01))
    assert "could not be judged" in with_rule.message
    assert accuracy_rule_not_judged(AccuracyRule(0.01)).code == "ACCURACY_RULE_NOT_JUDGED"
