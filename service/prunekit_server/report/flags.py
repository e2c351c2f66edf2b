"""A variant's flags (``VariantFlag``) and the warnings its numbers call for.

- ``SLOWER_THAN_BASELINE``: a variant's p50 exceeds the baseline's by more than 5 %.
- ``QUALITY_DROP``: a variant misses the quality rule (default: top-1 agreement or
  cosine similarity below 0.99).

Flags say the same facts per variant (the quality rule, the accuracy rule
when it can be judged), whether AUTO quantization selected it, whether its
latency was unstable, and whether it was fine-tuned.
"""

from __future__ import annotations

from prunekit.v1 import report_pb2

from ..measure.accuracy import AccuracyRule
from ..measure.quality import DEFAULT_MIN_TOP1_AGREEMENT, Quality, QualityRule
from .accuracy import accuracy_flag
from .notes import warning

SLOWER_TOLERANCE = 1.05
QUALITY_FLOOR = DEFAULT_MIN_TOP1_AGREEMENT


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
