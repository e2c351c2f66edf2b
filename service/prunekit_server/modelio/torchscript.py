"""TorchScript intake: archive pre-scan, loading, export to ONNX and writing weights back.

A TorchScript archive is code. These functions are only ever called inside a
worker process; the pre-scan (:mod:`..archive_scan`, also run at upload) bounds what the
native zip reader will be asked to do before ``torch.jit.load`` sees the file.

Initializer names. :func:`torchscript_to_onnx` uses the legacy exporter without
constant folding, so every weight keeps its ``state_dict`` key as its initializer
name (``layer1.conv1.weight``, ``fc.bias``, ``bn.running_mean``). In eval mode that
exporter merges tensors that merely hold equal values (a freshly initialised
BatchNorm's ones and zeros) into one initializer read through ``Identity`` nodes;
such aliases are split back into one initializer per ``state_dict`` key, so each
weight can be changed on its own. Tensors that are truly shared (tied weights,
one storage) stay shared. :func:`write_torchscript_with_weights` maps names back by
``state_dict`` key first, then (for models exported some other way, e.g. with
folding: ``onnx::MatMul_12``) by exact value equality, direct or transposed, against
the initializers of the original export.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from prunekit.v1 import model_pb2

from ..archive_scan import prescan_torchscript_archive
from ..errors import FieldViolation, invalid_model, invalid_spec, unsupported_model
from ..model_caps import ModelCaps
from .fused_attention import register as register_fused_attention
from .onnx_checks import OnnxLimits, load_onnx_checked
from .specialize import has_branches, specialize

_TORCH_DTYPES: dict[int, torch.dtype] = {
    model_pb2.DATA_TYPE_UNSPECIFIED: torch.float32,
    model_pb2.DATA_TYPE_FLOAT32: torch.float32,
    model_pb2.DATA_TYPE_FLOAT16: torch.float16,
    model_pb2.DATA_TYPE_FLOAT64: torch.float64,
    model_pb2.DATA_TYPE_INT64: torch.int64,
    model_pb2.DATA_TYPE_INT32: torch.int32,
    model_pb2.DATA_TYPE_INT8: torch.int8,
    model_pb2.DATA_TYPE_UINT8: torch.uint8,
    model_pb2.DATA_TYPE_BOOL: torch.bool,
    model_pb2.DATA_TYPE_BFLOAT16: torch.bfloat16,
}


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load(path: Path, caps: ModelCaps | None = None) -> torch.jit.ScriptModule:
    prescan_torchscript_archive(path, caps=caps)
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise invalid_model(f"{path.name} is not a TorchScript model: {_one_line(exc)}") from exc
    if not isinstance(module, torch.jit.ScriptModule):
        raise invalid_model(f"{path.name} is not a TorchScript module")
    return module


def load_torchscript(path: Path, caps: ModelCaps | None = None) -> torch.jit.ScriptModule:
    """Pre-scan under ``caps``, then load ``path`` on the CPU and put it in eval mode (errors: INVALID_MODEL,
    MODEL_TOO_LARGE)."""
    module = _load(path, caps)
    module.eval()
    return module


def random_input(spec: model_pb2.InputSpec, generator: torch.Generator) -> torch.Tensor:
    """A random tensor of the spec's shape and dtype: normal floats, integers in {0, 1}; filled with
    the spec's ``value`` when it has one."""
    dtype = _TORCH_DTYPES.get(spec.dtype)
    if dtype is None:
        raise invalid_spec(
            [FieldViolation("spec.inputs", f"input {spec.name!r} has an unknown dtype {spec.dtype}")]
        )
    shape = [int(d) for d in spec.shape]
    if spec.HasField("value"):
        return torch.full(shape, spec.value, dtype=torch.float64).to(dtype)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(0, 2, shape, generator=generator).to(dtype)


