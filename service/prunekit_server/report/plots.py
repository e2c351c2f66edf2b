"""The report's plots, drawn with matplotlib (Agg, no display) into base64 PNGs.

Every function takes the report proto and returns a :class:`Plot`, or None
when the report holds nothing to draw for it. :func:`plots` returns all that
apply, in page order: the variants side by side, accuracy (when measured),
speed-up against MACs reduction, latency, latency windows, per-layer widths
or density, fine-tuning loss curves (when it ran), and, when an analysis
filled them, sensitivity curves and the steps of a schedule.
Wide plots (:attr:`Plot.wide`) span the page.
Figures are made with ``matplotlib.figure.Figure`` (no pyplot state), so
rendering is safe to repeat in one process.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from prunekit.v1 import report_pb2

from .units import bytes_unit, ms_unit

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974"]
"""Muted colours for data; the page's plot markers use saturated ones no plot contains."""
BASE_COLOR = "#7f7f7f"
SLOWER = report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE
SELECTED = report_pb2.VARIANT_FLAG_SELECTED
MAX_LAYERS = 60
DPI = 100


@dataclass(frozen=True)
class Plot:
    """One figure: a stable key (``layers``, ``variants``...), a title, a caption and the PNG in base64."""

    key: str
    title: str
    caption: str
    png_base64: str
    wide: bool = False


def to_png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _models(report: report_pb2.OptimizationReport) -> list[tuple[str, report_pb2.ModelStats, list[int]]]:
    """(label, stats, flags) of the baseline and every variant; labels mark slower and selected variants."""
    out: list[tuple[str, report_pb2.ModelStats, list[int]]] = [("baseline", report.baseline, [])]
    for v in report.variants:
        label = v.name + (" (slower)" if SLOWER in v.flags else "") + (" *" if SELECTED in v.flags else "")
        out.append((label, v.stats, list(v.flags)))
    return out


def _colors(n: int) -> list[str]:
    """The baseline's grey, then the palette for ``n - 1`` variants."""
    return [BASE_COLOR, *(PALETTE[i % len(PALETTE)] for i in range(n - 1))]


