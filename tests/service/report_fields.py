"""Which fields of a report a test expects filled: every one, except those a report may leave empty."""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

ALWAYS_EXEMPT = frozenset(
    {
        "OptimizationReport.baseline.quality",  # the baseline is not compared with itself
        "ModelVariant.uri",  # filled by the server after upload
        "ModelFile.uri",
        "BenchmarkProtocol.thread_spinning",  # false is the protocol
        "BenchmarkProtocol.stable",  # false is a legitimate measurement
        "LatencyStats.stable",
        "LayerChange.skipped",
        "InputSpec.value",  # inputs with a fixed value only
        "LayerChange.rank",  # LOW_RANK only
        "LatencyStats.execution_provider",  # "" for torch measurements
        "QuantizationInfo.calibration",  # static quantization only
        "QuantizationInfo.calibration_samples",
        "QuantizationInfo.calibration_inputs",
        "QuantizationInfo.percentile",
        "QuantizationInfo.per_channel",
        "QuantizationInfo.excluded_nodes",
        "OptimizationReport.sensitivity",  # filled by analyses that ran
        "OptimizationReport.schedule",
        "OptimizationReport.search",  # jobs with a latency target only
        "OptimizationReport.dynamic",  # prune method DYNAMIC only
        "AccuracyStats.top5",  # more than 5 classes only
        "AccuracyStats.mse",  # targets only
        "QualityRule.max_accuracy_drop",  # 0: no accuracy rule
        "DataReport.eval_fraction",  # 0 when eval shards were given
        "DataReport.num_classes",  # labels only
        "FinetuneRun.resumed_from_step",  # 0: started fresh
        "FinetuneRun.mixed_precision",  # CUDA only
        "Provenance.spec",  # a copy of the job's spec: its unset fields are the spec's
        "Provenance.job_id",  # what the server tells the worker; a pipeline run alone has none
        "Provenance.model_filename",
        "Provenance.model_sha256",
        "Provenance.attempt",
    }
)
"""Fields any report may leave empty, with or without data."""

WITHOUT_DATA = frozenset(
    {
        "ModelStats.accuracy",  # measured on labelled (or targeted) eval data only
        "OptimizationReport.data",
        "OptimizationReport.finetune",
    }
)
"""Fields a report of a job without data (and without fine-tuning) leaves empty."""

DYNAMIC_EXEMPT = frozenset(
    {
        "DynamicReport.tokens",  # TOKEN_SKIP only
        "DynamicReport.keep_tokens",
        "DynamicReport.distill_steps",  # TOKEN_SKIP with trained layers or scorer only
        "DynamicSweepPoint.keep_tokens",
        "DynamicSweepPoint.mean_ms",  # 0 for the sweep points not timed
        "DynamicExit.after",  # "" for the full network
        "DynamicExit.head_agreement",
        "DynamicExit.share",  # an exit no input takes
    }
)
"""Fields an EARLY_EXIT report's ``dynamic`` section may leave empty."""

REPORT_EXEMPT = ALWAYS_EXEMPT | WITHOUT_DATA
"""The exemptions of a job without data: what most pipeline tests run."""


def unfilled(message: Message, exempt: Collection[str] = REPORT_EXEMPT, prefix: str = "") -> list[str]:
    """Paths of fields left at their default, recursively; ``exempt`` holds ``Type.field`` names and
    ``OptimizationReport.<path>`` paths to skip."""
    missing: list[str] = []
    for fd in message.DESCRIPTOR.fields:
        key = f"{message.DESCRIPTOR.name}.{fd.name}"
        path = f"{prefix}{fd.name}"
        if key in exempt or f"OptimizationReport.{path}" in exempt:
            continue
        value = getattr(message, fd.name)
        if fd.is_repeated:
            if not len(value):
                missing.append(path)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                for i, item in enumerate(value):
                    missing += unfilled(item, exempt, f"{path}[{i}].")
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if not message.HasField(fd.name):
                missing.append(path)
            else:
                missing += unfilled(value, exempt, f"{path}.")
        elif value == fd.default_value:
            missing.append(path)
    return missing
