"""The ``DynamicReport`` of a DYNAMIC job: per-input latency of both models, exits, the threshold sweep."""

from __future__ import annotations

from collections.abc import Mapping

from prunekit.v1 import report_pb2, spec_pb2

from ..measure.dynamic import PerInput, PerInputStats
from ..measure.names import DYNAMIC, ORIGINAL
from ..pruning.dynamic import EarlyExit, TokenSkip

__all__ = ["MAX_LATENCIES", "dynamic_report", "token_report"]

MAX_LATENCIES = 2000
"""Per-input latencies kept per model in the report (for plots)."""


def _model(stats: PerInputStats, samples: int) -> report_pb2.DynamicModelStats:
    out = report_pb2.DynamicModelStats(
        name=stats.name,
        mean_ms=stats.mean_ms,
        p50_ms=stats.p50_ms,
        p90_ms=stats.p90_ms,
        p99_ms=stats.p99_ms,
        samples=samples,
        top1_agreement=stats.top1_agreement,
        latencies_ms=list(stats.latencies_ms[:MAX_LATENCIES]),
    )
    if stats.accuracy is not None:
        out.accuracy = stats.accuracy
    return out


def dynamic_report(
    built: EarlyExit,
    measured: PerInput,
    inputs: str,
    protocol: str,
    sweep_ms: Mapping[float, float],
    batch_rule: str,
) -> report_pb2.DynamicReport:
    """The report section of an early-exit variant measured per input (``sweep_ms``: threshold -> mean ms)."""
    original, dynamic = measured.models[ORIGINAL], measured.models[DYNAMIC]
    feeds = len(original.latencies_ms)
    exits = [
        report_pb2.DynamicExit(
            name=f"exit{k}",
            after=point.tensor,
            macs_fraction=built.costs[k - 1],
            share=built.shares[k - 1],
            head_agreement=built.head_agreement[k - 1],
        )
        for k, point in enumerate(built.points, start=1)
    ]
    exits.append(report_pb2.DynamicExit(name="final", macs_fraction=built.costs[-1], share=built.shares[-1]))
    how = "calibrated" if built.calibrated else "given"
    return report_pb2.DynamicReport(
        form=spec_pb2.DYNAMIC_FORM_EARLY_EXIT,
        inputs=inputs,
        protocol=protocol,
        models=[_model(original, feeds), _model(dynamic, feeds)],
        exits=exits,
        threshold=built.threshold,
        calibrated=built.calibrated,
        calibration_rule=f"threshold {how}; {built.rule}, on the calibration inputs",
        metric=built.metric,
        sweep=[
            report_pb2.DynamicSweepPoint(
                threshold=p.threshold,
                metric=p.metric,
                macs_fraction=p.macs_fraction,
                mean_ms=sweep_ms.get(p.threshold, 0.0),
            )
            for p in built.sweep
        ],
        batch_rule=batch_rule,
        mean_speedup=original.mean_ms / dynamic.mean_ms if dynamic.mean_ms > 0 else 0.0,
    )


def token_report(
    built: TokenSkip,
    measured: PerInput,
    inputs: str,
    protocol: str,
    sweep_ms: Mapping[float, float],
    batch_rule: str,
) -> report_pb2.DynamicReport:
    """The report section of a token-skipping variant (``sweep_ms``: kept tokens -> mean ms)."""
    original, dynamic = measured.models[ORIGINAL], measured.models[DYNAMIC]
    feeds = len(original.latencies_ms)
    how = "calibrated" if built.calibrated else "given"
    return report_pb2.DynamicReport(
        form=spec_pb2.DYNAMIC_FORM_TOKEN_SKIP,
        inputs=inputs,
        protocol=protocol,
        models=[_model(original, feeds), _model(dynamic, feeds)],
        tokens=[report_pb2.DynamicLayerTokens(layer=i, tokens=t) for i, t in enumerate(built.layer_tokens)],
        keep_tokens=built.keep_tokens,
        distill_steps=built.distill_steps,
        calibrated=built.calibrated,
        calibration_rule=f"kept tokens {how}; {built.rule}, on the calibration inputs",
        metric=built.metric,
        sweep=[
            report_pb2.DynamicSweepPoint(
                threshold=p.keep_tokens / built.tokens,
                keep_tokens=p.keep_tokens,
                metric=p.metric,
                macs_fraction=p.macs_fraction,
                mean_ms=sweep_ms.get(float(p.keep_tokens), 0.0),
            )
            for p in built.sweep
        ],
        batch_rule=batch_rule,
        mean_speedup=original.mean_ms / dynamic.mean_ms if dynamic.mean_ms > 0 else 0.0,
    )
