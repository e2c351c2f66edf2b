"""Turn measured facts into ``report_pb2`` messages.

Every function is pure: dataclasses and numbers in, proto messages out.
Warning codes are stable strings (clients key on them):

- ``UNSTRUCTURED_NO_SPEEDUP``: zeroed weights do not make dense kernels faster.
- ``SLOWER_THAN_BASELINE``: a variant's p50 exceeds the baseline's by more than 5 %.
- ``QUALITY_DROP``: a variant misses the quality rule (default: top-1 agreement or
  cosine similarity below 0.99).
- ``SYNTHETIC_INPUTS``: quality was measured on synthetic inputs (no eval data).
- ``LATENCY_UNSTABLE``: some measurement's windows never agreed within the time budget.
- ``BELOW_ACCURACY_RULE`` and the other accuracy codes: see :mod:`.accuracy`.
- codes carried by upstream ``"CODE: message"`` strings (e.g. ``TORCHSCRIPT_WEIGHTS_UNMAPPED``).

Variants also carry ``flags`` (``VariantFlag``): the same facts per variant
(the quality rule, the accuracy rule when it can be judged), whether AUTO
quantization selected it, and whether it was fine-tuned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from prunekit.v1 import model_pb2, report_pb2

from ..measure.accuracy import Accuracy, AccuracyRule
from ..measure.latency import STABILITY_TOLERANCE, STABILITY_WINDOWS, Latency
from ..measure.quality import DEFAULT_MIN_TOP1_AGREEMENT, Quality, QualityRule
from ..pruning.base import LayerPruneInfo
from .accuracy import accuracy_flag, accuracy_stats, below_accuracy_rule

SLOWER_TOLERANCE = 1.05
QUALITY_FLOOR = DEFAULT_MIN_TOP1_AGREEMENT
_CODED = re.compile(r"^([A-Z][A-Z0-9_]*[A-Z0-9]):\s*(.*)$", re.DOTALL)


def latency_stats(latency: Latency) -> report_pb2.LatencyStats:
    """The proto form of one model's :class:`Latency`."""
    return report_pb2.LatencyStats(
        p50_ms=latency.p50_ms,
        p90_ms=latency.p90_ms,
        p99_ms=latency.p99_ms,
        mean_ms=latency.mean_ms,
        stdev_ms=latency.stdev_ms,
        min_ms=latency.min_ms,
        throughput_per_s=latency.throughput_per_s,
        batch_size=latency.batch_size,
        threads=latency.threads,
        runtime=latency.runtime,
        device=latency.device,
        warmup=latency.warmup,
        iterations=latency.iterations,
        execution_provider=latency.execution_provider,
        windows=latency.windows,
        stable=latency.stable,
        window_p50_ms=list(latency.window_p50_ms),
        peak_memory_bytes=latency.peak_memory_bytes,
    )


def quality_stats(quality: Quality) -> report_pb2.QualityStats:
    """The proto form of a :class:`Quality`."""
    return report_pb2.QualityStats(
        top1_agreement=quality.top1_agreement,
        cosine_similarity=quality.cosine_similarity,
        max_abs_error=quality.max_abs_error,
        samples=quality.samples,
    )


def model_stats(
    *,
    parameters: int,
    nonzero_parameters: int,
    macs: int,
    size_bytes: int,
    compressed_size_bytes: int,
    latency: Latency | None = None,
    quality: Quality | None = None,
    latencies: Sequence[Latency] = (),
    accuracy: Accuracy | None = None,
) -> report_pb2.ModelStats:
    """Stats of one model; ``quality`` stays unset for the baseline, ``accuracy`` without eval labels/targets.

    ``latencies`` are all of the model's measurements; ``latency`` (the
    primary one) defaults to their first.
    """
    stats = report_pb2.ModelStats(
        parameters=parameters,
        nonzero_parameters=nonzero_parameters,
        macs=macs,
        size_bytes=size_bytes,
        compressed_size_bytes=compressed_size_bytes,
    )
    if latency is None and latencies:
        latency = latencies[0]
    if latency is not None:
        stats.latency.CopyFrom(latency_stats(latency))
    stats.latencies.extend(latency_stats(item) for item in latencies)
    if quality is not None:
        stats.quality.CopyFrom(quality_stats(quality))
    if accuracy is not None:
        stats.accuracy.CopyFrom(accuracy_stats(accuracy))
    return stats


