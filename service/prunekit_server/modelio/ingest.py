"""Model intake: validate an upload, turn it into a checked ONNX graph, pin its input shapes.

:func:`ingest` is the first stage of every job. ONNX uploads are checked in place;
TorchScript uploads are loaded and exported to ONNX in the working directory.
:func:`resolve_inputs` decides the concrete shape of every graph input: a declared
input wins; otherwise the graph's static dimensions are used and a symbolic first
dimension becomes the batch size. Anything else must be declared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx.inliner
from onnx import TensorProto

from prunekit.spec.inputs import inputs_size
from prunekit.v1 import model_pb2

from ..errors import Code, FieldViolation, ServiceError, invalid_spec, unsupported_model
from ..model_caps import ModelCaps
from .onnx_checks import OnnxLimits, load_onnx_checked
from .torchscript import load_torchscript, torchscript_to_onnx

_ONNX_TO_DATA_TYPE: dict[int, model_pb2.DataType.ValueType] = {
    TensorProto.FLOAT: model_pb2.DATA_TYPE_FLOAT32,
    TensorProto.FLOAT16: model_pb2.DATA_TYPE_FLOAT16,
    TensorProto.DOUBLE: model_pb2.DATA_TYPE_FLOAT64,
    TensorProto.INT64: model_pb2.DATA_TYPE_INT64,
    TensorProto.INT32: model_pb2.DATA_TYPE_INT32,
    TensorProto.INT8: model_pb2.DATA_TYPE_INT8,
    TensorProto.UINT8: model_pb2.DATA_TYPE_UINT8,
    TensorProto.BOOL: model_pb2.DATA_TYPE_BOOL,
    TensorProto.BFLOAT16: model_pb2.DATA_TYPE_BFLOAT16,
}
_DATA_TYPE_TO_ONNX: dict[int, int] = {v: k for k, v in _ONNX_TO_DATA_TYPE.items()}
_DATA_TYPE_TO_ONNX[model_pb2.DATA_TYPE_UNSPECIFIED] = TensorProto.FLOAT


def data_type_from_onnx(elem_type: int) -> model_pb2.DataType.ValueType:
    """The ``model_pb2.DataType`` of an ONNX element type (DATA_TYPE_UNSPECIFIED when it has none)."""
    return _ONNX_TO_DATA_TYPE.get(elem_type, model_pb2.DATA_TYPE_UNSPECIFIED)


def _enum_name(names: Sequence[str], values: Sequence[int], value: int) -> str:
    return dict(zip(values, names, strict=True)).get(value, str(value))


def _type_name(data_type: int) -> str:
    """A DataType's name for messages (the number when it is not a known value)."""
    return _enum_name(model_pb2.DataType.keys(), model_pb2.DataType.values(), data_type)


def data_type_to_onnx(data_type: int) -> int:
    """The ONNX element type of a ``model_pb2.DataType``; UNSPECIFIED means float32."""
    if data_type not in _DATA_TYPE_TO_ONNX:
        raise ValueError(f"unknown DataType {data_type}")
    return _DATA_TYPE_TO_ONNX[data_type]


@dataclass
class IngestedModel:
    """A validated model and the concrete inputs every later stage uses."""

    onnx_model: onnx.ModelProto
    onnx_path: Path
    source_format: int
    source_path: Path
    inputs: list[model_pb2.InputSpec]
    warnings: list[str] = field(default_factory=list)