def torchscript_to_onnx(
    module: torch.jit.ScriptModule,
    inputs: Sequence[model_pb2.InputSpec],
    out_path: Path,
    *,
    opset: int = 17,
    caps: ModelCaps | None = None,
) -> onnx.ModelProto:
    """Export ``module`` to ``out_path`` with the legacy exporter and return the checked model.

    Graph inputs are named after ``inputs`` and fed random tensors of their shapes;
    outputs are ``output`` (or ``output_0``, ``output_1``...). Dimension 0 of every
    input and output is symbolic (``batch``). The module is first run once on those
    tensors: a failure there is INVALID_SPEC (the declared shapes do not fit); an
    exporter failure is UNSUPPORTED_MODEL with the exporter's message. The export is
    checked under ``caps`` like an uploaded ONNX model.
    """
    generator = torch.Generator().manual_seed(0)
    args = tuple(random_input(spec, generator) for spec in inputs)
    names = [spec.name for spec in inputs]
    try:
        with torch.no_grad():
            result = module(*args)
    except Exception as exc:
        shapes = ", ".join(f"{spec.name}{list(spec.shape)}" for spec in inputs)
        raise invalid_spec(
            [FieldViolation("spec.inputs", f"the model fails on inputs {shapes}: {_one_line(exc)}")]
        ) from exc
    outputs = _flatten(result)
    output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    ranks = [t.dim() for t in args] + [t.dim() for t in outputs]
    dynamic_axes = {n: {0: "batch"} for n, rank in zip(names + output_names, ranks, strict=True) if rank > 0}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    register_fused_attention()

    def export() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(out_path),
                input_names=names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=False,
                export_params=True,
                keep_initializers_as_inputs=False,
            )

    try:
        export()
    except Exception as exc:
        if not has_branches(module):
            raise unsupported_model(
                f"the TorchScript model could not be exported to ONNX: {_one_line(exc)}"
            ) from exc
        _export_specialized(module, inputs, args, export, exc)
    exported = onnx.load(str(out_path), load_external_data=False)
    if _split_value_aliases(exported, module):
        onnx.save(exported, str(out_path))
    return load_onnx_checked(out_path, OnnxLimits(caps=caps or ModelCaps()))


def _other_samples(
    module: torch.jit.ScriptModule, inputs: Sequence[model_pb2.InputSpec]
) -> list[tuple[torch.Tensor, ...]]:
    """Other random values: with one more row of batch, and with a batch of one, where the module
    takes them (else the declared shapes)."""
    generator = torch.Generator().manual_seed(1)
    found = []
    for batch in (lambda b: b + 1, lambda b: 1):
        resized = [model_pb2.InputSpec() for _ in inputs]
        for spec, copy in zip(inputs, resized, strict=True):
            copy.CopyFrom(spec)
            if copy.shape:
                copy.shape[0] = batch(copy.shape[0])
        args = tuple(random_input(spec, generator) for spec in resized)
        try:
            with torch.no_grad():
                module(*args)
        except Exception:  # the batch is fixed: the same shapes, other values
            args = tuple(random_input(spec, generator) for spec in inputs)
        found.append(args)
    return found


def _export_specialized(
    module: torch.jit.ScriptModule,
    inputs: Sequence[model_pb2.InputSpec],
    args: tuple[torch.Tensor, ...],
    export: Callable[[], None],
    first: Exception,
) -> None:
    """Export a scripted module whose plain export failed once its branches are answered
    (:mod:`.specialize`); UNSUPPORTED_MODEL with both failures when that fails too."""
    left = 0
    try:
        left = specialize(module, [args, *_other_samples(module, inputs)])
        export()
    except Exception as exc:
        kept = f"{left} branch(es) read the data or the batch size" if left else "no branch left"
        raise unsupported_model(
            f"the TorchScript model could not be exported to ONNX: {_one_line(first)}; with its branches "
            f"answered for the declared inputs ({kept}): {_one_line(exc)}"
        ) from exc