def model_file(
    fmt: model_pb2.ModelFormat.ValueType, artifact: str, sha256: str, size_bytes: int
) -> report_pb2.ModelFile:
    """One file of a variant; ``uri`` is left empty for the server to fill after upload."""
    return report_pb2.ModelFile(format=fmt, artifact=artifact, sha256=sha256, size_bytes=size_bytes)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if numerator > 0 and denominator > 0 else 0.0


def model_variant(
    name: str,
    stats: report_pb2.ModelStats,
    files: Sequence[report_pb2.ModelFile],
    baseline: report_pb2.ModelStats,
    *,
    source: str = "",
    quantization: report_pb2.QuantizationInfo | None = None,
) -> report_pb2.ModelVariant:
    """A variant whose primary file is ``files[0]``, with its ratios against ``baseline``.

    Ratios are baseline / variant (p50 latency, compressed size, MACs), 0 when
    either side is missing or zero. Flags are added by :func:`variant_flags`.
    """
    if not files:
        raise ValueError(f"variant {name!r} has no files")
    primary = files[0]
    return report_pb2.ModelVariant(
        name=name,
        format=primary.format,
        uri=primary.uri,
        sha256=primary.sha256,
        stats=stats,
        files=list(files),
        latency_speedup=_ratio(baseline.latency.p50_ms, stats.latency.p50_ms),
        compression_ratio=_ratio(baseline.compressed_size_bytes, stats.compressed_size_bytes),
        macs_reduction=_ratio(baseline.macs, stats.macs),
        source=source,
        quantization=quantization,
    )


def layer_changes(
    layers: Iterable[LayerPruneInfo],
    macs_before: Mapping[str, int],
    macs_after: Mapping[str, int],
) -> list[report_pb2.LayerChange]:
    """One ``LayerChange`` per pruned or skipped layer.

    MACs are looked up by node name (the model analysis' layer names) and
    summed over the nodes sharing the weight (``shared_with``). A layer missing
    from ``macs_after`` keeps its ``macs_before``, unless it was removed (not
    skipped, empty ``shape_after``): then it costs nothing.
    """
    out: list[report_pb2.LayerChange] = []
    for layer in layers:
        nodes = (layer.name, *layer.shared_with)
        before = sum(macs_before.get(n, 0) for n in nodes)
        removed = not layer.skipped and not layer.shape_after
        after = sum(macs_after.get(n, 0 if removed else macs_before.get(n, 0)) for n in nodes)
        out.append(
            report_pb2.LayerChange(
                name=layer.name,
                op_type=layer.op_type,
                shape_before=list(layer.shape_before),
                shape_after=list(layer.shape_after),
                parameters_before=layer.parameters_before,
                parameters_after=layer.parameters_after,
                nonzero_before=layer.nonzero_before,
                nonzero_after=layer.nonzero_after,
                sparsity=layer.sparsity,
                macs_before=before,
                macs_after=after,
                skipped=layer.skipped,
            )
        )
    return out


def warning(code: str, message: str) -> report_pb2.ReportWarning:
    """A report warning with a stable ``code``."""
    return report_pb2.ReportWarning(code=code, message=message)


def upstream_warnings(messages: Iterable[str], default_code: str) -> list[report_pb2.ReportWarning]:
    """Warnings from ``"CODE: message"`` strings; strings without a code get ``default_code``."""
    out: list[report_pb2.ReportWarning] = []
    for text in messages:
        match = _CODED.match(text)
        out.append(warning(match[1], match[2]) if match else warning(default_code, text))
    return out


