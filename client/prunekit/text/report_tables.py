"""A report as tables of plain strings: what the terminal and the Markdown renderings both show.

Each function returns headers and rows (lists of cells); the renderers only
lay them out. Nothing here needs more than protobuf.
"""

from __future__ import annotations

from collections.abc import Sequence

from prunekit.text.format import DASH, count, enum_name, ms, shape, si, size
from prunekit.text.training_tables import accuracy_cells
from prunekit.v1 import model_pb2, report_pb2, spec_pb2

__all__ = [
    "METRICS",
    "flag_names",
    "grouped_warnings",
    "latency_rows",
    "layer_rows",
    "protocol_parts",
    "quantization_text",
    "stability_text",
    "variant_rows",
]

METRICS = [
    "parameters",
    "nonzero",
    "size",
    "compressed size",
    "MACs",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "throughput",
    "speed-up",
    "top-1 agreement",
    "cosine similarity",
    "max abs error",
    "peak memory",
    "latency windows",
    "quantization",
    "flags",
]


def grouped_warnings(report: report_pb2.OptimizationReport) -> list[tuple[str, list[str]]]:
    """The warnings by code, each code once (in the order it first appears) with all its messages."""
    groups: dict[str, list[str]] = {}
    for warning in report.warnings:
        groups.setdefault(warning.code, []).append(warning.message)
    return list(groups.items())


def flag_names(flags: Sequence[int]) -> list[str]:
    """``["SLOWER_THAN_BASELINE", ...]`` for a variant's flags."""
    return [enum_name(report_pb2.VariantFlag, f) for f in flags if f]


def stability_text(latency: report_pb2.LatencyStats) -> str:
    """``stable (4)`` / ``unstable (12)``: whether the windows agreed and how many ran; ``-``: unknown."""
    if not latency.windows:
        return DASH
    return f"{'stable' if latency.stable else 'unstable'} ({latency.windows})"


def quantization_text(variant: report_pb2.ModelVariant) -> str:
    """``static_int8 (QDQ, minmax, 64 samples)``; ``-`` for a variant that was not quantized."""
    if not variant.HasField("quantization"):
        return DASH
    q = variant.quantization
    details = [q.format] if q.format else []
    if q.calibration:
        details.append(enum_name(spec_pb2.CalibrationMethod, q.calibration).lower())
    if q.calibration_samples:
        details.append(f"{q.calibration_samples} samples")
    mode = enum_name(spec_pb2.QuantizeMode, q.mode).lower()
    return f"{mode} ({', '.join(details)})" if details else mode


def _metrics(stats: report_pb2.ModelStats, variant: report_pb2.ModelVariant | None) -> list[str]:
    lat = stats.latency if stats.HasField("latency") else None
    q = stats.quality if stats.HasField("quality") else None
    compressed = size(stats.compressed_size_bytes)
    if variant is not None and variant.compression_ratio:
        compressed += f" ({variant.compression_ratio:.2f}x)"
    macs = si(stats.macs)
    if variant is not None and variant.macs_reduction:
        macs += f" ({variant.macs_reduction:.2f}x)"
    return [
        count(stats.parameters),
        count(stats.nonzero_parameters),
        size(stats.size_bytes),
        compressed,
        macs,
        ms(lat.p50_ms) if lat else DASH,
        ms(lat.p90_ms) if lat else DASH,
        ms(lat.p99_ms) if lat else DASH,
        f"{lat.throughput_per_s:,.1f}/s" if lat else DASH,
        f"{variant.latency_speedup:.2f}x" if variant is not None and variant.latency_speedup else DASH,
        f"{q.top1_agreement * 100:.2f}%" if q else DASH,
        f"{q.cosine_similarity:.6f}" if q else DASH,
        f"{q.max_abs_error:.3g}" if q else DASH,
        size(lat.peak_memory_bytes) if lat and lat.peak_memory_bytes else DASH,
        stability_text(lat) if lat else DASH,
        quantization_text(variant) if variant is not None else DASH,
        (" ".join(flag_names(variant.flags)) or DASH) if variant is not None else DASH,
    ]


def variant_rows(report: report_pb2.OptimizationReport) -> tuple[list[str], list[list[str]]]:
    """One column per model (baseline first), one row per metric of :data:`METRICS`, then the accuracy rows
    when the job measured accuracy (:func:`prunekit.text.training_tables.accuracy_cells`)."""
    columns = [_metrics(report.baseline, None)] + [_metrics(v.stats, v) for v in report.variants]
    rows = [[name, *(col[i] for col in columns)] for i, name in enumerate(METRICS)]
    rows += accuracy_cells(report)
    return ["", "baseline", *(v.name for v in report.variants)], rows


