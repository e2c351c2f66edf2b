"""The trade-off the latency-target search found: quality against measured latency, per candidate."""

from __future__ import annotations

from matplotlib.figure import Figure

from prunekit.v1 import report_pb2

from .plots import PALETTE, Plot, to_png


def _quality(c: report_pb2.SearchCandidate, by_accuracy: bool) -> float:
    return c.accuracy.top1 if by_accuracy else c.quality.cosine_similarity


def pareto_plot(report: report_pb2.OptimizationReport) -> Plot | None:
    """Quality against measured p50 for every candidate, the front joined, the target line.

    Quality is top-1 accuracy on the eval split when every candidate has it (the search ranked by
    it), else cosine similarity to the original.
    """
    candidates = list(report.search.candidates)
    if not candidates:
        return None
    by_accuracy = all(c.HasField("accuracy") and not c.accuracy.HasField("mse") for c in candidates)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    modes = sorted({c.quantization for c in candidates})
    for i, mode in enumerate(modes):
        group = [c for c in candidates if c.quantization == mode]
        ax.scatter(
            [c.measured_p50_ms for c in group],
            [_quality(c, by_accuracy) for c in group],
            color=PALETTE[i % len(PALETTE)],
            label=f"quantization: {mode}",
            zorder=3,
        )
    front = sorted((c for c in candidates if c.pareto), key=lambda c: c.measured_p50_ms)
    if len(front) > 1:
        ax.plot(
            [c.measured_p50_ms for c in front],
            [_quality(c, by_accuracy) for c in front],
            color="#333333",
            lw=1,
            label="Pareto front",
        )
    for c in candidates:
        ax.annotate(
            c.name,
            (c.measured_p50_ms, _quality(c, by_accuracy)),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
        if c.selected:
            ax.scatter(
                [c.measured_p50_ms],
                [_quality(c, by_accuracy)],
                s=160,
                facecolors="none",
                edgecolors="#333333",
                label="selected",
                zorder=4,
            )
    ax.axvline(report.search.target_p50_ms, ls="--", color=PALETTE[3], label="target p50")
    ax.axvline(report.search.baseline_p50_ms, ls=":", color="#7f7f7f", label="original p50")
    ax.set_xlabel("measured p50 (ms)")
    ax.set_ylabel("top-1 accuracy (eval split)" if by_accuracy else "cosine similarity to the original")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Latency-target search", fontsize=10)
    return Plot(
        "search",
        "Latency-target search",
        "Each candidate's quality against its measured latency; left of the dashed line meets the target.",
        to_png(fig),
    )
