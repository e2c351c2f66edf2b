"""A DYNAMIC job's plots: per-input latency distribution per model, and the metric against the threshold."""

from __future__ import annotations

from matplotlib.figure import Figure

from prunekit.v1 import report_pb2, spec_pb2

from .plots import PALETTE, Plot, to_png

__all__ = ["dynamic_plots"]


def _latency(report: report_pb2.OptimizationReport) -> Plot | None:
    models = [m for m in report.dynamic.models if m.latencies_ms]
    if not models:
        return None
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    everything = [v for m in models for v in m.latencies_ms]
    low, high = min(everything), max(everything)
    bins = [low + (high - low) * i / 40 for i in range(41)] if high > low else 10
    for i, m in enumerate(models):
        color = PALETTE[i % len(PALETTE)]
        ax.hist(
            list(m.latencies_ms),
            bins=bins,
            alpha=0.55,
            color=color,
            label=f"{m.name} (mean {m.mean_ms:.3g} ms)",
        )
        ax.axvline(m.mean_ms, color=color, ls="--", lw=1)
    ax.set_xlabel("latency per input (ms)")
    ax.set_ylabel("inputs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Latency per input", fontsize=10)
    return Plot(
        "dynamic_latency",
        "Latency per input",
        f"Each input's latency (median of the rounds), original and dynamic, over {report.dynamic.inputs}.",
        to_png(fig),
    )


def _sweep(report: report_pb2.OptimizationReport) -> Plot | None:
    d = report.dynamic
    points = list(d.sweep)
    if not points:
        return None
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    tokens = d.form == spec_pb2.DYNAMIC_FORM_TOKEN_SKIP
    ax.plot([p.threshold for p in points], [p.metric for p in points], "o-", color=PALETTE[0], label=d.metric)
    chosen = (
        next((p.threshold for p in points if p.keep_tokens == d.keep_tokens), 1.0) if tokens else d.threshold
    )
    ax.axvline(chosen, ls="--", color=PALETTE[3], label="chosen")
    ax.set_xlabel("kept fraction of the tokens" if tokens else "exit threshold (confidence)")
    ax.set_ylabel(d.metric.replace("_", " "))
    ax.grid(alpha=0.3)
    timed = [p for p in points if p.mean_ms > 0]
    if timed:
        twin = ax.twinx()
        twin.plot(
            [p.threshold for p in timed], [p.mean_ms for p in timed], "s:", color=PALETTE[1], label="mean ms"
        )
        twin.set_ylabel("measured mean latency (ms)")
        twin.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Threshold sweep", fontsize=10)
    return Plot(
        "dynamic_sweep",
        "Accuracy against threshold",
        "The metric and the measured mean latency at each exit threshold (TOKEN_SKIP: kept fraction); the "
        "dashed line is the one used.",
        to_png(fig),
    )


def dynamic_plots(report: report_pb2.OptimizationReport) -> list[Plot]:
    """The latency distribution and the sweep, when the report has a dynamic section."""
    if not report.HasField("dynamic"):
        return []
    return [p for p in (_latency(report), _sweep(report)) if p is not None]
