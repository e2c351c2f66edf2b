"""The rules of a spec's ``target`` (a measured latency goal) and its config, :class:`TargetConfig`.

* exactly one of ``latency_speedup`` (``1 < x <= 20``) and ``latency_ms`` (``0 < x <= 3,600,000``);
* ``max_accuracy_drop`` 0, or ``0 < x <= 1`` with data to judge it on;
* ``techniques`` from :data:`TECHNIQUES`, each once, FP16 only on CUDA; with ``prune``, its method (CHANNEL or
  NEURON, one-shot, no ratio or MACs target) among them;
* ``budget_seconds`` 0 (600) or 10 to 86,400;
* the search chooses the quantization: a spec with ``target`` leaves ``quantize`` unset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prunekit.v1 import spec_pb2

from .names import enum_short_name
from .violation import FieldViolation, SpecRuleError

__all__ = [
    "DEFAULT_BUDGET_SECONDS",
    "MAX_SPEEDUP",
    "PRUNING_TECHNIQUES",
    "QUANTIZE_TECHNIQUES",
    "TECHNIQUES",
    "TargetConfig",
    "target_config",
    "target_violations",
]

WIDTH_TECHNIQUES = ("channel", "neuron")
PRUNING_TECHNIQUES = (*WIDTH_TECHNIQUES, "layer", "low_rank")
QUANTIZE_TECHNIQUES = ("static_int8", "dynamic_int8", "fp16")
TECHNIQUES = PRUNING_TECHNIQUES + QUANTIZE_TECHNIQUES
MAX_SPEEDUP = 20.0
"""Beyond this no mix of structured pruning and quantization is a credible promise."""
MAX_LATENCY_MS = 3_600_000.0
DEFAULT_BUDGET_SECONDS = 600.0
MIN_BUDGET_SECONDS = 10.0
MAX_BUDGET_SECONDS = 86_400.0
_P = spec_pb2


@dataclass(frozen=True)
class TargetConfig:
    """A checked ``TargetSpec``: one of ``speedup`` and ``latency_ms`` is set (the other 0)."""

    speedup: float = 0.0
    latency_ms: float = 0.0
    max_accuracy_drop: float = 0.0
    pruning: tuple[str, ...] = ("channel",)
    quantization: tuple[str, ...] = ("static_int8", "dynamic_int8")
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    required: bool = False


def _number_problem(value: float, low: float, high: float, *, low_open: bool = True) -> str | None:
    above = value > low if low_open else value >= low
    if math.isfinite(value) and above and value <= high:
        return None
    sign = "<" if low_open else "<="
    return f"must satisfy {low:g} {sign} x <= {high:g}, got {value!r}"


def _goal(target: spec_pb2.TargetSpec, path: str, found: list[FieldViolation]) -> None:
    speedup, ms = target.latency_speedup, target.latency_ms
    if speedup and ms:
        found.append(FieldViolation(f"{path}.latency_ms", "set latency_speedup or latency_ms, not both"))
    elif not speedup and not ms:
        found.append(
            FieldViolation(f"{path}.latency_speedup", "set latency_speedup (e.g. 2.0) or latency_ms")
        )
    if speedup:
        problem = _number_problem(speedup, 1.0, MAX_SPEEDUP)
        if problem:
            why = " (no structured pruning and quantization reach more)" if speedup > MAX_SPEEDUP else ""
            found.append(FieldViolation(f"{path}.latency_speedup", problem + why))
    if ms:
        problem = _number_problem(ms, 0.0, MAX_LATENCY_MS)
        if problem:
            found.append(FieldViolation(f"{path}.latency_ms", problem))


def _techniques(spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation]) -> None:
    names = [name.lower() for name in spec.target.techniques]
    for i, name in enumerate(names):
        if name not in TECHNIQUES:
            found.append(
                FieldViolation(f"{path}[{i}]", f"unknown technique {name!r}; one of {', '.join(TECHNIQUES)}")
            )
        elif names.index(name) != i:
            found.append(FieldViolation(f"{path}[{i}]", f"{name!r} is listed twice"))
        elif name == "fp16" and spec.benchmark.device != _P.DEVICE_CUDA:
            found.append(
                FieldViolation(
                    f"{path}[{i}]", "fp16 is slower than float32 on CPU runtimes: only with device CUDA"
                )
            )
    if spec.HasField("prune") and names:
        method = enum_short_name(_P.PruneMethod.DESCRIPTOR, spec.prune.method)
        if method in WIDTH_TECHNIQUES and method not in names:
            found.append(FieldViolation(path, f"prune.method {method.upper()} is not among the techniques"))


def _prune(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    method = enum_short_name(_P.PruneMethod.DESCRIPTOR, prune.method)
    if prune.method and method not in WIDTH_TECHNIQUES:
        found.append(FieldViolation(f"{path}.method", "a latency target searches CHANNEL or NEURON widths"))
    for name in ("ratio", "target_macs_reduction", "steps"):
        if getattr(prune, name):
            found.append(
                FieldViolation(f"{path}.{name}", "the latency target decides the widths: leave it unset")
            )
    if prune.schedule == _P.PRUNE_SCHEDULE_ITERATIVE:
        found.append(FieldViolation(f"{path}.schedule", "a latency target prunes one-shot"))


def target_violations(spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation]) -> None:
    """Append every rule ``spec.target`` (and what it changes of ``prune``/``quantize``) breaks."""
    target = spec.target
    _goal(target, path, found)
    drop = target.max_accuracy_drop
    if drop and _number_problem(drop, 0.0, 1.0):
        found.append(FieldViolation(f"{path}.max_accuracy_drop", "must be 0 (no rule) or 0 < value <= 1"))
    elif drop and not (spec.data.train or spec.data.eval):
        found.append(
            FieldViolation(f"{path}.max_accuracy_drop", "needs data: labelled eval (or train) shards")
        )
    _techniques(spec, f"{path}.techniques", found)
    budget = target.budget_seconds
    problem = (
        _number_problem(budget, MIN_BUDGET_SECONDS, MAX_BUDGET_SECONDS, low_open=False) if budget else None
    )
    if problem:
        why = " (too little to time one candidate)" if budget < MIN_BUDGET_SECONDS else ""
        found.append(FieldViolation(f"{path}.budget_seconds", problem + why))
    root = path.rsplit(".", 1)[0]
    if spec.HasField("prune"):
        _prune(spec.prune, f"{root}.prune", found)
    if spec.HasField("quantize"):
        found.append(
            FieldViolation(
                f"{root}.quantize", "with a target the search chooses: list modes in target.techniques"
            )
        )


def target_config(spec: spec_pb2.OptimizationSpec) -> TargetConfig:
    """The checked config of ``spec.target``; :class:`SpecRuleError` listing every violation otherwise."""
    found: list[FieldViolation] = []
    target_violations(spec, "spec.target", found)
    if found:
        raise SpecRuleError(found)
    target = spec.target
    names = [name.lower() for name in target.techniques]
    if spec.HasField("prune") and spec.prune.method:
        default_pruning = (enum_short_name(_P.PruneMethod.DESCRIPTOR, spec.prune.method),)
    else:
        default_pruning = ("channel",)
    cuda = spec.benchmark.device == _P.DEVICE_CUDA
    default_quantization = (
        ("static_int8", "dynamic_int8", "fp16") if cuda else ("static_int8", "dynamic_int8")
    )
    return TargetConfig(
        speedup=target.latency_speedup,
        latency_ms=target.latency_ms,
        max_accuracy_drop=target.max_accuracy_drop,
        pruning=tuple(n for n in names if n in PRUNING_TECHNIQUES) if names else default_pruning,
        quantization=tuple(n for n in names if n in QUANTIZE_TECHNIQUES) if names else default_quantization,
        budget_seconds=target.budget_seconds or DEFAULT_BUDGET_SECONDS,
        required=target.required,
    )