def unstructured_no_speedup(variant: str) -> report_pb2.ReportWarning:
    """The warning every unstructured-pruning variant carries."""
    return warning(
        "UNSTRUCTURED_NO_SPEEDUP",
        f"variant {variant!r} has zeroed weights but unchanged shapes: dense kernels do not skip zeros, "
        "so it is not expected to be faster. Its gain is storage and transfer: compare "
        "compressed_size_bytes, or use structured pruning for speed.",
    )


def synthetic_inputs_warning(description: str) -> report_pb2.ReportWarning:
    """Quality came from synthetic inputs (``description`` says which)."""
    return warning(
        "SYNTHETIC_INPUTS",
        f"quality was measured on synthetic inputs ({description}) as agreement with the original "
        "model; real eval data (spec data.eval) gives fidelity on the inputs that matter.",
    )


def slower_than_baseline(variant: report_pb2.ModelVariant, baseline: report_pb2.ModelStats) -> bool:
    """True when the variant's p50 exceeds the baseline's by more than :data:`SLOWER_TOLERANCE`."""
    base_p50 = baseline.latency.p50_ms
    return base_p50 > 0 and variant.stats.latency.p50_ms > base_p50 * SLOWER_TOLERANCE


def _quality(q: report_pb2.QualityStats) -> Quality:
    return Quality(q.top1_agreement, q.cosine_similarity, q.max_abs_error, q.samples)


def variant_flags(
    variant: report_pb2.ModelVariant,
    baseline: report_pb2.ModelStats,
    rule: QualityRule,
    *,
    selected: bool | None = None,
    accuracy_rule: AccuracyRule | None = None,
    finetuned: bool = False,
) -> list[report_pb2.VariantFlag.ValueType]:
    """The variant's flags: slower, quality rule, accuracy rule, AUTO's choice, unstable latency, fine-tuned.

    ``selected`` is None for variants that were no AUTO candidate. The
    accuracy flags come only when ``accuracy_rule`` can judge the variant
    (a rule is set and both it and the baseline have a top-1 accuracy).
    """
    flags: list[report_pb2.VariantFlag.ValueType] = []
    if slower_than_baseline(variant, baseline):
        flags.append(report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE)
    if variant.stats.HasField("quality"):
        met = rule.met_by(_quality(variant.stats.quality))
        flags.append(
            report_pb2.VARIANT_FLAG_MEETS_QUALITY_RULE if met else report_pb2.VARIANT_FLAG_BELOW_QUALITY_RULE
        )
    if accuracy_rule is not None and (flag := accuracy_flag(variant, baseline, accuracy_rule)) is not None:
        flags.append(flag)
    if selected is not None:
        flags.append(report_pb2.VARIANT_FLAG_SELECTED if selected else report_pb2.VARIANT_FLAG_NOT_SELECTED)
    if variant.stats.HasField("latency") and not variant.stats.latency.stable:
        flags.append(report_pb2.VARIANT_FLAG_LATENCY_UNSTABLE)
    if finetuned:
        flags.append(report_pb2.VARIANT_FLAG_FINETUNED)
    return flags


def variant_warnings(
    variant: report_pb2.ModelVariant, baseline: report_pb2.ModelStats, rule: QualityRule | None = None
) -> list[report_pb2.ReportWarning]:
    """``SLOWER_THAN_BASELINE`` and ``QUALITY_DROP`` as the variant's numbers call for."""
    rule = rule or QualityRule()
    out: list[report_pb2.ReportWarning] = []
    base_p50 = baseline.latency.p50_ms
    p50 = variant.stats.latency.p50_ms
    if slower_than_baseline(variant, baseline):
        out.append(
            warning(
                "SLOWER_THAN_BASELINE",
                f"variant {variant.name!r} p50 {p50:.3f} ms is slower than the baseline's {base_p50:.3f} ms "
                f"({p50 / base_p50:.2f}x): it is not an improvement on this runtime and device.",
            )
        )
    if variant.stats.HasField("quality"):
        q = variant.stats.quality
        if not rule.met_by(_quality(q)):
            out.append(
                warning(
                    "QUALITY_DROP",
                    f"variant {variant.name!r} departs from the original: top-1 agreement "
                    f"{q.top1_agreement:.4f}, cosine similarity {q.cosine_similarity:.4f} over {q.samples} "
                    f"samples (the rule: {rule.describe()}); fine-tune, prune less or quantize less.",
                )
            )
    return out