def ingest(
    model_path: Path,
    model_format: int,
    declared_inputs: Sequence[model_pb2.InputSpec],
    workdir: Path,
    *,
    batch_size: int = 1,
    caps: ModelCaps | None = None,
) -> IngestedModel:
    """Validate ``model_path`` and resolve its inputs, within the worker's ``caps``.

    ``onnx_path`` is the upload itself for ONNX (or, when the model has local
    functions, an inlined copy in ``workdir``) and the export in ``workdir`` for
    TorchScript. Raises ServiceError: INVALID_MODEL / UNSUPPORTED_MODEL for the
    model, MODEL_TOO_LARGE for a model or inputs over a cap (checked before they
    are inlined, unpacked or allocated), INVALID_SPEC for inputs, INVALID_REQUEST
    for an unknown format.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    caps = caps or ModelCaps()
    warnings: list[str] = []
    if model_format == model_pb2.MODEL_FORMAT_ONNX:
        model = load_onnx_checked(model_path, OnnxLimits(caps=caps))
        onnx_path = model_path
        if len(model.functions):
            count = len(model.functions)
            model = onnx.inliner.inline_local_functions(model)
            onnx_path = _free_path(workdir / "model.inlined.onnx", model_path)
            onnx_path.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(onnx_path))
            warnings.append(f"FUNCTIONS_INLINED: {count} model-local function(s) were inlined")
    elif model_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT:
        declared = _torchscript_inputs(declared_inputs)
        check_input_bytes(declared, caps)
        module = load_torchscript(model_path, caps)
        declared = _match_forward(module, declared)
        onnx_path = _free_path(workdir / "model.onnx", model_path)
        model = torchscript_to_onnx(module, declared, onnx_path, caps=caps)
        declared_inputs = declared
    else:
        label = _enum_name(model_pb2.ModelFormat.keys(), model_pb2.ModelFormat.values(), model_format)
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            "INVALID_REQUEST",
            f"unsupported model format {label}; use MODEL_FORMAT_ONNX or MODEL_FORMAT_TORCHSCRIPT",
            [FieldViolation("model.format", "must be MODEL_FORMAT_ONNX or MODEL_FORMAT_TORCHSCRIPT")],
        )
    inputs = resolve_inputs(model, declared_inputs, batch_size=batch_size)
    check_input_bytes(inputs, caps)
    return IngestedModel(model, onnx_path, model_format, model_path, inputs, warnings)


def check_input_bytes(inputs: Sequence[model_pb2.InputSpec], caps: ModelCaps) -> None:
    """MODEL_TOO_LARGE when one batch of ``inputs`` is over ``caps.max_input_bytes``."""
    total, phrase = inputs_size(inputs)
    if total > caps.max_input_bytes:
        raise caps.too_large("max_input_bytes", phrase)


def _free_path(wanted: Path, taken: Path) -> Path:
    return wanted.with_name("exported." + wanted.name) if wanted.resolve() == taken.resolve() else wanted


def _torchscript_inputs(declared: Sequence[model_pb2.InputSpec]) -> list[model_pb2.InputSpec]:
    if not declared:
        raise invalid_spec(
            [
                FieldViolation(
                    "spec.inputs",
                    "inputs are required for TorchScript models: declare the shape (and dtype) of each input",
                )
            ]
        )
    violations: list[FieldViolation] = []
    for i, spec in enumerate(declared):
        if any(d <= 0 for d in spec.shape):
            violations.append(FieldViolation(f"spec.inputs[{i}].shape", "every dimension must be > 0"))
        if spec.dtype not in _DATA_TYPE_TO_ONNX:
            violations.append(FieldViolation(f"spec.inputs[{i}].dtype", f"unknown data type {spec.dtype}"))
    if violations:
        raise invalid_spec(violations)
    return [_copy(spec) for spec in declared]


def _match_forward(module: object, declared: list[model_pb2.InputSpec]) -> list[model_pb2.InputSpec]:
    """Check the declared count against ``forward``'s arguments; name unnamed inputs after them."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    arguments = list(schema.arguments)[1:] if schema is not None else []
    if schema is not None:
        required = [a for a in arguments if not a.has_default_value()]
        if not len(required) <= len(declared) <= len(arguments):
            arg_names = ", ".join(a.name for a in arguments)
            raise invalid_spec(
                [
                    FieldViolation(
                        "spec.inputs",
                        f"{len(declared)} input(s) declared but the model's forward takes "
                        f"{len(required)} to {len(arguments)} ({arg_names})",
                    )
                ]
            )
    for i, spec in enumerate(declared):
        if not spec.name:
            spec.name = arguments[i].name if i < len(arguments) else f"input_{i}"
    names = [spec.name for spec in declared]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise invalid_spec(
            [FieldViolation("spec.inputs", f"input names must be unique: {', '.join(duplicates)}")]
        )
    return declared


