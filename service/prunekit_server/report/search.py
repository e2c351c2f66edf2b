"""The report's ``search`` section, and the flags and warning the latency target gives the chosen variant."""

from __future__ import annotations

import statistics

from prunekit.v1 import report_pb2

from ..search.outcome import TOLERANCE, CandidateRecord, SearchOutcome
from . import stats as rs


def _candidate(record: CandidateRecord) -> report_pb2.SearchCandidate:
    proto = report_pb2.SearchCandidate(
        name=record.name,
        quantization=record.quantization,
        predicted_p50_ms=record.predicted_ms,
        measured_p50_ms=record.measured_ms,
        prediction_error=record.prediction_error,
        measured_speedup=record.measured_speedup,
        macs=record.macs,
        size_bytes=record.size_bytes,
        meets_target=record.meets_target,
        pareto=record.pareto,
        selected=record.selected,
    )
    if record.quality is not None:
        proto.quality.CopyFrom(rs.quality_stats(record.quality))
    proto.widths.extend(
        report_pb2.LayerWidth(layer=w.layer, width_before=w.before, width_after=w.after)
        for w in record.widths
    )
    return proto


def search_report(outcome: SearchOutcome) -> report_pb2.SearchReport:
    """The search as the report gives it (see ``SearchReport``)."""
    errors = [abs(c.prediction_error) for c in outcome.candidates]
    report = report_pb2.SearchReport(
        target_p50_ms=outcome.target_ms,
        target_speedup=outcome.target_speedup,
        baseline_p50_ms=outcome.baseline_ms,
        met=outcome.met,
        seconds=outcome.seconds,
        median_prediction_error=statistics.median(errors) if errors else 0.0,
        selected=outcome.selected,
        techniques=list(outcome.techniques),
        tolerance=TOLERANCE,
    )
    report.candidates.extend(_candidate(c) for c in outcome.candidates)
    report.tables.extend(
        report_pb2.LatencyTableUse(
            key=t.key,
            description=t.description,
            reused=t.reused,
            entries_used=t.entries_used,
            entries_timed=t.entries_timed,
            timing_seconds=t.seconds,
        )
        for t in outcome.tables
    )
    return report


def meets(variant: report_pb2.ModelVariant, outcome: SearchOutcome) -> bool:
    """Whether the variant's benchmarked speed-up reaches the target within the tolerance."""
    return variant.latency_speedup >= outcome.target_speedup / (1.0 + TOLERANCE)


def mark_selected(
    variants: list[report_pb2.ModelVariant], name: str, outcome: SearchOutcome
) -> list[report_pb2.ReportWarning]:
    """Flag the variant ``name`` SELECTED and MEETS_TARGET or MISSES_TARGET; the TARGET_NOT_MET warning."""
    for variant in variants:
        if variant.name != name:
            continue
        met = meets(variant, outcome)
        variant.flags.append(report_pb2.VARIANT_FLAG_SELECTED)
        variant.flags.append(
            report_pb2.VARIANT_FLAG_MEETS_TARGET if met else report_pb2.VARIANT_FLAG_MISSES_TARGET
        )
        if met:
            return []
        p50 = variant.stats.latency.p50_ms
        return [
            report_pb2.ReportWarning(
                code="TARGET_NOT_MET",
                message=(
                    f"asked for {outcome.target_speedup:.2f}x (p50 <= {outcome.target_ms:.3g} ms); "
                    f"the best point found, {name}, is {variant.latency_speedup:.2f}x ({p50:.3g} ms), "
                    f"{p50 / outcome.target_ms - 1.0:.0%} slower than the target"
                ),
            )
        ]
    return []
