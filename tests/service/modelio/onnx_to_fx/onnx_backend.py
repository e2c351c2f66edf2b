"""ONNX's own backend test models (shipped in the ``onnx`` package) through the converter.

Every case of ``onnx/backend/test/data`` {pytorch-converted, pytorch-operator,
simple, light} is converted at an opset the service accepts (older ones raised
with ``onnx.version_converter``), run on the case's inputs and compared with its
expected outputs. ``light`` cases ship only the model and its outputs: their input
is the runner's deterministic one (``arange / n``, as ``onnx``'s runner makes it).
"""

from __future__ import annotations

import collections
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
import torch
from onnx import numpy_helper

from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.modelio.ingest import data_type_from_onnx
from prunekit_server.modelio.onnx_to_fx import UnsupportedOp, model_opset, onnx_to_fx

SUITES = ("pytorch-converted", "pytorch-operator", "simple", "light")
MIN_OPSET = 7
UPGRADE_TO = 13
RTOL, ATOL = 1e-3, 1e-5


@dataclass
class Counts:
    matching: list[str] = field(default_factory=list)
    wrong: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """Case -> the reason (``op <type>`` for an op the converter does not take)."""

    def by_reason(self) -> collections.Counter[str]:
        return collections.Counter(self.refused.values())

    def summary(self) -> str:
        reasons = ", ".join(
            f"{r}: {n}" for r, n in sorted(self.by_reason().items(), key=lambda i: (-i[1], i[0]))
        )
        total = len(self.matching) + len(self.wrong) + len(self.refused)
        return (
            f"{total} cases: {len(self.matching)} converted and matching, {len(self.wrong)} wrong, "
            f"{len(self.refused)} refused ({reasons})"
        )


def data_root() -> Path:
    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"


def cases() -> list[Path]:
    """The model file of every case (``<case>/model.onnx``, or ``light/<name>.onnx``)."""
    root = data_root()
    found: list[Path] = []
    for suite in SUITES:
        if suite == "light":
            found += sorted((root / suite).glob("*.onnx"))
        else:
            found += sorted(Path(p) for p in glob.glob(str(root / suite / "*" / "model.onnx")))
    return found


def _arrays(paths: list[str]) -> list[np.ndarray]:
    arrays = []
    for path in paths:
        tensor = onnx.TensorProto()
        tensor.ParseFromString(Path(path).read_bytes())
        arrays.append(numpy_helper.to_array(tensor))
    return arrays


def _inputs_outputs(path: Path, model: onnx.ModelProto) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if path.name != "model.onnx":  # light: the runner's deterministic input, the stored output
        graph_inputs = [
            i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
        ]
        inputs = []
        for value in graph_inputs:
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim
            )
            n = int(np.prod(shape))
            inputs.append((np.arange(n).reshape(shape) / n).astype(np.float32))
        return inputs, _arrays([str(path.with_name(path.stem + "_output_0.pb"))])
    data = path.parent / "test_data_set_0"
    inputs = _arrays(sorted(glob.glob(str(data / "input_*.pb")), key=_index))
    return inputs, _arrays(sorted(glob.glob(str(data / "output_*.pb")), key=_index))


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _index(path: str) -> int:
    return int(Path(path).stem.rsplit("_", 1)[1])


def case_name(path: Path) -> str:
    return path.parent.name if path.name == "model.onnx" else path.stem


def run_case(path: Path) -> tuple[str, str]:
    """(``matching`` | ``wrong`` | ``refused``, detail) for one case."""
    model = onnx.load(str(path))
    inputs, expected = _inputs_outputs(path, model)
    if model_opset(model) < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, UPGRADE_TO)
        except Exception as exc:
            return "refused", f"opset upgrade failed ({type(exc).__name__})"
    specs = [
        model_pb2.InputSpec(
            name=value.name,
            shape=list(array.shape),
            dtype=data_type_from_onnx(value.type.tensor_type.elem_type),
        )
        for value, array in zip(_graph_inputs(model), inputs, strict=True)
    ]
    try:
        gm = onnx_to_fx(model, inputs=specs)
    except UnsupportedOp as exc:
        return "refused", f"op {exc.metadata['op_type']}"
    except ServiceError as exc:
        return "refused", f"{exc.reason}: {exc.message[:80]}"
    try:
        with torch.no_grad():
            result = gm(*(torch.from_numpy(np.asarray(a, order="C")) for a in inputs))
    except Exception as exc:
        return "wrong", f"fails at run time: {type(exc).__name__}: {str(exc)[:120]}"
    outputs = list(result) if isinstance(result, tuple | list) else [result]
    if len(outputs) != len(expected):
        return "wrong", f"{len(outputs)} outputs, expected {len(expected)}"
    for got, want in zip(outputs, expected, strict=True):
        actual = np.asarray(got.detach().numpy() if isinstance(got, torch.Tensor) else got)
        if actual.shape != want.shape or not np.allclose(actual, want, rtol=RTOL, atol=ATOL, equal_nan=True):
            return "wrong", f"output differs (shape {actual.shape} vs {want.shape})"
    return "matching", ""


def run_all() -> Counts:
    counts = Counts()
    for path in cases():
        outcome, detail = run_case(path)
        if outcome == "matching":
            counts.matching.append(case_name(path))
        elif outcome == "wrong":
            counts.wrong[case_name(path)] = detail
        else:
            counts.refused[case_name(path)] = detail
    return counts
