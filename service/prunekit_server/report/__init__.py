"""Building the optimization report (``report_pb2``) from measured facts."""

from __future__ import annotations

from .build import build_report
from .flags import QUALITY_FLOOR, SLOWER_TOLERANCE, slower_than_baseline, variant_flags, variant_warnings
from .notes import synthetic_inputs_warning, unstructured_no_speedup, upstream_warnings, warning
from .protocol import benchmark_protocol
from .stats import latency_stats, layer_changes, model_file, model_stats, model_variant, quality_stats

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
