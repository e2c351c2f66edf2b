"""Accuracy, fine-tuning and data as plain strings: what the terminal, Markdown and HTML renderings show.

Like :mod:`prunekit.text.report_tables`, each function returns cells or lines and
the renderers only lay them out. Nothing here needs more than protobuf.
"""

from __future__ import annotations

from prunekit.text.format import DASH, count
from prunekit.v1 import job_pb2, report_pb2

__all__ = [
    "ACCURACY_NOT_MEASURED",
    "accuracy_cells",
    "accuracy_not_measured",
    "data_lines",
    "finetune_progress_text",
    "finetune_rows",
    "finetune_summary",
    "metric_text",
]

ACCURACY_NOT_MEASURED = "ACCURACY_NOT_MEASURED"


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def metric_text(metric: str, value: float | None) -> str:
    """An eval metric as people read it: accuracy and top-1 agreement as percentages, neg_mse as MSE."""
    if value is None:
        return DASH
    if metric == "neg_mse":
        return f"MSE {-value:.4g}"
    if metric in ("accuracy", "top1_agreement"):
        return _percent(value)
    return f"{value:.4g}"


def _stats(stats: report_pb2.ModelStats) -> report_pb2.AccuracyStats | None:
    return stats.accuracy if stats.HasField("accuracy") else None


def accuracy_cells(report: report_pb2.OptimizationReport) -> list[list[str]]:
    """Rows for the variant table (label, baseline, each variant): top-1, top-5 or MSE, the change, samples.

    Empty when no model has accuracy; top-5 and MSE rows only when some model has them.
    """
    models = [_stats(report.baseline), *(_stats(v.stats) for v in report.variants)]
    if not any(models):
        return []
    base = models[0]
    rows: list[list[str]] = []
    if any(a is not None and not a.HasField("mse") for a in models):
        rows.append(["top-1 accuracy", *(_percent(a.top1) if a else DASH for a in models)])
    if any(a is not None and a.HasField("top5") for a in models):
        rows.append(
            ["top-5 accuracy", *(_percent(a.top5) if a and a.HasField("top5") else DASH for a in models)]
        )
    if any(a is not None and a.HasField("mse") for a in models):
        rows.append(["MSE", *(f"{a.mse:.4g}" if a and a.HasField("mse") else DASH for a in models)])
    changes = [DASH]
    for a in models[1:]:
        if a is None or base is None or a.HasField("mse") or base.HasField("mse"):
            changes.append(DASH)
        else:
            changes.append(f"{(a.top1 - base.top1) * 100:+.2f} pt")
    rows.append(["accuracy change", *changes])
    rows.append(["eval samples", *(count(a.samples) if a else DASH for a in models)])
    return rows


def accuracy_not_measured(report: report_pb2.OptimizationReport) -> str | None:
    """The ACCURACY_NOT_MEASURED warning's message, when the report carries it."""
    for warning in report.warnings:
        if warning.code == ACCURACY_NOT_MEASURED:
            return warning.message or "no labelled eval data"
    return None


def data_lines(report: report_pb2.OptimizationReport) -> list[str]:
    """What the job's data was: shards and samples per split, how eval was made, the supervision."""
    if not report.HasField("data"):
        return []
    d = report.data

    def split(name: str, shards: int, samples: int) -> str:
        return f"{name}: {shards} shard{'s' if shards != 1 else ''}, {count(samples)} samples"

    lines = [split("train", len(d.train), d.train_samples)]
    evaluation = split("eval", len(d.eval), d.eval_samples)
    if not d.eval and d.eval_fraction:
        evaluation = f"eval: {count(d.eval_samples)} samples held out of train ({d.eval_fraction:.0%})"
    lines.append(evaluation)
    supervision = d.supervision or "none"
    if d.num_classes:
        supervision += f", {d.num_classes} classes"
    lines.append(f"supervision: {supervision}")
    return lines


def finetune_summary(report: report_pb2.OptimizationReport) -> list[str]:
    """Before fine-tuning (accuracy, fidelity of the pruned model), the metric after each run, attempts."""
    if not report.HasField("finetune"):
        return []
    ft = report.finetune
    lines = []
    if ft.HasField("before"):
        b = ft.before
        value = f"MSE {b.mse:.4g}" if b.HasField("mse") else f"top-1 {_percent(b.top1)}"
        if b.HasField("top5"):
            value += f", top-5 {_percent(b.top5)}"
        lines.append(f"before fine-tuning (pruned): {value} on {count(b.samples)} samples")
    if ft.HasField("quality_before"):
        q = ft.quality_before
        lines.append(
            f"fidelity before fine-tuning: top-1 agreement {_percent(q.top1_agreement)}, "
            f"cosine similarity {q.cosine_similarity:.6f}"
        )
    if ft.runs:
        last = ft.runs[-1]
        final = last.final_metric if last.HasField("final_metric") else None
        lines.append(f"after fine-tuning ({last.phase}): {last.metric} {metric_text(last.metric, final)}")
    lines.append(f"worker attempts: {ft.attempts or 1}")
    return lines


FINETUNE_HEADERS = [
    "phase",
    "steps",
    "epochs",
    "loss",
    "metric",
    "final",
    "best (step)",
    "stop",
    "seconds",
    "steps/s",
    "device",
    "resumed from",
]


def finetune_rows(report: report_pb2.OptimizationReport) -> tuple[list[str], list[list[str]]]:
    """One row per fine-tuning run: phase, steps, epochs, loss, metric before the best, speed, resumption."""
    rows = []
    for run in report.finetune.runs:
        final = run.final_metric if run.HasField("final_metric") else None
        best = metric_text(run.metric, run.best_metric) if run.HasField("best_metric") else DASH
        if run.HasField("best_metric") and run.best_step:
            best += f" ({run.best_step})"
        device = (run.device or DASH) + (" amp" if run.mixed_precision else "")
        rows.append(
            [
                run.phase,
                f"{run.steps}/{run.total_steps}" if run.total_steps else str(run.steps),
                str(run.epochs),
                run.loss or DASH,
                run.metric or DASH,
                metric_text(run.metric, final),
                best,
                run.stop_reason or DASH,
                f"{run.seconds:.1f}",
                f"{run.steps_per_second:.1f}",
                device,
                f"step {run.resumed_from_step}" if run.resumed_from_step else DASH,
            ]
        )
    return FINETUNE_HEADERS, rows


def finetune_progress_text(p: job_pb2.FinetuneProgress) -> str:
    """``round-2 step 40/120 epoch 1 loss 0.4312 accuracy 91.20%`` for a progress line."""
    text = f"{p.phase or 'finetune'} step {p.step}/{p.total_steps} epoch {p.epoch} loss {p.loss:.4f}"
    if p.HasField("eval_metric"):
        text += f" {p.metric or 'metric'} {metric_text(p.metric, p.eval_metric)}"
    if p.checkpoint_step:
        text += f" (checkpoint at {p.checkpoint_step})"
    return text