def _bars(
    ax: Axes, labels: Sequence[str], values: Sequence[float], flags: Sequence[list[int]], title: str
) -> None:
    bars = ax.bar(range(len(values)), values, color=_colors(len(values)))
    for bar, flag in zip(bars, flags, strict=True):
        if SLOWER in flag:
            bar.set_hatch("//")
            bar.set_edgecolor("#b00020")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def layers_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Output channels before/after per layer when shapes changed; else the fraction of non-zero weights."""
    layers = list(report.layers)[:MAX_LAYERS]
    if not layers:
        return None
    structured = any(
        la.shape_after and la.shape_before and la.shape_after[0] != la.shape_before[0] for la in report.layers
    )
    if structured:
        before = [float(la.shape_before[0]) if la.shape_before else 0.0 for la in layers]
        after = [float(la.shape_after[0]) if la.shape_after else 0.0 for la in layers]
        title, unit = "Layer widths before and after pruning", "output channels / features"
    else:
        before = [
            la.nonzero_before / la.parameters_before * 100 if la.parameters_before else 0.0 for la in layers
        ]
        after = [
            la.nonzero_after / la.parameters_after * 100 if la.parameters_after else 0.0 for la in layers
        ]
        title, unit = "Non-zero weights per layer before and after pruning", "% of weights non-zero"
    fig = Figure(figsize=(11.0, max(3.0, 0.22 * len(layers) + 1.2)))
    ax = fig.subplots()
    rows = list(range(len(layers)))
    ax.barh([r - 0.2 for r in rows], before, height=0.4, color=BASE_COLOR, label="before")
    ax.barh([r + 0.2 for r in rows], after, height=0.4, color=PALETTE[0], label="after")
    ax.set_yticks(rows, [la.name[-40:] for la in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    hidden = len(report.layers) - len(layers)
    caption = f"{len(layers)} layers" + (f" shown, {hidden} more in the tables" if hidden > 0 else "")
    return Plot("layers", title, caption + "; skipped layers keep their weights.", to_png(fig), wide=True)


def variants_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Size, MACs, p50 latency and fidelity of every model side by side."""
    if not report.variants:
        return None
    models = _models(report)
    labels = [m[0] for m in models]
    flags = [m[2] for m in models]
    fig = Figure(figsize=(11.0, 6.0))
    axes = fig.subplots(2, 2)
    divisor, size_unit = bytes_unit(s.compressed_size_bytes for _, s, _ in models)
    _bars(
        axes[0][0],
        labels,
        [s.compressed_size_bytes / divisor for _, s, _ in models],
        flags,
        f"Compressed size ({size_unit})",
    )
    _bars(axes[0][1], labels, [s.macs / 1e6 for _, s, _ in models], flags, "MACs (millions)")
    factor, time_unit = ms_unit(s.latency.p50_ms for _, s, _ in models)
    _bars(
        axes[1][0],
        labels,
        [s.latency.p50_ms * factor for _, s, _ in models],
        flags,
        f"p50 latency ({time_unit}, lower is better)",
    )
    quality = [s.quality.top1_agreement if s.HasField("quality") else 1.0 for _, s, _ in models]
    cosine = [s.quality.cosine_similarity if s.HasField("quality") else 1.0 for _, s, _ in models]
    ax = axes[1][1]
    xs = list(range(len(models)))
    ax.bar([x - 0.2 for x in xs], quality, width=0.4, color=PALETTE[2], label="top-1 agreement")
    ax.bar([x + 0.2 for x in xs], cosine, width=0.4, color=PALETTE[4], label="cosine similarity")
    if report.protocol.HasField("quality_rule"):
        ax.axhline(
            report.protocol.quality_rule.min_top1_agreement, color="#b00020", lw=1, ls="--", label="rule"
        )
    ax.set_ylim(min([*quality, *cosine, 0.9]) - 0.02, 1.005)
    ax.set_xticks(xs, labels, rotation=30, ha="right", fontsize=8)
    ax.set_title("Fidelity to the original", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    caption = "Hatched red bars: slower than the baseline (not an improvement). * marks AUTO's choice."
    return Plot("variants", "Every variant side by side", caption, to_png(fig), wide=True)


def accuracy_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Top-1 (and top-5) accuracy of every model, with the accuracy rule's floor; MSE for targets."""
    models = [(label, s.accuracy) for label, s, _ in _models(report) if s.HasField("accuracy")]
    if not models:
        return None
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    xs = list(range(len(models)))
    labels = [m[0] for m in models]
    if all(a.HasField("mse") for _, a in models):
        ax.bar(xs, [a.mse for _, a in models], color=_colors(len(models)))
        ax.set_ylabel("mean squared error (lower is better)")
        title, caption = "Error on the eval targets", "MSE of the first output against the eval targets."
    else:
        top5 = any(a.HasField("top5") for _, a in models)
        width = 0.4 if top5 else 0.6
        ax.bar(
            [x - (0.2 if top5 else 0.0) for x in xs],
            [a.top1 for _, a in models],
            width,
            color=PALETTE[0],
            label="top-1",
        )
        if top5:
            ax.bar([x + 0.2 for x in xs], [a.top5 for _, a in models], width, color=PALETTE[2], label="top-5")
        drop = report.protocol.quality_rule.max_accuracy_drop
        base = report.baseline.accuracy.top1 if report.baseline.HasField("accuracy") else None
        if drop > 0 and base is not None:
            ax.axhline(
                base - drop, color="#b00020", lw=1, ls="--", label=f"rule: baseline - {drop * 100:g} pt"
            )
        ax.set_ylim(max(0.0, min(a.top1 for _, a in models) - 0.1), 1.005)
        ax.set_ylabel("accuracy on the eval split")
        ax.legend(fontsize=7, loc="lower left")
        title, caption = (
            "Accuracy on the eval split",
            "Dashed red: the accuracy rule's floor, when one is set.",
        )
    ax.set_xticks(xs, labels, rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return Plot("accuracy", title, f"{caption} {models[0][1].samples} eval samples.", to_png(fig))


def finetune_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """The training loss of every fine-tuning run against its step."""
    runs = [r for r in report.finetune.runs if r.loss_curve]
    if not runs:
        return None
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    for i, run in enumerate(runs):
        steps = list(run.loss_curve_steps) or list(range(1, len(run.loss_curve) + 1))
        ax.plot(
            steps, list(run.loss_curve), color=PALETTE[i % len(PALETTE)], label=f"{run.phase} ({run.loss})"
        )
        if run.resumed_from_step:
            ax.axvline(run.resumed_from_step, color=PALETTE[i % len(PALETTE)], ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if len(runs) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("Fine-tuning loss", fontsize=10)
    caption = "Training loss per run; a dotted line marks the step a run resumed at from a checkpoint."
    return Plot("finetune", "Fine-tuning loss", caption, to_png(fig))


def speedup_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Measured latency speed-up against MACs reduction, with the line where both are equal."""
    points = [(v.name, v.macs_reduction, v.latency_speedup) for v in report.variants if v.macs_reduction]
    if not points:
        return None
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    top = max([2.0, *(p[1] for p in points), *(p[2] for p in points)]) * 1.1
    ax.plot([0, top], [0, top], color=BASE_COLOR, ls="--", lw=1, label="speed-up = MACs reduction")
    ax.axhline(1.0, color="#b00020", lw=1, ls=":", label="baseline speed")
    for i, (name, macs, speed) in enumerate(points):
        ax.scatter([macs], [speed], s=60, color=PALETTE[i % len(PALETTE)], zorder=3)
        near = sum(1 for _, m, v in points[:i] if abs(m - macs) < 0.03 * top and abs(v - speed) < 0.03 * top)
        ax.annotate(name, (macs, speed), textcoords="offset points", xytext=(7, 2 - 11 * near), fontsize=8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("MACs reduction (baseline / variant)")
    ax.set_ylabel("latency speed-up (baseline p50 / variant p50)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title("Speed-up against MACs reduction", fontsize=10)
    caption = (
        "Below the dashed line the runtime gains less than the arithmetic saved; below 1.0 it is slower."
    )
    return Plot("speedup", "Speed-up against MACs reduction", caption, to_png(fig))


def latency_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Throughput per batch size when several were measured; else p50/p90/p99 per model."""
    models = _models(report)
    if not report.baseline.HasField("latency"):
        return None
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    batches = sorted({lat.batch_size for _, s, _ in models for lat in s.latencies})
    if len(batches) > 1:
        for i, (label, stats, _) in enumerate(models):
            for runtime in sorted({lat.runtime for lat in stats.latencies}):
                series = sorted(
                    (lat.batch_size, lat.throughput_per_s)
                    for lat in stats.latencies
                    if lat.runtime == runtime
                )
                color = BASE_COLOR if i == 0 else PALETTE[(i - 1) % len(PALETTE)]
                style = "-" if runtime.startswith("onnxruntime") else ":"
                name = label if style == "-" else f"{label} ({runtime.split()[0]})"
                ax.plot(
                    [b for b, _ in series], [t for _, t in series], style, marker="o", color=color, label=name
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (samples / s)")
        title = "Throughput by batch size"
    else:
        xs = list(range(len(models)))
        factor, unit = ms_unit(s.latency.p99_ms for _, s, _ in models)
        for offset, name in zip((-0.27, 0.0, 0.27), ("p50", "p90", "p99"), strict=True):
            values = [float(getattr(s.latency, f"{name}_ms")) * factor for _, s, _ in models]
            ax.bar([x + offset for x in xs], values, width=0.27, label=name)
        ax.set_xticks(xs, [m[0] for m in models], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(unit)
        title = f"Latency percentiles at batch {report.baseline.latency.batch_size}"
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return Plot("latency", title, "Measured, never estimated: see the protocol below.", to_png(fig))


def stability_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """The p50 of every measurement window of each model's primary measurement."""
    models = [(label, s.latency) for label, s, _ in _models(report) if s.latency.window_p50_ms]
    if not models:
        return None
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    tolerance = report.protocol.stability_tolerance or 0.1
    factor, unit = ms_unit(v for _, lat in models for v in lat.window_p50_ms)
    for i, (label, lat) in enumerate(models):
        values = [v * factor for v in lat.window_p50_ms]
        color = BASE_COLOR if i == 0 else PALETTE[(i - 1) % len(PALETTE)]
        xs = list(range(1, len(values) + 1))
        ax.plot(
            xs, values, marker="o", color=color, label=f"{label} ({'stable' if lat.stable else 'unstable'})"
        )
        last = values[-3:]
        mean = sum(last) / len(last)
        ax.fill_between(
            xs[-len(last) :], mean * (1 - tolerance), mean * (1 + tolerance), color=color, alpha=0.12
        )
    ax.set_xlabel("window")
    ax.set_ylabel(f"p50 of the window ({unit})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("Latency windows (shaded: the stability band)", fontsize=10)
    caption = f"Stable: the last windows' p50 within {tolerance:.0%} of their mean."
    return Plot("stability", "Latency windows", caption, to_png(fig))


def sensitivity_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Each analysed layer's metric against its pruning ratio."""
    if not report.sensitivity:
        return None
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    for i, curve in enumerate(report.sensitivity):
        ax.plot(
            list(curve.ratios),
            list(curve.values),
            marker=".",
            color=PALETTE[i % len(PALETTE)],
            label=curve.layer,
        )
    ax.set_xlabel("pruning ratio of the layer")
    ax.set_ylabel(report.sensitivity[0].metric or "metric")
    if len(report.sensitivity) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("Sensitivity per layer", fontsize=10)
    return Plot(
        "sensitivity",
        "Sensitivity per layer",
        "Layers whose curve falls early deserve a lower ratio.",
        to_png(fig),
    )


def schedule_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """The metric (and MACs) after each step of an iterative schedule."""
    if not report.schedule:
        return None
    steps = sorted(report.schedule, key=lambda s: s.step)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    ax.plot(
        [s.step for s in steps], [s.value for s in steps], marker="o", color=PALETTE[0], label=steps[0].metric
    )
    ax.set_xlabel("step")
    ax.set_ylabel(steps[0].metric or "metric")
    twin = ax.twinx()
    twin.plot(
        [s.step for s in steps], [s.macs / 1e6 for s in steps], ls="--", color=PALETTE[1], label="MACs (M)"
    )
    twin.set_ylabel("MACs (millions)")
    ax.grid(alpha=0.3)
    ax.set_title("Per-step quality of the schedule", fontsize=10)
    return Plot(
        "schedule", "Per-step quality", "Solid: the metric; dashed: MACs after the step.", to_png(fig)
    )


PLOTTERS: list[Callable[[report_pb2.OptimizationReport], Plot | None]] = [
    variants_plot,
    accuracy_plot,
    speedup_plot,
    latency_plot,
    stability_plot,
    layers_plot,
    finetune_plot,
    sensitivity_plot,
    schedule_plot,
]


def plots(report: report_pb2.OptimizationReport) -> list[Plot]:
    """Every plot the report has data for, in page order."""
    return [plot for plotter in PLOTTERS if (plot := plotter(report)) is not None]