def _flatten(result: object) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)) and result and all(isinstance(t, torch.Tensor) for t in result):
        return list(result)
    raise unsupported_model(
        f"the TorchScript model returns {type(result).__name__}; supported: a tensor or a tuple of tensors"
    )


def _named_tensors(module: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    return tensors


def _split_value_aliases(model: onnx.ModelProto, module: torch.jit.ScriptModule) -> int:
    """Give each ``state_dict`` key read through ``Identity(initializer)`` its own initializer.

    Only aliases of distinct storages are split; returns how many were.
    """
    tensors = _named_tensors(module)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    for node in graph.node:
        source = node.input[0] if node.op_type == "Identity" and len(node.input) == 1 else ""
        target = node.output[0] if len(node.output) == 1 else ""
        if (
            source in initializers
            and target in tensors
            and target not in initializers
            and target not in outputs
            and not (source in tensors and tensors[source].data_ptr() == tensors[target].data_ptr())
        ):
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[source])
            copy.name = target
            added.append(copy)
        else:
            kept.append(node)
    if added:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(added)
    return len(added)


def write_torchscript_with_weights(
    original: Path,
    new_weights: Mapping[str, np.ndarray],
    out_path: Path,
    *,
    original_onnx: onnx.ModelProto | None = None,
) -> list[str]:
    """Save a copy of the TorchScript model at ``original`` with some tensors replaced.

    ``new_weights`` maps ONNX initializer names to new values. A name is matched to
    a ``state_dict`` key directly, else (when ``original_onnx`` is given) by exact
    value equality of that initializer in ``original_onnx`` with one module tensor,
    as is or transposed (the new value is then transposed back). Values are cast to
    the module tensor's dtype; the rank must match, sizes may differ (structured
    pruning). Tied tensors change together. Returns ``"CODE: message"`` warnings for
    names that could not be mapped; raises UNSUPPORTED_MODEL when none could.
    """
    module = _load(original)
    tensors = _named_tensors(module)
    by_value = {t.name: t for t in original_onnx.graph.initializer} if original_onnx is not None else {}
    problems: list[str] = []
    updates: dict[str, torch.Tensor] = {}
    for name, value in new_weights.items():
        array = np.asarray(value)
        key, transposed = (name, False) if name in tensors else _match_by_value(name, by_value, tensors)
        if key is None:
            problems.append(
                f"UNMAPPED_WEIGHT: {name} matches no tensor of the TorchScript model; not written"
            )
            continue
        if transposed:
            array = array.T
        current = tensors[key]
        if array.ndim != current.dim():
            problems.append(
                f"UNMAPPED_WEIGHT: {name} has rank {array.ndim}, {key} has rank {current.dim()}; not written"
            )
            continue
        updates[key] = torch.from_numpy(np.ascontiguousarray(array)).to(current.dtype)
    if new_weights and not updates:
        raise unsupported_model(
            f"none of the {len(new_weights)} changed weights could be mapped to the TorchScript model"
        )
    with torch.no_grad():
        for key, tensor in updates.items():
            tensors[key].data = tensor
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(out_path))
    return problems


def _match_by_value(
    name: str, initializers: Mapping[str, onnx.TensorProto], tensors: Mapping[str, torch.Tensor]
) -> tuple[str | None, bool]:
    """The one module tensor equal to initializer ``name`` (and whether transposed), or None."""
    proto = initializers.get(name)
    if proto is None:
        return None, False
    value = numpy_helper.to_array(proto)
    matches: dict[int, tuple[str, bool]] = {}
    for key, tensor in tensors.items():
        try:
            array = tensor.detach().cpu().numpy()
        except TypeError:
            continue
        for transposed in (False, True):
            candidate = array.T if transposed else array
            if (transposed and array.ndim != 2) or candidate.shape != value.shape:
                continue
            if np.array_equal(candidate, value):
                matches.setdefault(tensor.data_ptr(), (key, transposed))
    if len(matches) != 1:
        return None, False
    return next(iter(matches.values()))
