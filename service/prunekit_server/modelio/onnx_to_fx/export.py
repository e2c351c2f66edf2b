"""The way back: a (pruned) GraphModule to ONNX or TorchScript.

Both trace the module in eval mode on random inputs of the given shapes (the
module's mode is restored afterwards). ONNX export uses the legacy exporter
(``dynamo=False``) without constant folding, so BatchNorm stays a node of its own
and weights keep their module paths as initializer names; inputs and outputs are
named as in the ONNX model the GraphModule was converted from
(``gm.meta["prunekit_input_names"]`` / ``["prunekit_output_names"]``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import fx

from prunekit.v1 import model_pb2

from ...errors import unsupported_model
from ..torchscript import random_input


@contextmanager
def _eval_mode(gm: fx.GraphModule) -> Iterator[None]:
    was_training = gm.training
    gm.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        gm.train(was_training)


def _sample(inputs: Sequence[model_pb2.InputSpec]) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    return tuple(random_input(spec, generator) for spec in inputs)


def _names(gm: fx.GraphModule, key: str, count: int, default: list[str]) -> list[str]:
    names = gm.meta.get(key)
    if isinstance(names, list) and len(names) == count and all(isinstance(n, str) and n for n in names):
        return list(names)
    return default


def fx_to_onnx(
    gm: fx.GraphModule,
    inputs: Sequence[model_pb2.InputSpec],
    out_path: Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Export ``gm`` to ``out_path`` and return the written model.

    ``dynamic_batch`` makes dimension 0 of every input and output symbolic
    (``batch``). An export failure is UNSUPPORTED_MODEL with the exporter's message.
    """
    args = _sample(inputs)
    with torch.no_grad(), _eval_mode(gm):
        result = gm(*args)
    outputs = list(result) if isinstance(result, tuple | list) else [result]
    input_names = _names(gm, "prunekit_input_names", len(args), [spec.name for spec in inputs])
    default_outputs = ["output"] if len(outputs) == 1 else [f"output_{k}" for k in range(len(outputs))]
    output_names = _names(gm, "prunekit_output_names", len(outputs), default_outputs)
    # TorchScript rejects purely numeric value names ("15", what exporters name unnamed outputs):
    # export under stand-ins, then give the graph its names back
    wanted = input_names + output_names
    stand_ins = {f"prunekit_io_{k}": name for k, name in enumerate(wanted) if name.isdigit()}
    back = {name: stand for stand, name in stand_ins.items()}
    input_names = [back.get(n, n) for n in input_names]
    output_names = [back.get(n, n) for n in output_names]
    dynamic_axes: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        for name, tensor in zip(input_names + output_names, [*args, *outputs], strict=True):
            if isinstance(tensor, torch.Tensor) and tensor.dim() > 0:
                dynamic_axes[name] = {0: "batch"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _eval_mode(gm):
            torch.onnx.export(
                gm,
                args,
                str(out_path),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=False,
                training=torch.onnx.TrainingMode.EVAL,
                export_params=True,
                keep_initializers_as_inputs=False,
            )
    except Exception as exc:
        message = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise unsupported_model(
            f"the converted model could not be exported to ONNX: {message[:300]}"
        ) from exc
    model = onnx.load(str(out_path), load_external_data=False)
    kept = _keep_inputs(model.graph, input_names, args, dynamic_axes)
    if stand_ins:
        _rename_values(model.graph, stand_ins)
    if stand_ins or kept:
        onnx.save(model, str(out_path))
    return model


def _keep_inputs(
    graph: onnx.GraphProto,
    names: Sequence[str],
    args: Sequence[torch.Tensor],
    dynamic_axes: dict[str, dict[int, str]],
) -> int:
    """Declare again, in order, the inputs the exporter dropped because nothing reads them any more
    (a fixed ``value`` folded into the graph): the model keeps its interface. Returns how many."""
    present = {value.name for value in graph.input}
    kept = 0
    for position, (name, tensor) in enumerate(zip(names, args, strict=True)):
        if name in present:
            continue
        shape: list[int | str] = list(tensor.shape)
        for axis, symbol in dynamic_axes.get(name, {}).items():
            shape[axis] = symbol
        elem_type = onnx.helper.np_dtype_to_tensor_dtype(tensor.numpy().dtype)
        graph.input.insert(position, onnx.helper.make_tensor_value_info(name, elem_type, shape))
        kept += 1
    return kept


def _rename_values(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename values of ``graph`` (inputs, outputs, node inputs and outputs) by ``names``."""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def fx_to_torchscript(gm: fx.GraphModule, inputs: Sequence[model_pb2.InputSpec], out_path: Path) -> None:
    """Trace ``gm`` (eval mode) on random inputs of ``inputs``' shapes and save it to ``out_path``."""
    args = _sample(inputs)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), _eval_mode(gm):
            traced = torch.jit.trace(gm, args, check_trace=False)  # type: ignore[no-untyped-call]
    except Exception as exc:
        message = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise unsupported_model(f"the converted model could not be traced: {message[:300]}") from exc
    torch.jit.save(traced, str(out_path))
