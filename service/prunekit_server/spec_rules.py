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

_IMPLEMENTED_METHODS = frozenset({spec_pb2.PRUNE_METHOD_UNSTRUCTURED})


def check_spec(spec: spec_pb2.OptimizationSpec, model_format: int, *, prefix: str = "spec") -> None:
    """Raise ``INVALID_ARGUMENT``/``INVALID_SPEC`` listing every rule ``spec`` breaks."""
    violations = spec_violations(spec, model_format, prefix=prefix)
    if violations:
        raise invalid_spec(violations)


def spec_violations(
    spec: spec_pb2.OptimizationSpec, model_format: int, *, prefix: str = "spec"
) -> list[FieldViolation]:
    """Every rule ``spec`` breaks, as field violations with paths under ``prefix``."""
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
    _prune_violations(spec, prefix, found)
    _benchmark_violations(spec.benchmark, f"{prefix}.benchmark", found)
    samples = spec.evaluation.samples
    if not 0 <= samples <= MAX_SAMPLES:
        found.append(FieldViolation(f"{prefix}.evaluation.samples", f"must be between 0 and {MAX_SAMPLES}"))
    for name in ("finetune", "quantize"):
        if spec.HasField(name):
            found.append(FieldViolation(f"{prefix}.{name}", "not supported by this server version yet"))
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


def _prune_violations(spec: spec_pb2.OptimizationSpec, prefix: str, found: list[FieldViolation]) -> None:
    path = f"{prefix}.prune"
    prune = spec.prune
    if not spec.HasField("prune") or prune.method == spec_pb2.PRUNE_METHOD_UNSPECIFIED:
        found.append(FieldViolation(f"{path}.method", "required (e.g. UNSTRUCTURED)"))
    elif prune.method not in _IMPLEMENTED_METHODS and prune.method in spec_pb2.PruneMethod.values():
        found.append(
            FieldViolation(
                f"{path}.method", f"{spec_pb2.PruneMethod.Name(prune.method)} is not implemented yet"
            )
        )
    ratio = prune.ratio
    if not math.isfinite(ratio) or not 0.0 < ratio < 1.0:
        found.append(FieldViolation(f"{path}.ratio", f"must be a number with 0 < ratio < 1, got {ratio!r}"))
    if len(prune.ignore) > MAX_IGNORE_PATTERNS:
        found.append(FieldViolation(f"{path}.ignore", f"at most {MAX_IGNORE_PATTERNS} patterns"))
    for i, pattern in enumerate(prune.ignore):
        if not pattern or len(pattern) > MAX_PATTERN_LENGTH or not pattern.isprintable():
            found.append(
                FieldViolation(
                    f"{path}.ignore[{i}]", f"a glob of 1 to {MAX_PATTERN_LENGTH} printable characters"
                )
            )


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
