"""The rules an OptimizationSpec must follow, checked before a job is accepted.

:func:`check_spec` collects every violation (it never stops at the first) and
raises one ``INVALID_SPEC`` error listing them all. It runs in the server
process, so it looks only at the spec, never at the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from prunekit.v1 import model_pb2, spec_pb2

from .errors import FieldViolation, invalid_spec
from .finetune_rules import (
    MAX_DATA_SHARDS,
    accuracy_rule_violations,
    data_violations,
    finetune_violations,
)
from .prune_rules import prune_violations

MAX_INPUTS = 64
MAX_RANK = 8
MAX_DIM = 1 << 20
MAX_INPUT_ELEMENTS = 1 << 30
MAX_IGNORE_PATTERNS = 256
MAX_PATTERN_LENGTH = 256
MAX_BATCH = 4096
MAX_THREADS = 256
MAX_WARMUP = 10_000
MAX_ITERATIONS = 100_000
MAX_SAMPLES = 4096
MAX_BATCH_SIZES = 8
MAX_SECONDS = 3600.0
MAX_CALIBRATION_SAMPLES = 1024
MIN_PERCENTILE = 90.0

_AUTO_CANDIDATES = frozenset(
    {spec_pb2.QUANTIZE_MODE_STATIC_INT8, spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8, spec_pb2.QUANTIZE_MODE_FP16}
)
_CALIBRATED = frozenset({spec_pb2.QUANTIZE_MODE_STATIC_INT8, spec_pb2.QUANTIZE_MODE_AUTO})


def check_spec(
    spec: spec_pb2.OptimizationSpec,
    model_format: int,
    *,
    prefix: str = "spec",
    max_data_shards: int = MAX_DATA_SHARDS,
) -> None:
    """Raise ``INVALID_ARGUMENT``/``INVALID_SPEC`` listing every rule ``spec`` breaks."""
    violations = spec_violations(spec, model_format, prefix=prefix, max_data_shards=max_data_shards)
    if violations:
        raise invalid_spec(violations)


def spec_violations(
    spec: spec_pb2.OptimizationSpec,
    model_format: int,
    *,
    prefix: str = "spec",
    max_data_shards: int = MAX_DATA_SHARDS,
) -> list[FieldViolation]:
    """Every rule ``spec`` breaks, as field violations with paths under ``prefix``.

    ``max_data_shards`` caps the entries of ``data`` (the server's ``max_job_data_shards``).
    """
    found: list[FieldViolation] = []
    _unknown_fields(spec, prefix, found)
    _undefined_enums(spec, prefix, found)
    found += input_violations(spec.inputs, f"{prefix}.inputs")
    if model_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT and not spec.inputs:
        found.append(
            FieldViolation(
                f"{prefix}.inputs", "required for TorchScript models (name, shape and dtype of each input)"
            )
        )
    quantizes = spec.HasField("quantize") and spec.quantize.mode != spec_pb2.QUANTIZE_MODE_NONE
    if spec.HasField("prune"):
        prune_violations(spec.prune, f"{prefix}.prune", found)
    elif not quantizes:
        found.append(
            FieldViolation(
                f"{prefix}.prune", "request prune or quantize (or both); this spec asks for neither"
            )
        )
    if spec.HasField("quantize"):
        _quantize_violations(spec, f"{prefix}.quantize", found)
    _benchmark_violations(spec.benchmark, f"{prefix}.benchmark", found)
    _evaluation_violations(spec.evaluation, f"{prefix}.evaluation", found)
    accuracy_rule_violations(spec, f"{prefix}.evaluation", found)
    if spec.HasField("data"):
        data_violations(spec.data, f"{prefix}.data", found, max_shards=max_data_shards)
    if spec.HasField("finetune"):
        finetune_violations(spec, f"{prefix}.finetune", found)
    return found


def input_violations(inputs: Iterable[model_pb2.InputSpec], path: str) -> list[FieldViolation]:
    """Rules for declared inputs: unique names, concrete positive shapes, known dtypes."""
    found: list[FieldViolation] = []
    items = list(inputs)
    if len(items) > MAX_INPUTS:
        found.append(FieldViolation(path, f"at most {MAX_INPUTS} inputs"))
    seen: set[str] = set()
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        if not item.name:
            found.append(FieldViolation(f"{here}.name", "must not be empty"))
        elif item.name in seen:
            found.append(FieldViolation(f"{here}.name", f"duplicate input name {item.name!r}"))
        seen.add(item.name)
        shape = list(item.shape)
        if not shape or len(shape) > MAX_RANK:
            found.append(FieldViolation(f"{here}.shape", f"must have 1 to {MAX_RANK} dimensions"))
        elif any(d <= 0 or d > MAX_DIM for d in shape):
            found.append(FieldViolation(f"{here}.shape", f"every dimension must be between 1 and {MAX_DIM}"))
        elif math.prod(shape) > MAX_INPUT_ELEMENTS:
            found.append(FieldViolation(f"{here}.shape", f"at most {MAX_INPUT_ELEMENTS} elements"))
    return found


def _patterns(patterns: Iterable[str], path: str, found: list[FieldViolation]) -> None:
    items = list(patterns)
    if len(items) > MAX_IGNORE_PATTERNS:
        found.append(FieldViolation(path, f"at most {MAX_IGNORE_PATTERNS} patterns"))
    for i, pattern in enumerate(items):
        if not pattern or len(pattern) > MAX_PATTERN_LENGTH or not pattern.isprintable():
            found.append(
                FieldViolation(f"{path}[{i}]", f"a glob of 1 to {MAX_PATTERN_LENGTH} printable characters")
            )


def _quantize_violations(spec: spec_pb2.OptimizationSpec, path: str, found: list[FieldViolation]) -> None:
    q = spec.quantize
    mode = q.mode
    if mode == spec_pb2.QUANTIZE_MODE_UNSPECIFIED:
        found.append(
            FieldViolation(
                f"{path}.mode", "required when quantize is set (static_int8, dynamic_int8, fp16, auto)"
            )
        )
    calibrated = mode in _CALIBRATED
    if mode != spec_pb2.QUANTIZE_MODE_UNSPECIFIED and not calibrated:
        for name in ("calibration", "calibration_samples", "percentile"):
            if getattr(q, name):
                found.append(FieldViolation(f"{path}.{name}", "only for mode STATIC_INT8 or AUTO"))
    if not 0 <= q.calibration_samples <= MAX_CALIBRATION_SAMPLES:
        found.append(
            FieldViolation(
                f"{path}.calibration_samples", f"must be between 0 (default) and {MAX_CALIBRATION_SAMPLES}"
            )
        )
    percentile = q.percentile
    if percentile != 0.0:
        if not math.isfinite(percentile) or not MIN_PERCENTILE <= percentile <= 100.0:
            found.append(
                FieldViolation(
                    f"{path}.percentile", f"must be 0 (default 99.999) or between {MIN_PERCENTILE:g} and 100"
                )
            )
        elif q.calibration != spec_pb2.CALIBRATION_METHOD_PERCENTILE:
            found.append(FieldViolation(f"{path}.percentile", "only with calibration PERCENTILE"))
    if q.candidates and mode != spec_pb2.QUANTIZE_MODE_AUTO:
        found.append(FieldViolation(f"{path}.candidates", "only for mode AUTO"))
    seen: set[int] = set()
    for i, candidate in enumerate(q.candidates):
        if candidate not in _AUTO_CANDIDATES:
            found.append(
                FieldViolation(f"{path}.candidates[{i}]", "each must be STATIC_INT8, DYNAMIC_INT8 or FP16")
            )
        elif candidate in seen:
            found.append(FieldViolation(f"{path}.candidates[{i}]", "listed twice"))
        seen.add(candidate)
    if q.include_original and not spec.HasField("prune"):
        found.append(
            FieldViolation(
                f"{path}.include_original", "needs prune: without it the original is what gets quantized"
            )
        )
    if mode == spec_pb2.QUANTIZE_MODE_NONE:
        for name in ("include_original", "exclude"):
            if getattr(q, name):
                found.append(FieldViolation(f"{path}.{name}", "mode NONE quantizes nothing"))
    _patterns(q.exclude, f"{path}.exclude", found)


def _benchmark_violations(bench: spec_pb2.BenchmarkSpec, path: str, found: list[FieldViolation]) -> None:
    limits = {
        "batch_size": MAX_BATCH,
        "threads": MAX_THREADS,
        "warmup": MAX_WARMUP,
        "iterations": MAX_ITERATIONS,
    }
    for name, high in limits.items():
        value = getattr(bench, name)
        if not 0 <= value <= high:
            found.append(FieldViolation(f"{path}.{name}", f"must be between 0 (default) and {high}"))
    sizes = list(bench.batch_sizes)
    if sizes and bench.batch_size:
        found.append(FieldViolation(f"{path}.batch_sizes", "set batch_size or batch_sizes, not both"))
    if len(sizes) > MAX_BATCH_SIZES:
        found.append(FieldViolation(f"{path}.batch_sizes", f"at most {MAX_BATCH_SIZES} batch sizes"))
    for i, size in enumerate(sizes):
        if not 1 <= size <= MAX_BATCH:
            found.append(FieldViolation(f"{path}.batch_sizes[{i}]", f"must be between 1 and {MAX_BATCH}"))
        elif size in sizes[:i]:
            found.append(FieldViolation(f"{path}.batch_sizes[{i}]", f"batch size {size} is listed twice"))
    seconds = bench.max_seconds
    if not math.isfinite(seconds) or not 0.0 <= seconds <= MAX_SECONDS:
        found.append(
            FieldViolation(f"{path}.max_seconds", f"must be between 0 (default) and {MAX_SECONDS:g} seconds")
        )


def _evaluation_violations(
    evaluation: spec_pb2.EvaluationSpec, path: str, found: list[FieldViolation]
) -> None:
    if not 0 <= evaluation.samples <= MAX_SAMPLES:
        found.append(FieldViolation(f"{path}.samples", f"must be between 0 and {MAX_SAMPLES}"))
    for name in ("min_top1_agreement", "min_cosine_similarity"):
        value = getattr(evaluation, name)
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            found.append(FieldViolation(f"{path}.{name}", "must be 0 (default 0.99) or 0 < value <= 1"))


def _unknown_fields(message: Message, path: str, found: list[FieldViolation]) -> None:
    unknown = unknown_fields.UnknownFieldSet(message)
    for index in range(len(unknown)):
        found.append(FieldViolation(path, f"unknown field number {unknown[index].field_number}"))
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            for i, element in enumerate(value):
                _unknown_fields(element, f"{path}.{field.name}[{i}]", found)
        else:
            _unknown_fields(value, f"{path}.{field.name}", found)


def _undefined_enums(message: Message, path: str, found: list[FieldViolation]) -> None:
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            elements = value if field.is_repeated else [value]
            for i, element in enumerate(elements):
                suffix = f"[{i}]" if field.is_repeated else ""
                _undefined_enums(element, f"{path}.{field.name}{suffix}", found)
        elif field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            enum_type = field.enum_type
            numbers = value if field.is_repeated else [value]
            for number in numbers:
                if enum_type.values_by_number.get(number) is None:
                    found.append(
                        FieldViolation(f"{path}.{field.name}", f"undefined {enum_type.name} value {number}")
                    )
