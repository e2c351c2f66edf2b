"""Fuzzing the ONNX intake checks: any bytes give a checked model or a clean refusal.

The refusals: INVALID_MODEL, UNSUPPORTED_MODEL or MODEL_TOO_LARGE.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from hypothesis import example, given
from hypothesis import strategies as st
from onnx import TensorProto, helper

from prunekit_server.errors import Code, ServiceError
from prunekit_server.modelio.onnx_checks import load_onnx_checked

from .strategies import FUZZ


def _base() -> bytes:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["y"], ["z"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


BASE = _base()


def _check(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    error: ServiceError | None = None
    try:
        load_onnx_checked(path)
    except ServiceError as exc:
        error = exc
    if error is not None:
        assert error.reason in ("INVALID_MODEL", "UNSUPPORTED_MODEL", "MODEL_TOO_LARGE"), error
        assert error.code in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.RESOURCE_EXHAUSTED)
        assert "\n" not in error.message


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(tmp_path_factory: object, data: bytes) -> None:
    _check(data, tmp_path_factory.mktemp("fuzz"))  # type: ignore[attr-defined]


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), min_size=1, max_size=8))
@example(edits=[(82, 29)])  # the weight's element type becomes an undefined number
def test_flipped_bytes_of_a_valid_model(tmp_path_factory: object, edits: list[tuple[int, int]]) -> None:
    data = bytearray(BASE)
    for where, value in edits:
        data[where] = value
    _check(bytes(data), tmp_path_factory.mktemp("fuzz"))  # type: ignore[attr-defined]


@FUZZ
@given(st.integers(0, len(BASE)))
def test_truncated_models(tmp_path_factory: object, cut: int) -> None:
    _check(BASE[:cut], tmp_path_factory.mktemp("fuzz"))  # type: ignore[attr-defined]


_OPS = ["Conv", "Relu", "MatMul", "If", "Loop", "Reshape", "Custom", "Gemm", "Softmax", ""]
_DIMS = st.lists(st.one_of(st.integers(-3, 8), st.sampled_from([0, 2**31, 2**62, 10**12])), max_size=10)


@st.composite
def _graphs(draw: st.DrawFn, depth: int = 0) -> onnx.GraphProto:
    nodes = []
    for i in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(_OPS))
        attrs: dict[str, object] = {}
        if op in ("If", "Loop") and depth < 6 and draw(st.booleans()):
            attrs["then_branch" if op == "If" else "body"] = draw(_graphs(depth + 1))
        if draw(st.booleans()):
            attrs["axis"] = draw(st.integers(-(2**63), 2**63 - 1))
        domain = draw(st.sampled_from(["", "ai.onnx", "com.evil", "ai.onnx.ml"]))
        inputs = draw(st.lists(st.sampled_from(["x", "w", "y", "", "missing"]), max_size=3))
        nodes.append(helper.make_node(op or "Identity", inputs, [f"o{depth}_{i}"], domain=domain, **attrs))
    values = [helper.make_tensor_value_info("x", TensorProto.FLOAT, draw(_DIMS))]
    outputs = [helper.make_tensor_value_info(f"o{depth}_0", TensorProto.FLOAT, draw(_DIMS))]
    inits = []
    if draw(st.booleans()):
        dims = draw(st.lists(st.integers(0, 4), max_size=4))
        count = 1
        for d in dims:
            count *= d
        tensor = helper.make_tensor("w", TensorProto.FLOAT, dims, [0.5] * count)
        if draw(st.booleans()):
            tensor.data_location = TensorProto.EXTERNAL
            tensor.external_data.add(
                key="location", value=draw(st.sampled_from(["/etc/passwd", "../x", "w.bin"]))
            )
        inits.append(tensor)
    return helper.make_graph(nodes, f"g{depth}", values, outputs, inits)


@FUZZ
@given(_graphs(), st.integers(-5, 40), st.integers(-5, 12))
def test_structured_models(tmp_path_factory: object, graph: onnx.GraphProto, opset: int, ir: int) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    _check(model.SerializeToString(), tmp_path_factory.mktemp("fuzz"))  # type: ignore[attr-defined]
