"""The server's side of the spec room: its rules and translations, failing with ``INVALID_SPEC``.

The rules themselves live in :mod:`prunekit.spec` (shared with the CLI, which runs them before it uploads
anything); the server runs them again at CreateJob and in the worker, since clients may be old or hostile.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from prunekit.spec.check import spec_violations
from prunekit.spec.finetune_configs import FinetunePlan
from prunekit.spec.limits import ANY_SERVER, SpecLimits
from prunekit.spec.prune_configs import PruneConfig
from prunekit.spec.quantize_configs import QuantizePlan
from prunekit.spec.target import TargetConfig, target_config
from prunekit.spec.translate import finetune_plan, prune_config, quantize_plan
from prunekit.spec.violation import SpecRuleError
from prunekit.v1 import spec_pb2

from .errors import Code, FieldViolation, ServiceError, invalid_spec

__all__ = [
    "check_runtime",
    "check_spec",
    "finetune_plan_of",
    "prune_config_of",
    "quantize_plan_of",
    "target_config_of",
]


def check_spec(
    spec: spec_pb2.OptimizationSpec,
    model_format: int,
    *,
    prefix: str = "spec",
    limits: SpecLimits = ANY_SERVER,
) -> None:
    """Raise ``INVALID_ARGUMENT``/``INVALID_SPEC`` listing every rule ``spec`` breaks under ``limits``."""
    violations = spec_violations(spec, model_format, prefix=prefix, limits=limits)
    if violations:
        raise invalid_spec(violations)


def prune_config_of(prune_spec: spec_pb2.PruneSpec, *, path: str = "spec.prune") -> PruneConfig:
    """The config ``prune_spec`` asks for; ``INVALID_SPEC`` listing every rule it breaks (under ``path``)."""
    try:
        return prune_config(prune_spec, path=path)
    except SpecRuleError as exc:
        raise invalid_spec(exc.violations) from None


def quantize_plan_of(q: spec_pb2.QuantizeSpec) -> QuantizePlan:
    """The configs ``q`` asks for (see ``prunekit.spec.translate``); ``INVALID_SPEC`` if one fails."""
    try:
        return quantize_plan(q)
    except SpecRuleError as exc:
        raise invalid_spec(exc.violations) from None


def finetune_plan_of(ft: spec_pb2.FinetuneSpec) -> FinetunePlan:
    """The fine-tuning plan ``ft`` asks for (``prunekit.spec.translate``); ``INVALID_SPEC`` if it fails."""
    try:
        return finetune_plan(ft)
    except SpecRuleError as exc:
        raise invalid_spec(exc.violations) from None


def target_config_of(spec: spec_pb2.OptimizationSpec) -> TargetConfig:
    """The config of ``spec.target``; ``INVALID_SPEC`` listing every rule it breaks."""
    try:
        return target_config(spec)
    except SpecRuleError as exc:
        raise invalid_spec(exc.violations) from None


_CUDA_PROVIDER = "CUDAExecutionProvider"


@functools.cache
def _providers() -> tuple[str, ...]:
    """The execution providers this node's ONNX Runtime offers (imported once, on first need)."""
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def check_runtime(spec: spec_pb2.OptimizationSpec, providers: Sequence[str] | None = None) -> None:
    """``FAILED_PRECONDITION``/``RUNTIME_UNAVAILABLE`` when the spec's device has no runtime on this node.

    Workers run on the server's node, so what this server's ONNX Runtime offers is what they get.
    """
    if spec.benchmark.device != spec_pb2.DEVICE_CUDA:
        return
    have = tuple(providers) if providers is not None else _providers()
    if _CUDA_PROVIDER in have:
        return
    message = (
        f"benchmark.device CUDA needs ONNX Runtime's {_CUDA_PROVIDER} on the server's node; "
        f"this one has {', '.join(have) or 'none'}"
    )
    raise ServiceError(
        Code.FAILED_PRECONDITION,
        "RUNTIME_UNAVAILABLE",
        message,
        [FieldViolation("spec.benchmark.device", message)],
    )
