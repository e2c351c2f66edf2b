"""Report pieces of accuracy: reading ``AccuracyStats`` back, the accuracy-rule flags and warnings.

(``AccuracyStats`` itself is :func:`.stats.accuracy_stats`.)

Warning codes (stable):

- ``ACCURACY_NOT_MEASURED``: the job had no labelled (or targeted) eval data,
  or the model's outputs did not fit it; the message says what fidelity was
  measured on instead.
- ``BELOW_ACCURACY_RULE``: variants whose top-1 accuracy dropped more than
  ``evaluation.max_accuracy_drop`` below the baseline's (the job still succeeds).
- ``ACCURACY_RULE_NOT_JUDGED``: an accuracy rule was set, but the eval data
  has targets (MSE), not labels, so there is no top-1 to judge.
"""

from __future__ import annotations

from collections.abc import Sequence

from prunekit.v1 import report_pb2

from ..measure.accuracy import Accuracy, AccuracyRule
from .notes import warning


def accuracy_from_stats(stats: report_pb2.ModelStats) -> Accuracy | None:
    """The :class:`Accuracy` in ``stats``, None when it has none."""
    if not stats.HasField("accuracy"):
        return None
    a = stats.accuracy
    mse = a.mse if a.HasField("mse") else None
    return Accuracy(
        top1=None if mse is not None else a.top1,
        top5=a.top5 if a.HasField("top5") else None,
        mse=mse,
        samples=a.samples,
    )


def accuracy_flag(
    variant: report_pb2.ModelVariant, baseline: report_pb2.ModelStats, rule: AccuracyRule
) -> report_pb2.VariantFlag.ValueType | None:
    """``MEETS_ACCURACY_RULE`` / ``BELOW_ACCURACY_RULE``, or None when the rule cannot judge the variant."""
    met = rule.met_by(accuracy_from_stats(variant.stats), accuracy_from_stats(baseline))
    if met is None:
        return None
    return report_pb2.VARIANT_FLAG_MEETS_ACCURACY_RULE if met else report_pb2.VARIANT_FLAG_BELOW_ACCURACY_RULE


def below_accuracy_rule(
    variants: Sequence[report_pb2.ModelVariant], baseline: report_pb2.ModelStats, rule: AccuracyRule
) -> report_pb2.ReportWarning | None:
    """One ``BELOW_ACCURACY_RULE`` warning naming every variant that misses the rule, or None."""
    below = [
        v for v in variants if accuracy_flag(v, baseline, rule) == report_pb2.VARIANT_FLAG_BELOW_ACCURACY_RULE
    ]
    if not below:
        return None
    base = baseline.accuracy.top1
    named = ", ".join(f"{v.name!r} (top-1 {v.stats.accuracy.top1 * 100:.2f}%)" for v in below)
    return warning(
        "BELOW_ACCURACY_RULE",
        f"{named} miss the accuracy rule ({rule.describe()}; the baseline's top-1 is {base * 100:.2f}% "
        f"on {baseline.accuracy.samples} eval samples). The job succeeded; fine-tune longer or prune less.",
    )


def accuracy_not_measured(reason: str, quality_inputs: str, rule: AccuracyRule) -> report_pb2.ReportWarning:
    """Accuracy could not be measured (``reason``); fidelity was measured on ``quality_inputs``."""
    text = f"accuracy could not be measured: {reason}; fidelity was measured on {quality_inputs}."
    if rule.max_drop > 0:
        text += f" The accuracy rule ({rule.describe()}) could not be judged."
    return warning("ACCURACY_NOT_MEASURED", text)


def accuracy_rule_not_judged(rule: AccuracyRule) -> report_pb2.ReportWarning:
    """An accuracy rule was set but the eval data has targets, not labels."""
    return warning(
        "ACCURACY_RULE_NOT_JUDGED",
        f"the accuracy rule ({rule.describe()}) needs labels; the eval data has targets, "
        "so variants report their MSE and are not judged.",
    )
