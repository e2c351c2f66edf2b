"""The rules a spec's ``quantize`` must follow.

A mode is required (NONE quantizes nothing and takes no options); ``calibration``, ``calibration_samples``
(1 to 1024, 0 the default) and ``percentile`` (90 to 100, only with PERCENTILE calibration) only for the
calibrating modes STATIC_INT8 and AUTO; ``candidates`` only for AUTO, each a concrete mode listed once;
``include_original`` needs prune; ``exclude`` globs as everywhere; ``aware_training`` only with
STATIC_INT8 and ``data.train``, its ``steps`` 1 to 100000, ``learning_rate`` 0 or in (0, 1),
``batch_size`` 0 to 4096.
"""

from __future__ import annotations

from prunekit.v1 import spec_pb2

from .quantize_configs import MAX_AWARE_BATCH, MAX_AWARE_STEPS, MAX_CALIBRATION_SAMPLES
from .values import int_range_problem, percentile_problem
from .violation import FieldViolation, pattern_violations

__all__ = ["AUTO_CANDIDATES", "CALIBRATED", "quantize_violations"]

_Q = spec_pb2
AUTO_CANDIDATES = (_Q.QUANTIZE_MODE_STATIC_INT8, _Q.QUANTIZE_MODE_DYNAMIC_INT8, _Q.QUANTIZE_MODE_FP16)
"""The modes AUTO may build and compare, in enum order (all of them when ``candidates`` is empty)."""
CALIBRATED = frozenset({_Q.QUANTIZE_MODE_STATIC_INT8, _Q.QUANTIZE_MODE_AUTO})
"""Modes that read the calibration options."""


def quantize_violations(spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation]) -> None:
    """Append every rule ``spec.quantize`` breaks to ``found`` (``path`` is the quantize field's path)."""
    q = spec.quantize
    mode = q.mode
    if mode == _Q.QUANTIZE_MODE_UNSPECIFIED:
        found.append(
            FieldViolation(
                f"{path}.mode", "required when quantize is set (static_int8, dynamic_int8, fp16, auto)"
            )
        )
    if mode != _Q.QUANTIZE_MODE_UNSPECIFIED and mode not in CALIBRATED:
        for name in ("calibration", "calibration_samples", "percentile"):
            if getattr(q, name):
                found.append(FieldViolation(f"{path}.{name}", "only for mode STATIC_INT8 or AUTO"))
    samples = int_range_problem(q.calibration_samples, 1, MAX_CALIBRATION_SAMPLES)
    if q.calibration_samples and samples:
        found.append(FieldViolation(f"{path}.calibration_samples", f"{samples} (0: 64)"))
    if q.percentile != 0.0:
        problem = percentile_problem(q.percentile)
        if problem:
            found.append(FieldViolation(f"{path}.percentile", f"{problem} (0: 99.999)"))
        elif q.calibration != _Q.CALIBRATION_METHOD_PERCENTILE:
            found.append(FieldViolation(f"{path}.percentile", "only with calibration PERCENTILE"))
    _candidates(q, path, found)
    if q.include_original and not spec.HasField("prune"):
        found.append(
            FieldViolation(
                f"{path}.include_original", "needs prune: without it the original is what gets quantized"
            )
        )
    if mode == _Q.QUANTIZE_MODE_NONE:
        for name in ("include_original", "exclude"):
            if getattr(q, name):
                found.append(FieldViolation(f"{path}.{name}", "mode NONE quantizes nothing"))
    pattern_violations(list(q.exclude), f"{path}.exclude", found)
    if q.HasField("aware_training"):
        _aware(spec, f"{path}.aware_training", found)


def _aware(spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation]) -> None:
    aware = spec.quantize.aware_training
    if spec.quantize.mode != _Q.QUANTIZE_MODE_STATIC_INT8:
        found.append(FieldViolation(path, "only for mode STATIC_INT8"))
    if not spec.data.train:
        found.append(FieldViolation(path, "needs data.train: quantization-aware training trains on it"))
    problem = int_range_problem(aware.steps, 1, MAX_AWARE_STEPS)
    if problem:
        found.append(FieldViolation(f"{path}.steps", f"{problem} (required)"))
    lr = aware.learning_rate
    if lr and not 0 < lr < 1:
        found.append(FieldViolation(f"{path}.learning_rate", f"must satisfy 0 < x < 1, got {lr!r} (0: 1e-4)"))
    problem = int_range_problem(aware.batch_size, 0, MAX_AWARE_BATCH)
    if problem:
        found.append(FieldViolation(f"{path}.batch_size", f"{problem} (0: 32)"))


def _candidates(q: spec_pb2.QuantizeSpec, path: str, found: list[FieldViolation]) -> None:
    if q.candidates and q.mode != _Q.QUANTIZE_MODE_AUTO:
        found.append(FieldViolation(f"{path}.candidates", "only for mode AUTO"))
    seen: set[int] = set()
    for i, candidate in enumerate(q.candidates):
        if candidate not in AUTO_CANDIDATES:
            found.append(
                FieldViolation(f"{path}.candidates[{i}]", "each must be STATIC_INT8, DYNAMIC_INT8 or FP16")
            )
        elif candidate in seen:
            found.append(FieldViolation(f"{path}.candidates[{i}]", "listed twice"))
        seen.add(candidate)
