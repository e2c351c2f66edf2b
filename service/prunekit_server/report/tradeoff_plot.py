"""The trade-off plot: each model's accuracy (or fidelity) against its latency and its size."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from prunekit.v1 import report_pb2

from .plots import BASE_COLOR, PALETTE, Plot, to_png
from .units import bytes_unit, ms_unit

Point = tuple[str, float, float, float]
"""(label, p50 ms, size bytes, score)."""


def _score(report: report_pb2.OptimizationReport) -> tuple[str, list[Point]] | None:
    """The y axis: top-1 accuracy when every model has it, else top-1 agreement with the original."""
    models = [("baseline", report.baseline), *((v.name, v.stats) for v in report.variants)]
    accuracy = all(s.HasField("accuracy") and not s.accuracy.HasField("mse") for _, s in models)
    points: list[Point] = []
    for label, stats in models:
        if not stats.HasField("latency"):
            return None
        if accuracy:
            score = stats.accuracy.top1
        elif label == "baseline":
            score = 1.0
        elif stats.HasField("quality"):
            score = stats.quality.top1_agreement
        else:
            return None
        points.append((label, stats.latency.p50_ms, float(stats.size_bytes), score))
    axis = "top-1 accuracy on the eval split" if accuracy else "top-1 agreement with the original"
    return axis, points


def _scatter(ax: Axes, points: list[Point], xs: list[float], unit: str, what: str, axis: str) -> None:
    for i, ((label, *_rest), x) in enumerate(zip(points, xs, strict=True)):
        color = BASE_COLOR if i == 0 else PALETTE[(i - 1) % len(PALETTE)]
        score = points[i][3]
        ax.scatter([x], [score], s=60, color=color, zorder=3, marker="s" if i == 0 else "o")
        ax.annotate(label, (x, score), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel(f"{what} ({unit}, lower is better)")
    ax.set_ylabel(axis)
    ax.set_xlim(left=0, right=max(xs) * 1.25 if max(xs) > 0 else 1)
    ax.grid(alpha=0.3)


def tradeoff_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Two panels, latency and size on x, accuracy (or fidelity) on y, one point per model; None without
    variants or measurements."""
    if not report.variants:
        return None
    scored = _score(report)
    if scored is None:
        return None
    axis, points = scored
    factor, time_unit = ms_unit(p[1] for p in points)
    divisor, size_unit = bytes_unit(p[2] for p in points)
    fig = Figure(figsize=(11.0, 4.2))
    left, right = fig.subplots(1, 2)
    _scatter(left, points, [p[1] * factor for p in points], time_unit, "p50 latency", axis)
    _scatter(right, points, [p[2] / divisor for p in points], size_unit, "model size", axis)
    left.set_title("Accuracy against latency", fontsize=10)
    right.set_title("Accuracy against size", fontsize=10)
    fig.tight_layout()
    caption = (
        "Up and to the left is better: each model's "
        + ("accuracy" if axis.startswith("top-1 accuracy") else "agreement with the original")
        + " against its p50 latency and its file size; the square is the baseline."
    )
    return Plot("tradeoff", "Trade-off: accuracy against latency and size", caption, to_png(fig), wide=True)
