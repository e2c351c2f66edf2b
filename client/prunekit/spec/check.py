"""Every rule an ``OptimizationSpec`` must follow, in one call: :func:`spec_violations`.

It looks at the spec only, never at the model (the model's format aside), and lists every violation: it
never stops at the first. The server runs it before it accepts a job, the CLI before it uploads anything.
"""

from __future__ import annotations

import math

from prunekit.v1 import model_pb2, spec_pb2

from .data import accuracy_rule_violations, data_violations
from .dynamic_configs import dynamic_job_violations
from .finetune import finetune_violations
from .inputs import input_violations
from .limits import ANY_SERVER, SpecLimits
from .measure import benchmark_violations, evaluation_violations
from .messages import undefined_enums, unknown_field_numbers
from .prune import prune_violations
from .quantize import quantize_violations
from .target import target_violations
from .violation import FieldViolation

__all__ = ["spec_violations"]


def spec_violations(
    spec: spec_pb2.OptimizationSpec,
    model_format: int,
    *,
    prefix: str = "spec",
    limits: SpecLimits = ANY_SERVER,
) -> list[FieldViolation]:
    """Every rule ``spec`` breaks, as field violations with paths under ``prefix``.

    ``model_format`` is a ``ModelFormat`` value (TorchScript models need declared inputs); ``limits``
    are the server's caps (see :class:`~.limits.SpecLimits`).
    """
    found: list[FieldViolation] = []
    unknown_field_numbers(spec, prefix, found)
    undefined_enums(spec, prefix, found)
    found += input_violations(spec.inputs, f"{prefix}.inputs", max_bytes=limits.max_input_bytes)
    if model_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT and not spec.inputs:
        found.append(
            FieldViolation(
                f"{prefix}.inputs", "required for TorchScript models (name, shape and dtype of each input)"
            )
        )
    quantizes = spec.HasField("quantize") and spec.quantize.mode != spec_pb2.QUANTIZE_MODE_NONE
    targets = spec.HasField("target")
    if spec.HasField("prune"):
        rules: list[FieldViolation] = []
        prune_violations(spec.prune, f"{prefix}.prune", rules)
        decided = {f"{prefix}.prune.ratio"} if targets and not spec.prune.ratio else set()
        if targets and not spec.prune.method:  # the target's techniques choose the method
            decided.add(f"{prefix}.prune.method")
        found += [v for v in rules if v.field not in decided]
    if targets:
        target_violations(spec, f"{prefix}.target", found)
    if not (targets or quantizes or spec.HasField("prune")):
        found.append(
            FieldViolation(
                f"{prefix}.prune", "request prune, quantize or target; this spec asks for none of them"
            )
        )
    if spec.HasField("quantize") and not targets:
        quantize_violations(spec, f"{prefix}.quantize", found)
    benchmark_violations(spec.benchmark, f"{prefix}.benchmark", found)
    evaluation_violations(spec.evaluation, f"{prefix}.evaluation", found)
    accuracy_rule_violations(spec, f"{prefix}.evaluation", found)
    if spec.HasField("data"):
        data_violations(spec.data, f"{prefix}.data", found, max_shards=limits.max_data_shards)
    if spec.HasField("finetune"):
        finetune_violations(spec, f"{prefix}.finetune", found, limits)
    dynamic_job_violations(spec, prefix, found)
    _timeout(spec.timeout_seconds, f"{prefix}.timeout_seconds", found, limits.max_timeout_seconds)
    return found


def _timeout(seconds: float, path: str, found: list[FieldViolation], cap: float) -> None:
    """``timeout_seconds``: 0 (the server's) or a finite positive number of seconds within ``cap``."""
    if not math.isfinite(seconds) or seconds < 0:
        found.append(FieldViolation(path, f"seconds, > 0 (or 0: the server's job timeout), got {seconds!r}"))
    elif cap and seconds > cap:
        found.append(FieldViolation(path, f"at most {cap:g} on this server (job_timeout_s)"))
