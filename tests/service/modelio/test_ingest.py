"""ingest: ONNX and TorchScript intake and the resolution of input shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from prunekit.v1 import model_pb2
from prunekit_server.errors import Code, ServiceError
from prunekit_server.modelio import data_type_from_onnx, data_type_to_onnx, ingest
from tests.samples import write_sample_model

ONNX = model_pb2.MODEL_FORMAT_ONNX
TORCHSCRIPT = model_pb2.MODEL_FORMAT_TORCHSCRIPT
F32 = model_pb2.DATA_TYPE_FLOAT32


def _spec(name: str, shape: list[int], dtype: int = model_pb2.DATA_TYPE_UNSPECIFIED) -> model_pb2.InputSpec:
    return model_pb2.InputSpec(name=name, shape=shape, dtype=dtype)  # type: ignore[arg-type]


def _shapes(specs: list[model_pb2.InputSpec]) -> dict[str, list[int]]:
    return {s.name: list(s.shape) for s in specs}


def _spec_error(call: object) -> ServiceError:
    assert callable(call)
    with pytest.raises(ServiceError) as info:
        call()
    assert (info.value.code, info.value.reason) == (Code.INVALID_ARGUMENT, "INVALID_SPEC"), str(info.value)
    return info.value


@pytest.fixture
def cnn_onnx(tmp_path: Path) -> Path:
    write_sample_model(tmp_path / "cnn.onnx", "onnx", "cnn", width=8, image_size=16)
    return tmp_path / "cnn.onnx"


def _two_input_model(path: Path) -> Path:
    """Inputs ``tokens`` [N, "seq"] int64 and ``mask`` [N, 4] float; output their sum-ish."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["t"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["t"], ["s"], keepdims=1),
            helper.make_node("Add", ["s", "mask"], ["y"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnx_defaults_to_static_dims_and_batch(cnn_onnx: Path, tmp_path: Path) -> None:
    result = ingest(cnn_onnx, ONNX, [], tmp_path / "work")
    assert result.onnx_path == cnn_onnx
    assert result.source_path == cnn_onnx
    assert result.source_format == ONNX
    assert [(s.name, list(s.shape), s.dtype) for s in result.inputs] == [("input", [1, 3, 16, 16], F32)]
    assert result.warnings == []
    assert _shapes(ingest(cnn_onnx, ONNX, [], tmp_path / "w2", batch_size=4).inputs) == {
        "input": [4, 3, 16, 16]
    }


def test_declared_shape_overrides(cnn_onnx: Path, tmp_path: Path) -> None:
    result = ingest(cnn_onnx, ONNX, [_spec("input", [2, 3, 16, 16], F32)], tmp_path)
    assert _shapes(result.inputs) == {"input": [2, 3, 16, 16]}


def test_declared_name_unknown(cnn_onnx: Path, tmp_path: Path) -> None:
    error = _spec_error(lambda: ingest(cnn_onnx, ONNX, [_spec("image", [1, 3, 16, 16])], tmp_path))
    assert error.violations[0].field == "spec.inputs[0].name"
    assert "'image'" in error.violations[0].description
    assert "its inputs are: input" in error.violations[0].description


def test_declared_shape_contradicts_graph(cnn_onnx: Path, tmp_path: Path) -> None:
    error = _spec_error(
        lambda: ingest(cnn_onnx, ONNX, [_spec("input", [1, 4, 16, 16], model_pb2.DATA_TYPE_INT64)], tmp_path)
    )
    fields = sorted(v.field for v in error.violations)
    assert fields == ["spec.inputs[0].dtype", "spec.inputs[0].shape"]
    assert "dim 1: model 3, declared 4" in error.message
    error = _spec_error(lambda: ingest(cnn_onnx, ONNX, [_spec("input", [1, 3, 16])], tmp_path))
    assert "rank 4" in error.message


def test_declared_dims_must_be_positive(cnn_onnx: Path, tmp_path: Path) -> None:
    _spec_error(lambda: ingest(cnn_onnx, ONNX, [_spec("input", [0, 3, 16, 16])], tmp_path))


def test_symbolic_inner_dim_needs_declaration(tmp_path: Path) -> None:
    path = _two_input_model(tmp_path / "two.onnx")
    error = _spec_error(lambda: ingest(path, ONNX, [], tmp_path))
    assert [v.field for v in error.violations] == ["spec.inputs"]
    assert "'tokens'" in error.message
    assert "1 (seq)" in error.message
    assert "declare its shape" in error.message
    result = ingest(path, ONNX, [_spec("tokens", [2, 7])], tmp_path)
    assert _shapes(result.inputs) == {"tokens": [2, 7], "mask": [1, 4]}
    assert [s.dtype for s in result.inputs] == [model_pb2.DATA_TYPE_INT64, F32]


def test_every_violation_is_reported(tmp_path: Path) -> None:
    path = _two_input_model(tmp_path / "two.onnx")
    error = _spec_error(lambda: ingest(path, ONNX, [_spec("nope", [1]), _spec("mask", [1, 5])], tmp_path))
    assert sorted(v.field for v in error.violations) == [
        "spec.inputs",
        "spec.inputs[0].name",
        "spec.inputs[1].shape",
    ]


def test_initializers_listed_as_inputs_are_not_inputs(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])],
        [weight],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    assert _shapes(ingest(path, ONNX, [], tmp_path).inputs) == {"x": [1, 4]}


