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
        table_p50_ms=record.table_ms,
        table_error=record.table_error,
        faithful=record.faithful,
        macs=record.macs,
        size_bytes=record.size_bytes,
        meets_target=record.meets_target,
        pareto=record.pareto,
        selected=record.selected,
        removed_layers=list(record.removed),
        factorized_layers=list(record.factorized),
    )
    if record.quality is not None:
        proto.quality.CopyFrom(rs.quality_stats(record.quality))
    if record.accuracy is not None:
        proto.accuracy.CopyFrom(rs.accuracy_stats(record.accuracy))
    proto.widths.extend(
        report_pb2.LayerWidth(layer=w.layer, width_before=w.before, width_after=w.after)
        for w in record.widths
    )
    return proto


def search_report(outcome: SearchOutcome) -> report_pb2.SearchReport:
    """The search as the report gives it (see ``SearchReport``)."""
    errors = [abs(c.prediction_error) for c in outcome.candidates]
    table_errors = [abs(c.table_error) for c in outcome.candidates]
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
        median_table_error=statistics.median(table_errors) if table_errors else 0.0,
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
    """Whether the variant's benchmark reaches the target within the tolerance: its p50 for a
    ``latency_ms`` target, its speed-up over the baseline (timed alongside) for a speed-up target."""
    if outcome.absolute:
        return variant.stats.latency.p50_ms <= outcome.target_ms * (1.0 + TOLERANCE)
    return variant.latency_speedup >= outcome.target_speedup / (1.0 + TOLERANCE)


def within_bound(variant: report_pb2.ModelVariant) -> bool:
    """Whether the variant keeps the accuracy rule (when one could judge it)."""
    return report_pb2.VARIANT_FLAG_BELOW_ACCURACY_RULE not in variant.flags


def _shortfall(variant: report_pb2.ModelVariant, outcome: SearchOutcome, met: bool) -> str:
    """Why the selected variant does not meet the target, in words ("" when it does)."""
    p50 = variant.stats.latency.p50_ms
    asked = f"asked for {outcome.target_speedup:.2f}x (p50 <= {outcome.target_ms:.3g} ms)"
    if not met:
        return (
            f"{asked}; the best point found, {variant.name}, is {variant.latency_speedup:.2f}x "
            f"({p50:.3g} ms), {p50 / outcome.target_ms - 1.0:.0%} slower than the target"
        )
    if not within_bound(variant):
        speed = f"{variant.latency_speedup:.2f}x"
        return f"{asked}; {variant.name} reaches it ({speed}) but breaks the accuracy rule"
    if not outcome.met:
        best = f"{variant.name} is the best point found"
        return f"{asked}; no candidate reached it within the quality rule: {best}"
    return ""


def mark_selected(
    variants: list[report_pb2.ModelVariant], name: str, outcome: SearchOutcome
) -> list[report_pb2.ReportWarning]:
    """Flag the variant ``name`` SELECTED and MEETS_TARGET or MISSES_TARGET (latency, by the final
    benchmark); a TARGET_NOT_MET warning when it misses the latency or the quality bound."""
    for variant in variants:
        if variant.name != name:
            continue
        met = meets(variant, outcome)
        variant.flags.append(report_pb2.VARIANT_FLAG_SELECTED)
        variant.flags.append(
            report_pb2.VARIANT_FLAG_MEETS_TARGET if met else report_pb2.VARIANT_FLAG_MISSES_TARGET
        )
        why = _shortfall(variant, outcome, met)
        return [report_pb2.ReportWarning(code="TARGET_NOT_MET", message=why)] if why else []
    return []
