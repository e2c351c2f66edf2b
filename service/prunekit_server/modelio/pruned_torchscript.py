"""TorchScript output of a model whose shapes changed (structured pruning), checked before it is kept.

Two ways, tried in order:

1. **Swap**: every tensor of the pruned GraphModule that came from an
   initializer of the TorchScript model's ONNX export (``gm.meta["prunekit_onnx_names"]``)
   is written into a copy of the user's module (:func:`.torchscript.write_torchscript_with_weights`).
   This keeps their code, method names and signature. It is only valid when the
   code takes the new shapes: constants such as a convolution's ``groups`` or a
   hard-coded ``view`` size are baked into TorchScript code. So the copy is run on
   seeded random inputs and compared with the pruned ONNX model in ONNX Runtime.
2. **Trace**: otherwise the pruned GraphModule itself is traced
   (:func:`.onnx_to_fx.fx_to_torchscript`) and checked the same way.

A ``TORCHSCRIPT_OUTPUT`` warning says which one ``pruned.pt`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import fx, nn

from prunekit.v1 import model_pb2

from ..errors import ServiceError, unsupported_model
from .onnx_to_fx import fx_to_torchscript
from .torchscript import random_input, write_torchscript_with_weights

TOLERANCE = 1e-3
"""Largest relative difference (to the largest output magnitude) between pruned.pt and pruned.onnx."""
_ORDER = ("weight", "bias", "running_mean", "running_var")


def graph_tensors(gm: fx.GraphModule) -> dict[str, np.ndarray]:
    """Original ONNX initializer name -> the GraphModule's current value, for every tensor it maps.

    A module's tensors pair with its record's initializers in ONNX input order
    (weight, bias, then BatchNorm's running mean and variance); a free tensor
    (``get_attr``) has its own record.
    """
    records = gm.meta.get("prunekit_onnx_names", {})
    found: dict[str, np.ndarray] = {}
    for path, record in records.items():
        if not isinstance(record, dict):
            continue
        if "initializer" in record:
            tensor = _attr(gm, path)
            if isinstance(tensor, torch.Tensor):
                found[str(record["initializer"])] = tensor.detach().cpu().numpy()
            continue
        try:
            module = gm.get_submodule(path)
        except AttributeError:
            continue
        tensors = [t for t in (getattr(module, name, None) for name in _ORDER) if isinstance(t, torch.Tensor)]
        for name, tensor in zip(record.get("initializers", []), tensors, strict=False):
            found[str(name)] = tensor.detach().cpu().numpy()
    return found


def _attr(gm: nn.Module, path: str) -> object:
    owner: object = gm
    for part in path.split("."):
        owner = getattr(owner, part, None)
    return owner


def _one_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text[:200]


def _difference(path: Path, reference: onnx.ModelProto, inputs: Sequence[model_pb2.InputSpec]) -> str:
    """Why the TorchScript file at ``path`` disagrees with ``reference`` ("" when it agrees)."""
    generator = torch.Generator().manual_seed(7)
    args = tuple(random_input(spec, generator) for spec in inputs)
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        module.eval()
        with torch.no_grad():
            result = module(*args)
    except Exception as exc:
        return f"it fails on the new shapes: {_one_line(exc)}"
    actual = [result] if isinstance(result, torch.Tensor) else list(result)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(reference.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, {spec.name: a.numpy() for spec, a in zip(inputs, args, strict=True)})
    if len(actual) != len(expected):
        return f"it returns {len(actual)} outputs, the pruned ONNX model {len(expected)}"
    for got, want in zip(actual, expected, strict=True):
        got_array = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        want_array = np.asarray(want)
        if got_array.shape != want_array.shape:
            return f"an output has shape {list(got_array.shape)}, pruned.onnx's {list(want_array.shape)}"
        if want_array.size and np.issubdtype(want_array.dtype, np.floating):
            scale = max(float(np.abs(want_array).max()), 1e-6)
            error = float(np.abs(got_array.astype(np.float64) - want_array).max()) / scale
            if not error <= TOLERANCE:
                return f"its outputs differ from the pruned ONNX model's (relative error {error:.2g})"
    return ""


def write_pruned_torchscript(
    source: Path,
    gm: fx.GraphModule,
    original_onnx: onnx.ModelProto,
    pruned_onnx: onnx.ModelProto,
    inputs: Sequence[model_pb2.InputSpec],
    out_path: Path,
) -> list[str]:
    """Write ``out_path`` as the module doc says; return the ``TORCHSCRIPT_OUTPUT`` warning.

    Raises ``UNSUPPORTED_MODEL`` when neither way gives a module that agrees
    with ``pruned_onnx``.
    """
    swap = out_path.with_name(out_path.stem + ".swap.pt")
    try:
        problems = write_torchscript_with_weights(
            source, graph_tensors(gm), swap, original_onnx=original_onnx
        )
        reason = f"{len(problems)} tensor(s) could not be mapped" if problems else ""
        reason = reason or _difference(swap, pruned_onnx, inputs)
    except ServiceError as exc:
        reason = exc.message
    except Exception as exc:
        reason = _one_line(exc)
    if not reason:
        swap.replace(out_path)
        return [
            "TORCHSCRIPT_OUTPUT: pruned.pt is your TorchScript module with the pruned tensors swapped in "
            "(its code, methods and signature kept); it matches pruned.onnx on random inputs"
        ]
    swap.unlink(missing_ok=True)
    fx_to_torchscript(gm, inputs, out_path)
    traced = _difference(out_path, pruned_onnx, inputs)
    if traced:
        out_path.unlink(missing_ok=True)
        raise unsupported_model(f"the pruned model could not be written as TorchScript: {traced}")
    names = ", ".join(spec.name for spec in inputs)
    return [
        "TORCHSCRIPT_OUTPUT: pruned.pt is a trace of the pruned graph, not your module's code (swapping the "
        f"pruned tensors into it did not work: {reason}); it takes the inputs ({names}) positionally, "
        "at the shapes it was traced with"
    ]
