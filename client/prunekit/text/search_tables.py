"""The latency-target search as text: a summary and the candidates table (markdown, HTML, terminal)."""

from __future__ import annotations

from prunekit.v1 import report_pb2

__all__ = ["search_rows", "search_summary"]


def search_summary(report: report_pb2.OptimizationReport) -> list[str]:
    """The target, the outcome, the prediction error and the tables, one line each."""
    s = report.search
    verdict = "met" if s.met else "NOT met"
    lines = [
        f"Target: {s.target_speedup:.2f}x (p50 <= {s.target_p50_ms:.4g} ms) over the original's "
        f"{s.baseline_p50_ms:.4g} ms; {verdict} (within +{s.tolerance:.0%}). Selected: {s.selected}.",
        f"{len(s.candidates)} candidate(s) in {s.seconds:.1f} s; techniques: {', '.join(s.techniques)}; "
        f"median latency-table prediction error {s.median_prediction_error:.1%}.",
    ]
    for t in s.tables:
        how = "reused from storage" if t.reused else "built by this job"
        lines.append(
            f"Latency table {t.key} ({t.description}): {how}; {t.entries_used} entries used, "
            f"{t.entries_timed} timed ({t.timing_seconds:.1f} s)."
        )
    return lines


def search_rows(report: report_pb2.OptimizationReport) -> tuple[list[str], list[list[str]]]:
    """One row per candidate: name, quantization, predicted/measured p50, error, speed-up, MACs, quality."""
    headers = [
        "candidate",
        "quantization",
        "predicted p50 (ms)",
        "measured p50 (ms)",
        "error",
        "speed-up",
        "MACs",
        "cosine",
        "top-1 agr.",
        "top-1 acc.",
        "narrowed groups",
        "",
    ]
    rows = []
    for c in report.search.candidates:
        marks = [
            m for m, on in (("selected", c.selected), ("meets", c.meets_target), ("pareto", c.pareto)) if on
        ]
        rows.append(
            [
                c.name,
                c.quantization,
                f"{c.predicted_p50_ms:.3f}",
                f"{c.measured_p50_ms:.3f}",
                f"{c.prediction_error:+.1%}",
                f"{c.measured_speedup:.2f}x",
                f"{c.macs:,}",
                f"{c.quality.cosine_similarity:.4f}" if c.HasField("quality") else "-",
                f"{c.quality.top1_agreement:.3f}" if c.HasField("quality") else "-",
                f"{c.accuracy.top1:.2%}"
                if c.HasField("accuracy") and not c.accuracy.HasField("mse")
                else "-",
                str(len(c.widths)) + (f"; removed {', '.join(c.removed_layers)}" if c.removed_layers else ""),
                ", ".join(marks),
            ]
        )
    return headers, rows
