"""Parity checks against ONNX Runtime and small hand-built ONNX models.

Relative error, as asserted everywhere here: ``max|a - b| / max(max|b|, 1e-6)`` over
each output (``b`` is ONNX Runtime's), the worst output counting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import fx

from prunekit_server.modelio.onnx_to_fx import onnx_to_fx

TOLERANCE = 1e-4


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return 0.0
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-6))


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feeds)]


def run_gm(gm: torch.nn.Module, feeds: dict[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    with torch.no_grad():
        result = gm(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names))
    outputs = result if isinstance(result, tuple | list) else [result]
    return [o.detach().numpy() for o in outputs]


def compare(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    assert len(actual) == len(expected)
    errors = []
    for a, e in zip(actual, expected, strict=True):
        if e.dtype == np.bool_ or np.issubdtype(e.dtype, np.integer):
            np.testing.assert_array_equal(a, e)
            errors.append(0.0)
        else:
            errors.append(rel_error(a, e))
    return max(errors)


def input_names(model: onnx.ModelProto) -> list[str]:
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers]


def assert_parity(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], tolerance: float = TOLERANCE, **kwargs: Any
) -> tuple[fx.GraphModule, float]:
    """Convert ``model``, run both on ``feeds``; return the GraphModule and the relative error."""
    gm = onnx_to_fx(model, **kwargs)
    expected = run_ort(model, feeds)
    actual = run_gm(gm, feeds, input_names(model))
    error = compare(actual, expected)
    assert error < tolerance, f"relative error {error:.3g}"
    return gm, error


_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def graph_model(
    nodes: Sequence[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    outputs: Sequence[str] = ("y",),
    opset: int = 17,
    dynamic_batch: bool = False,
) -> onnx.ModelProto:
    """A model of ``nodes`` whose inputs are ``feeds`` (static shapes) and initializers ``consts``."""
    inputs = []
    for name, array in feeds.items():
        shape: list[Any] = list(array.shape)
        if dynamic_batch and shape:
            shape[0] = "batch"
        inputs.append(helper.make_tensor_value_info(name, _NP_TO_ONNX[array.dtype], shape))
    graph = helper.make_graph(
        list(nodes),
        "test",
        inputs,
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 10
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.value_info}
    known.update({v.name: v for v in inferred.graph.output if v.type.HasField("tensor_type")})
    del model.graph.output[:]
    for name in outputs:
        value = known.get(name)
        model.graph.output.append(value if value is not None else helper.make_empty_tensor_value_info(name))
    return model


def op_parity(
    op_type: str,
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] = ("y",),
    opset: int = 17,
    **attrs: Any,
) -> tuple[fx.GraphModule, float]:
    """One ``op_type`` node over ``inputs`` (default: feeds then consts, in order), checked against ORT."""
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    names = list(inputs) if inputs is not None else [*feeds, *(consts or {})]
    node = helper.make_node(op_type, names, list(outputs), name=f"{op_type.lower()}_node", **attrs)
    model = graph_model([node], feeds, consts, outputs, opset)
    return assert_parity(model, feeds)


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def modules_of(gm: torch.nn.Module, kind: type[torch.nn.Module]) -> list[str]:
    return [name for name, m in gm.named_modules() if type(m) is kind]