def latency_rows(report: report_pb2.OptimizationReport) -> tuple[list[str], list[list[str]]]:
    """Every latency measurement of every model: runtime, batch, percentiles, stability, memory."""
    headers = [
        "model",
        "runtime",
        "batch",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ms",
        "stdev ms",
        "throughput",
        "windows",
        "peak memory",
    ]
    rows = []
    models = [("baseline", report.baseline)] + [(v.name, v.stats) for v in report.variants]
    for name, stats in models:
        measurements = list(stats.latencies) or ([stats.latency] if stats.HasField("latency") else [])
        for lat in measurements:
            runtime = " ".join(x for x in (lat.runtime, lat.execution_provider) if x) or DASH
            rows.append(
                [
                    name,
                    runtime,
                    str(lat.batch_size),
                    ms(lat.p50_ms),
                    ms(lat.p90_ms),
                    ms(lat.p99_ms),
                    ms(lat.mean_ms),
                    ms(lat.stdev_ms),
                    f"{lat.throughput_per_s:,.1f}/s",
                    stability_text(lat),
                    size(lat.peak_memory_bytes) if lat.peak_memory_bytes else DASH,
                ]
            )
    return headers, rows


def layer_rows(
    report: report_pb2.OptimizationReport, max_layers: int
) -> tuple[list[str], list[list[str]], int]:
    """The first ``max_layers`` layer changes, and how many more there are.

    A factorized layer (LOW_RANK) shows ``rank r`` where the others show their sparsity.
    """
    rows = []
    for la in report.layers[:max_layers]:
        kept = f"rank {la.rank}" if la.rank else f"{la.sparsity * 100:.1f}%"
        shapes = shape(la.shape_before)
        if la.shape_after and list(la.shape_after) != list(la.shape_before):
            shapes += f" -> {shape(la.shape_after)}"
        rows.append(
            [
                la.name,
                la.op_type,
                shapes,
                f"{count(la.nonzero_before)} -> {count(la.nonzero_after)}",
                "skipped" if la.skipped else kept,
                f"{si(la.macs_before)} -> {si(la.macs_after)}",
            ]
        )
    hidden = max(0, len(report.layers) - max_layers)
    return ["layer", "op", "shape", "nonzero", "sparsity", "MACs"], rows, hidden


def _input(spec: model_pb2.InputSpec) -> str:
    dtype = enum_name(model_pb2.DataType, spec.dtype or model_pb2.DATA_TYPE_FLOAT32).lower()
    return f"{spec.name}:{shape(spec.shape)} {dtype}"


def protocol_parts(p: report_pb2.BenchmarkProtocol) -> tuple[list[str], list[str]]:
    """How the numbers were measured: the short conditions, then longer notes (stability, memory, rules)."""
    runtime = " ".join(x for x in (p.runtime, p.runtime_version) if x) or "unknown runtime"
    where = p.device or "unknown device"
    if p.cpu_model:
        where += f" ({p.cpu_model})"
    parts = [runtime]
    if p.execution_provider:
        parts.append(p.execution_provider)
    parts += [where, f"{p.threads} thread{'s' if p.threads != 1 else ''}"]
    batches = list(p.batch_sizes)
    parts.append(f"batch {p.batch_size}" if len(batches) < 2 else f"batch {', '.join(map(str, batches))}")
    if p.inputs:
        parts.append("inputs " + ", ".join(_input(s) for s in p.inputs))
    parts += [f"warm-up {p.warmup}", f"{p.iterations} iterations"]
    parts.append("interleaved" if p.interleaved else "not interleaved")
    parts.append("thread spinning on" if p.thread_spinning else "thread spinning off")
    notes = []
    if p.quality_inputs:
        notes.append(f"quality on {p.quality_inputs}")
    if p.stability_rule:
        reached = "reached" if p.stable else "NOT reached for every measurement"
        notes.append(f"stability {reached}: {p.stability_rule}")
    if p.HasField("quality_rule"):
        rule = p.quality_rule
        notes.append(
            f"quality rule: top-1 agreement >= {rule.min_top1_agreement:g}, "
            f"cosine similarity >= {rule.min_cosine_similarity:g}"
        )
        if rule.max_accuracy_drop:
            notes.append(f"accuracy rule: top-1 accuracy drop <= {rule.max_accuracy_drop * 100:g} pt")
    if p.selection_rule:
        notes.append(p.selection_rule)
    if p.memory_method:
        notes.append(f"peak memory: {p.memory_method}")
    return parts, notes
