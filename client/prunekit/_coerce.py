"""What the SDK accepts in place of messages: model paths, spec mappings and files, input shapes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any, TypeAlias

from prunekit._spec import load_spec, spec_from_dict
from prunekit.v1 import job_pb2, model_pb2, spec_pb2

__all__ = ["InputsLike", "ModelLike", "ProgressCallback", "SpecLike", "as_spec", "input_specs"]

ModelLike: TypeAlias = "model_pb2.ModelRef | str | PathLike[str]"
SpecLike: TypeAlias = "spec_pb2.OptimizationSpec | Mapping[str, Any] | str | PathLike[str]"
InputsLike: TypeAlias = "Mapping[str, Sequence[int]] | Sequence[model_pb2.InputSpec] | None"
ProgressCallback: TypeAlias = Callable[[job_pb2.Job], None]


def as_spec(spec: SpecLike) -> spec_pb2.OptimizationSpec:
    """The message itself, a spec-file mapping converted, or a YAML/JSON spec file loaded (else
    :class:`SpecError`)."""
    if isinstance(spec, spec_pb2.OptimizationSpec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_dict(spec)
    return load_spec(spec)


def input_specs(inputs: InputsLike) -> list[model_pb2.InputSpec]:
    """``{"x": [1, 3, 224, 224]}`` or ``InputSpec`` messages as a list of messages; None is none."""
    if inputs is None:
        return []
    if isinstance(inputs, Mapping):
        return [model_pb2.InputSpec(name=name, shape=list(shape)) for name, shape in inputs.items()]
    return list(inputs)