def benchmark_protocol(
    latency: Latency,
    *,
    inputs: Iterable[model_pb2.InputSpec],
    cpu_model: str,
    quality_inputs: str,
    execution_provider: str = "",
    thread_spinning: bool = False,
    iterations: int | None = None,
    batch_sizes: Sequence[int] = (),
    max_seconds: float = 0.0,
    stability_rule: str = "",
    stable: bool | None = None,
    memory_method: str = "",
    quality_rule: QualityRule | None = None,
    selection_rule: str = "",
    max_accuracy_drop: float = 0.0,
) -> report_pb2.BenchmarkProtocol:
    """How the numbers were measured, from the primary :class:`Latency` (all share the protocol).

    ``iterations`` is the timed runs per model and window (default: the
    latency's sample count); ``stable`` defaults to the latency's.
    """
    runtime, _, version = latency.runtime.partition(" ")
    protocol = report_pb2.BenchmarkProtocol(
        runtime=runtime,
        runtime_version=version,
        execution_provider=execution_provider or latency.execution_provider,
        device=latency.device,
        cpu_model=cpu_model,
        threads=latency.threads,
        batch_size=latency.batch_size,
        inputs=list(inputs),
        warmup=latency.warmup,
        iterations=latency.iterations if iterations is None else iterations,
        interleaved=latency.interleaved,
        thread_spinning=thread_spinning,
        quality_inputs=quality_inputs,
        batch_sizes=list(batch_sizes) or [latency.batch_size],
        max_seconds=max_seconds,
        stability_rule=stability_rule,
        stable=latency.stable if stable is None else stable,
        memory_method=memory_method,
        selection_rule=selection_rule,
        stability_windows=STABILITY_WINDOWS,
        stability_tolerance=STABILITY_TOLERANCE,
    )
    if quality_rule is not None:
        protocol.quality_rule.CopyFrom(
            report_pb2.QualityRule(
                min_top1_agreement=quality_rule.min_top1_agreement,
                min_cosine_similarity=quality_rule.min_cosine_similarity,
                max_accuracy_drop=max_accuracy_drop,
            )
        )
    return protocol


def build_report(
    *,
    input_format: model_pb2.ModelFormat.ValueType,
    baseline: report_pb2.ModelStats,
    variants: Sequence[report_pb2.ModelVariant],
    layers: Sequence[report_pb2.LayerChange],
    protocol: report_pb2.BenchmarkProtocol,
    warnings: Sequence[report_pb2.ReportWarning] = (),
    rule: QualityRule | None = None,
    accuracy_rule: AccuracyRule | None = None,
    data: report_pb2.DataReport | None = None,
    finetune: report_pb2.FinetuneReport | None = None,
) -> report_pb2.OptimizationReport:
    """The full report: ``warnings`` first, then each variant's :func:`variant_warnings`.

    With an ``accuracy_rule``, one ``BELOW_ACCURACY_RULE`` warning names every
    variant that misses it. ``data`` and ``finetune`` are copied in when given.
    """
    found = list(warnings)
    for variant in variants:
        found += variant_warnings(variant, baseline, rule)
    if accuracy_rule is not None and (below := below_accuracy_rule(variants, baseline, accuracy_rule)):
        found.append(below)
    return report_pb2.OptimizationReport(
        baseline=baseline,
        variants=list(variants),
        layers=list(layers),
        warnings=found,
        protocol=protocol,
        input_format=input_format,
        data=data,
        finetune=finetune,
    )
