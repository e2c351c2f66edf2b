"""A DYNAMIC job's section as plain strings: the summary lines, per-model latency, exits, threshold sweep.

Like :mod:`prunekit.text.search_tables`, the renderers (Markdown, HTML, terminal) only lay these out.
"""

from __future__ import annotations

from prunekit.text.format import DASH
from prunekit.v1 import report_pb2, spec_pb2

__all__ = [
    "dynamic_exit_rows",
    "dynamic_model_rows",
    "dynamic_summary",
    "dynamic_sweep_rows",
    "is_token_skip",
]


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def is_token_skip(report: report_pb2.OptimizationReport) -> bool:
    """True when the dynamic section is TOKEN_SKIP's (kept tokens, not exits)."""
    return report.dynamic.form == spec_pb2.DYNAMIC_FORM_TOKEN_SKIP


def dynamic_summary(report: report_pb2.OptimizationReport) -> list[str]:
    """The speed-up, the threshold (or kept tokens) and how it was chosen, the inputs, batches and protocol,
    one line each."""
    d = report.dynamic
    if is_token_skip(report):
        per_layer = ", ".join(f"layer {t.layer}: {t.tokens}" for t in d.tokens)
        knob = f"{d.keep_tokens} tokens kept; tokens per layer: {per_layer}"
        if d.distill_steps:
            knob += f"; scorer and later layers trained {d.distill_steps} distillation steps"
    else:
        knob = f"threshold {d.threshold:g}"
    return [
        f"Mean latency over the inputs: {d.mean_speedup:.2f}x lower than the original's "
        f"({knob}; {d.calibration_rule}).",
        f"Inputs: {d.inputs}.",
        f"Calibrated on: {d.calibration_inputs or d.inputs}.",
        f"Batches: {d.batch_rule}.",
        f"Protocol: {d.protocol}.",
    ]


def dynamic_model_rows(report: report_pb2.OptimizationReport) -> tuple[list[str], list[list[str]]]:
    """One row per model: mean, p50, p90, p99 (ms) over the inputs, accuracy, agreement with the original."""
    headers = ["model", "inputs", "mean (ms)", "p50 (ms)", "p90 (ms)", "p99 (ms)", "top-1 acc.", "top-1 agr."]
    rows = [
        [
            m.name,
            str(m.samples),
            f"{m.mean_ms:.4g}",
            f"{m.p50_ms:.4g}",
            f"{m.p90_ms:.4g}",
            f"{m.p99_ms:.4g}",
            _percent(m.accuracy) if m.HasField("accuracy") else DASH,
            _percent(m.top1_agreement),
        ]
        for m in report.dynamic.models
    ]
    return headers, rows


def dynamic_exit_rows(report: report_pb2.OptimizationReport) -> tuple[list[str], list[list[str]]]:
    """One row per exit then the full network: the tensor it reads, MACs share, inputs leaving there
    (TOKEN_SKIP: one row per layer and the tokens it runs on)."""
    if is_token_skip(report):
        return ["layer", "tokens per input"], [[str(t.layer), str(t.tokens)] for t in report.dynamic.tokens]
    headers = ["exit", "after", "MACs share", "inputs leaving", "head top-1 agr."]
    rows = [
        [
            e.name,
            e.after or DASH,
            _percent(e.macs_fraction),
            _percent(e.share),
            _percent(e.head_agreement) if e.after else DASH,
        ]
        for e in report.dynamic.exits
    ]
    return headers, rows


def dynamic_sweep_rows(report: report_pb2.OptimizationReport) -> tuple[list[str], list[list[str]]]:
    """One row per swept threshold: the metric, the expected MACs share, the measured mean latency."""
    d = report.dynamic
    tokens = is_token_skip(report)
    headers = ["kept tokens" if tokens else "threshold", d.metric or "metric", "MACs share", "mean (ms)", ""]
    chosen = float(d.keep_tokens) if tokens else d.threshold
    rows = [
        [
            str(p.keep_tokens) if tokens else f"{p.threshold:g}",
            _percent(p.metric),
            _percent(p.macs_fraction),
            f"{p.mean_ms:.4g}" if p.mean_ms else DASH,
            "chosen" if abs((p.keep_tokens if tokens else p.threshold) - chosen) < 1e-12 else "",
        ]
        for p in d.sweep
    ]
    return headers, rows
