"""Accuracy, data and fine-tuning in the terminal and Markdown renderings, and fine-tuning progress lines."""

from __future__ import annotations

import io

from prunekit._render import ProgressPrinter, render_report
from prunekit.text.markdown import render_markdown
from prunekit.text.training_tables import (
    accuracy_cells,
    data_lines,
    finetune_progress_text,
    finetune_rows,
    finetune_summary,
    metric_text,
)
from prunekit.v1 import job_pb2, report_pb2

from ..conftest import sample_report


def finetuned_report() -> report_pb2.OptimizationReport:
    """The sample report with accuracy for both models, an accuracy rule, data and two fine-tuning runs."""
    report = sample_report()
    report.baseline.accuracy.CopyFrom(report_pb2.AccuracyStats(top1=0.9750, top5=0.9990, samples=360))
    pruned = report.variants[0]
    pruned.stats.accuracy.CopyFrom(report_pb2.AccuracyStats(top1=0.9667, top5=0.9972, samples=360))
    pruned.flags.extend([report_pb2.VARIANT_FLAG_FINETUNED, report_pb2.VARIANT_FLAG_MEETS_ACCURACY_RULE])
    report.protocol.quality_rule.max_accuracy_drop = 0.01
    report.data.CopyFrom(
        report_pb2.DataReport(
            train=[report_pb2.DatasetShard(uri="s3://b/t/0.npz", samples=1437)],
            train_samples=1150,
            eval_samples=287,
            eval_fraction=0.2,
            supervision="label",
            num_classes=10,
        )
    )
    ft = report.finetune
    ft.before.CopyFrom(report_pb2.AccuracyStats(top1=0.4111, samples=287))
    ft.quality_before.CopyFrom(report_pb2.QualityStats(top1_agreement=0.42, cosine_similarity=0.81))
    ft.attempts = 2
    ft.runs.add(
        phase="round-01",
        steps=40,
        total_steps=40,
        epochs=1,
        stop_reason="budget",
        loss="distillation",
        metric="accuracy",
        final_metric=0.9,
        seconds=2.5,
        steps_per_second=16.0,
        device="cpu",
    )
    ft.runs.add(
        phase="finetune",
        steps=120,
        total_steps=200,
        epochs=4,
        stop_reason="early_stopping",
        loss="cross_entropy+distillation",
        metric="accuracy",
        final_metric=0.9667,
        best_metric=0.9701,
        best_step=100,
        seconds=7.5,
        steps_per_second=16.0,
        device="cuda",
        mixed_precision=True,
        resumed_from_step=80,
    )
    return report


def test_accuracy_rows_join_the_variant_table() -> None:
    rows = {row[0]: row[1:] for row in accuracy_cells(finetuned_report())}
    assert rows == {
        "top-1 accuracy": ["97.50%", "96.67%"],
        "top-5 accuracy": ["99.90%", "99.72%"],
        "accuracy change": ["-", "-0.83 pt"],
        "eval samples": ["360", "360"],
    }
    assert accuracy_cells(sample_report()) == []
    regression = sample_report()
    regression.baseline.accuracy.CopyFrom(report_pb2.AccuracyStats(mse=0.25, samples=8))
    assert {r[0]: r[1:] for r in accuracy_cells(regression)} == {
        "MSE": ["0.25", "-"],
        "accuracy change": ["-", "-"],
        "eval samples": ["8", "-"],
    }


def test_data_and_finetune_summaries() -> None:
    report = finetuned_report()
    assert data_lines(report) == [
        "train: 1 shard, 1,150 samples",
        "eval: 287 samples held out of train (20%)",
        "supervision: label, 10 classes",
    ]
    assert finetune_summary(report) == [
        "before fine-tuning (pruned): top-1 41.11% on 287 samples",
        "fidelity before fine-tuning: top-1 agreement 42.00%, cosine similarity 0.810000",
        "after fine-tuning (finetune): accuracy 96.67%",
        "worker attempts: 2",
    ]
    headers, rows = finetune_rows(report)
    assert headers[:3] == ["phase", "steps", "epochs"]
    assert rows[1] == [
        "finetune",
        "120/200",
        "4",
        "cross_entropy+distillation",
        "accuracy",
        "96.67%",
        "97.01% (100)",
        "early_stopping",
        "7.5",
        "16.0",
        "cuda amp",
        "step 80",
    ]
    assert rows[0][-1] == "-"
    assert metric_text("neg_mse", -0.5) == "MSE 0.5"
    assert metric_text("accuracy", None) == "-"


def test_terminal_and_markdown_show_accuracy_finetuning_and_the_rule() -> None:
    report = finetuned_report()
    text = render_report(report)
    assert "MEETS_ACCURACY_RULE" in text
    assert "FINETUNED" in text
    assert next(line for line in text.splitlines() if line.startswith("top-1 accuracy")).split()[2:] == [
        "97.50%",
        "96.67%",
    ]
    assert "Fine-tuning:\n  before fine-tuning (pruned): top-1 41.11%" in text
    assert "Data:\n  train: 1 shard, 1,150 samples" in text
    assert "accuracy rule: top-1 accuracy drop <= 1 pt" in text
    assert "Accuracy NOT measured" not in text
    markdown = render_markdown(report)
    assert "## Fine-tuning" in markdown
    assert "| round-01 | 40/40 | 1 | distillation | accuracy | 90.00% |" in markdown
    assert "## Data\n\n- train: 1 shard, 1,150 samples" in markdown


def test_accuracy_not_measured_is_said_first() -> None:
    report = sample_report()
    report.warnings.add(code="ACCURACY_NOT_MEASURED", message="the job had no labelled eval data")
    text = render_report(report)
    assert text.splitlines()[0] == "Accuracy NOT measured: the job had no labelled eval data"
    markdown = render_markdown(report)
    assert (
        "> **Accuracy not measured**: the job had no labelled eval data" in markdown.split("## Variants")[0]
    )


def _finetuning(step: int, metric: float | None = None) -> job_pb2.Job:
    progress = job_pb2.FinetuneProgress(
        step=step,
        total_steps=100,
        epoch=step // 40,
        loss=1.0 / (step + 1),
        metric="accuracy",
        phase="finetune",
    )
    if metric is not None:
        progress.eval_metric = metric
    return job_pb2.Job(
        id="j",
        state=job_pb2.JOB_STATE_RUNNING,
        progress=job_pb2.JobProgress(stage="finetune", fraction=0.5, message="training", finetune=progress),
    )


def test_progress_shows_finetuning() -> None:
    assert finetune_progress_text(_finetuning(40, 0.9125).progress.finetune) == (
        "finetune step 40/100 epoch 1 loss 0.0244 accuracy 91.25%"
    )
    out = io.StringIO()
    ticks = iter([0.0, 10.0, 20.0])
    printer = ProgressPrinter(out, clock=lambda: next(ticks))
    for step in (1, 2, 11, 12, 55):
        printer(_finetuning(step, 0.5 if step > 10 else None))
    assert out.getvalue().splitlines() == [
        " 50% finetune: finetune step 1/100 epoch 0 loss 0.5000 (0 s elapsed)",
        " 50% finetune: finetune step 11/100 epoch 0 loss 0.0833 accuracy 50.00% (10 s elapsed, ~10 s left)",
        " 50% finetune: finetune step 55/100 epoch 1 loss 0.0179 accuracy 50.00% (20 s elapsed, ~20 s left)",
    ]