def test_local_functions_are_inlined(tmp_path: Path) -> None:
    double = helper.make_function(
        "local",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("Double", ["x"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[double],
    )
    path = tmp_path / "f.onnx"
    onnx.save(model, str(path))
    result = ingest(path, ONNX, [], tmp_path / "work")
    assert result.onnx_path == tmp_path / "work" / "model.inlined.onnx"
    assert [n.op_type for n in result.onnx_model.graph.node] == ["Add"]
    assert result.warnings[0].startswith("FUNCTIONS_INLINED")


def test_torchscript_requires_inputs(tmp_path: Path) -> None:
    write_sample_model(tmp_path / "mlp.pt", "torchscript", "mlp")
    error = _spec_error(lambda: ingest(tmp_path / "mlp.pt", TORCHSCRIPT, [], tmp_path / "work"))
    assert "inputs are required for TorchScript models" in error.message
    assert error.violations[0].field == "spec.inputs"


def test_torchscript_is_exported_into_workdir(tmp_path: Path) -> None:
    write_sample_model(tmp_path / "mlp.pt", "torchscript", "mlp")
    result = ingest(tmp_path / "mlp.pt", TORCHSCRIPT, [_spec("", [3, 64])], tmp_path / "work")
    assert result.onnx_path == tmp_path / "work" / "model.onnx"
    assert result.source_path == tmp_path / "mlp.pt"
    assert result.source_format == TORCHSCRIPT
    assert [(s.name, list(s.shape), s.dtype) for s in result.inputs] == [("x", [3, 64], F32)]
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    x = np.ones((5, 64), np.float32)
    with torch.no_grad():
        expected = torch.jit.load(str(tmp_path / "mlp.pt"))(torch.from_numpy(x)).numpy()  # type: ignore[no-untyped-call]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)


def test_torchscript_input_count_is_checked(tmp_path: Path) -> None:
    write_sample_model(tmp_path / "mlp.pt", "torchscript", "mlp")
    specs = [_spec("a", [1, 64]), _spec("b", [1, 64])]
    error = _spec_error(lambda: ingest(tmp_path / "mlp.pt", TORCHSCRIPT, specs, tmp_path / "work"))
    assert "2 input(s) declared" in error.message


def test_torchscript_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(ServiceError) as info:
        ingest(path, TORCHSCRIPT, [_spec("x", [1, 2])], tmp_path / "work")
    assert info.value.reason == "INVALID_MODEL"


@pytest.mark.parametrize("fmt", [model_pb2.MODEL_FORMAT_UNSPECIFIED, 42])
def test_unsupported_format(cnn_onnx: Path, tmp_path: Path, fmt: int) -> None:
    with pytest.raises(ServiceError) as info:
        ingest(cnn_onnx, fmt, [], tmp_path)
    assert (info.value.code, info.value.reason) == (Code.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_bad_onnx_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x01\x02\x03 definitely not onnx")
    with pytest.raises(ServiceError) as info:
        ingest(path, ONNX, [], tmp_path)
    assert info.value.reason == "INVALID_MODEL"
    assert info.value.message.startswith("model.onnx is not an ONNX model")


def test_non_tensor_input_is_unsupported(tmp_path: Path) -> None:
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, [2])
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["xs"], ["n"])],
        "g",
        [seq],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ServiceError) as info:
        ingest(path, ONNX, [], tmp_path)
    assert info.value.reason == "UNSUPPORTED_MODEL"


def test_data_type_mapping_round_trips() -> None:
    for dtype in model_pb2.DataType.values():
        if dtype != model_pb2.DATA_TYPE_UNSPECIFIED:
            assert data_type_from_onnx(data_type_to_onnx(dtype)) == dtype
    assert data_type_to_onnx(model_pb2.DATA_TYPE_UNSPECIFIED) == TensorProto.FLOAT
    assert data_type_from_onnx(TensorProto.STRING) == model_pb2.DATA_TYPE_UNSPECIFIED
