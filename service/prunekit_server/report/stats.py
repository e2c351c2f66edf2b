"""The numbers of the report: ``LatencyStats``, ``QualityStats``, ``AccuracyStats``, ``ModelStats``,
a variant (``ModelVariant``, ``ModelFile``) and the per-layer changes.

Every function is pure: :mod:`..measure`'s dataclasses and numbers in, proto
messages out. The models of a job are named as in :mod:`..measure.names`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prunekit.v1 import model_pb2, report_pb2

from ..measure.accuracy import Accuracy
from ..measure.latency import Latency
from ..measure.quality import Quality
from ..pruning.base import LayerPruneInfo


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


def accuracy_stats(accuracy: Accuracy) -> report_pb2.AccuracyStats:
    """The proto form of an :class:`Accuracy` (``top1`` stays 0 for targets, optional fields unset)."""
    stats = report_pb2.AccuracyStats(samples=accuracy.samples)
    if accuracy.top1 is not None:
        stats.top1 = accuracy.top1
    if accuracy.top5 is not None:
        stats.top5 = accuracy.top5
    if accuracy.mse is not None:
        stats.mse = accuracy.mse
    return stats


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
    skipped, empty ``shape_after``): then it costs nothing. A layer split in two
    (``split_into``) costs what its nodes cost.
    """
    out: list[report_pb2.LayerChange] = []
    for layer in layers:
        nodes = (layer.name, *layer.shared_with)
        before = sum(macs_before.get(n, 0) for n in nodes)
        removed = not layer.skipped and not layer.shape_after
        after = sum(macs_after.get(n, 0 if removed else macs_before.get(n, 0)) for n in nodes)
        if layer.split_into:
            after = sum(macs_after.get(n, 0) for n in layer.split_into)
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
                rank=layer.rank,
            )
        )
    return out
