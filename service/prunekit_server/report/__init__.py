"""Building the optimization report (``report_pb2``) from measured facts."""

from __future__ import annotations

from .build import (
    QUALITY_FLOOR,
    SLOWER_TOLERANCE,
    benchmark_protocol,
    build_report,
    latency_stats,
    layer_changes,
    model_file,
    model_stats,
    model_variant,
    quality_stats,
    slower_than_baseline,
    synthetic_inputs_warning,
    unstructured_no_speedup,
    upstream_warnings,
    variant_flags,
    variant_warnings,
    warning,
)

__all__ = [
    "QUALITY_FLOOR",
    "SLOWER_TOLERANCE",
    "benchmark_protocol",
    "build_report",
    "latency_stats",
    "layer_changes",
    "model_file",
    "model_stats",
    "model_variant",
    "quality_stats",
    "slower_than_baseline",
    "synthetic_inputs_warning",
    "unstructured_no_speedup",
    "upstream_warnings",
    "variant_flags",
    "variant_warnings",
    "warning",
]