def _copy(spec: model_pb2.InputSpec) -> model_pb2.InputSpec:
    copy = model_pb2.InputSpec()
    copy.CopyFrom(spec)
    return copy


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph's real inputs, in order (initializers listed as inputs left out)."""
    initializers = {t.name for t in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _graph_dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    """Static sizes (None where symbolic), or None when the input has no shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]


def resolve_inputs(
    model: onnx.ModelProto, declared: Sequence[model_pb2.InputSpec], *, batch_size: int = 1
) -> list[model_pb2.InputSpec]:
    """Concrete shapes and dtypes of every graph input, in graph order.

    Raises INVALID_SPEC listing every problem: an unknown or duplicate declared
    name, a declared shape whose rank or static sizes contradict the graph, a
    declared dtype other than the graph's, an undeclared input with a symbolic
    dimension other than the first. A graph input that is not a tensor of a
    supported type is UNSUPPORTED_MODEL.
    """
    values = graph_inputs(model)
    known = {v.name for v in values}
    violations: list[FieldViolation] = []
    by_name: dict[str, tuple[int, model_pb2.InputSpec]] = {}
    for i, spec in enumerate(declared):
        if not spec.name:
            violations.append(FieldViolation(f"spec.inputs[{i}].name", "an input name is required"))
        elif spec.name in by_name:
            violations.append(
                FieldViolation(f"spec.inputs[{i}].name", f"input {spec.name!r} is declared twice")
            )
        elif spec.name not in known:
            violations.append(
                FieldViolation(
                    f"spec.inputs[{i}].name",
                    f"the model has no input named {spec.name!r}; its inputs are: {', '.join(sorted(known))}",
                )
            )
        else:
            by_name[spec.name] = (i, spec)
    resolved: list[model_pb2.InputSpec] = []
    for value in values:
        if value.type.WhichOneof("value") != "tensor_type":
            raise unsupported_model(f"model input {value.name!r} is not a tensor, which is not supported")
        elem_type = value.type.tensor_type.elem_type
        dtype = data_type_from_onnx(elem_type)
        if dtype == model_pb2.DATA_TYPE_UNSPECIFIED:
            type_name = _enum_name(TensorProto.DataType.keys(), TensorProto.DataType.values(), elem_type)
            raise unsupported_model(
                f"model input {value.name!r} has element type {type_name}, which is not supported"
            )
        dims = _graph_dims(value)
        if value.name in by_name:
            i, spec = by_name[value.name]
            shape = [int(d) for d in spec.shape]
            violations.extend(_check_declared(i, spec, dims, dtype))
        else:
            shape = _undeclared_shape(value, dims, batch_size, violations)
        resolved.append(model_pb2.InputSpec(name=value.name, shape=shape, dtype=dtype))
        if value.name in by_name and by_name[value.name][1].HasField("value"):
            resolved[-1].value = by_name[value.name][1].value
    if violations:
        raise invalid_spec(violations)
    return resolved


def _check_declared(
    i: int, spec: model_pb2.InputSpec, dims: list[int | None] | None, dtype: int
) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    shape = [int(d) for d in spec.shape]
    where = f"spec.inputs[{i}]"
    if any(d <= 0 for d in shape):
        problems.append(FieldViolation(f"{where}.shape", f"every dimension of {spec.name!r} must be > 0"))
    if dims is not None and len(dims) != len(shape):
        problems.append(
            FieldViolation(
                f"{where}.shape",
                f"input {spec.name!r} has rank {len(dims)} in the model, not {len(shape)}",
            )
        )
    elif dims is not None:
        wrong = [
            f"dim {k}: model {d}, declared {s}"
            for k, (d, s) in enumerate(zip(dims, shape, strict=True))
            if d not in (None, s)
        ]
        if wrong:
            problems.append(
                FieldViolation(
                    f"{where}.shape", f"input {spec.name!r} contradicts the model ({'; '.join(wrong)})"
                )
            )
    if spec.dtype not in (model_pb2.DATA_TYPE_UNSPECIFIED, dtype):
        problems.append(
            FieldViolation(
                f"{where}.dtype",
                f"input {spec.name!r} is {_type_name(dtype)} in the model, not {_type_name(spec.dtype)}",
            )
        )
    return problems


def _undeclared_shape(
    value: onnx.ValueInfoProto,
    dims: list[int | None] | None,
    batch_size: int,
    violations: list[FieldViolation],
) -> list[int]:
    if dims is None:
        violations.append(
            FieldViolation(
                "spec.inputs", f"input {value.name!r} has no shape in the model; declare it in spec.inputs"
            )
        )
        return []
    symbols = [d.dim_param or "?" for d in value.type.tensor_type.shape.dim]
    unknown = [f"{k} ({symbols[k]})" for k, d in enumerate(dims) if d is None and k > 0]
    if unknown:
        violations.append(
            FieldViolation(
                "spec.inputs",
                f"input {value.name!r} has symbolic dimension(s) at position {', '.join(unknown)}; "
                "declare its shape in spec.inputs",
            )
        )
    return [batch_size if d is None else d for d in dims]
