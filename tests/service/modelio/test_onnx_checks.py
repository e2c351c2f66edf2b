"""load_onnx_checked: good models load, every kind of bad file is rejected with a clear code."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from prunekit_server.errors import Code, ServiceError
from prunekit_server.model_caps import ModelCaps
from prunekit_server.modelio import OnnxLimits, load_onnx_checked
from tests.samples import write_sample_model


def _tiny_model(
    *, weight: onnx.TensorProto | None = None, opset: int = 17, extra_nodes: int = 0
) -> onnx.ModelProto:
    w = weight if weight is not None else numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"], name="mm")]
    for i in range(extra_nodes):
        nodes.append(helper.make_node("Relu", [f"y{i}"], [f"y{i + 1}"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(f"y{extra_nodes}", TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _reject(path: Path, code: Code, reason: str, limits: OnnxLimits | None = None) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        load_onnx_checked(path, limits or OnnxLimits())
    assert (info.value.code, info.value.reason) == (code, reason), str(info.value)
    assert info.value.message.startswith(path.name), info.value.message
    assert "\n" not in info.value.message
    return info.value


def _invalid(path: Path, limits: OnnxLimits | None = None) -> ServiceError:
    return _reject(path, Code.INVALID_ARGUMENT, "INVALID_MODEL", limits)


def _unsupported(path: Path, limits: OnnxLimits | None = None) -> ServiceError:
    return _reject(path, Code.FAILED_PRECONDITION, "UNSUPPORTED_MODEL", limits)


def _too_large(path: Path, limits: OnnxLimits | None = None) -> ServiceError:
    return _reject(path, Code.RESOURCE_EXHAUSTED, "MODEL_TOO_LARGE", limits)


def test_good_models_load(tmp_path: Path) -> None:
    write_sample_model(tmp_path / "cnn.onnx", "onnx", "cnn", width=8)
    assert len(load_onnx_checked(tmp_path / "cnn.onnx").graph.node) > 5
    assert load_onnx_checked(_save(_tiny_model(), tmp_path / "tiny.onnx")).graph.node[0].op_type == "MatMul"


def test_default_limits_document_domains() -> None:
    limits = OnnxLimits()
    assert limits.max_opset == onnx.defs.onnx_opset_version()
    assert limits.allowed_domains == frozenset({"", "ai.onnx", "ai.onnx.ml"})


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice([3, 50, 2000]))))
    error = _invalid(path)
    assert "model.onnx is not" in error.message


def test_bytes_that_parse_as_an_empty_model(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07")
    assert "no graph" in _invalid(path).message
    path.write_bytes(helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString())
    assert "no nodes" in _invalid(path).message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    assert "empty" in _invalid(path).message


def test_truncated_file(tmp_path: Path) -> None:
    full = tmp_path / "full.onnx"
    write_sample_model(full, "onnx", "mlp")
    data = full.read_bytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(data[: len(data) // 2])
    _invalid(path)


def test_text_format_is_not_accepted(tmp_path: Path) -> None:
    path = tmp_path / "model.onnxtxt"
    path.write_text(str(_tiny_model()))
    _invalid(path)


def test_raw_data_length_lies(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    weight.raw_data = weight.raw_data[:-4]
    assert "needs 48" in _invalid(_save(_tiny_model(weight=weight), tmp_path / "m.onnx")).message


def test_typed_field_count_lies(tmp_path: Path) -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [1.0] * 12)
    del weight.float_data[-1]
    assert "float_data" in _invalid(_save(_tiny_model(weight=weight), tmp_path / "m.onnx")).message


def test_data_in_the_wrong_field(tmp_path: Path) -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [1.0] * 12)
    weight.int64_data.extend([1, 2])
    _invalid(_save(_tiny_model(weight=weight), tmp_path / "m.onnx"))


def test_huge_dims_do_not_overflow(tmp_path: Path) -> None:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**62, 2**62, 4], raw_data=b"")
    error = _too_large(_save(_tiny_model(weight=weight), tmp_path / "m.onnx"))
    assert "too large" in error.message
    assert error.metadata["max_tensor_bytes"] == str(4 << 30)


def test_total_bytes_cap(tmp_path: Path) -> None:
    path = _save(_tiny_model(), tmp_path / "m.onnx")
    error = _too_large(path, OnnxLimits(caps=ModelCaps(memory_bytes=64)))
    assert (error.metadata["max_tensor_bytes"], error.metadata["worker_memory_bytes"]) == ("16", "64")


def test_lying_constant_attribute(tmp_path: Path) -> None:
    value = numpy_helper.from_array(np.ones((2, 2), np.float32))
    value.raw_data = b"\x00" * 3
    model = _tiny_model()
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=value, name="const"))
    assert "const" in _invalid(_save(model, tmp_path / "m.onnx")).message


def _if_model(depth: int, bad: bool = False) -> onnx.ModelProto:
    """An If node nested ``depth`` levels deep; the innermost branch holds an initializer."""
    inner_init = numpy_helper.from_array(np.ones((2,), np.float32), "k")
    if bad:
        inner_init.raw_data = b"\x00"
    body = helper.make_graph(
        [helper.make_node("Identity", ["k"], ["out"])],
        "leaf",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        [inner_init],
    )
    for level in range(depth - 1):
        node = helper.make_node("If", ["cond"], [f"o{level}"], then_branch=body, else_branch=body)
        body = helper.make_graph(
            [node], f"g{level}", [], [helper.make_tensor_value_info(f"o{level}", TensorProto.FLOAT, [2])]
        )
    top = helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body, name="if")
    graph = helper.make_graph(
        [top],
        "main",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_subgraphs_are_walked(tmp_path: Path) -> None:
    assert load_onnx_checked(_save(_if_model(2), tmp_path / "ok.onnx")).graph.node[0].op_type == "If"
    _invalid(_save(_if_model(2, bad=True), tmp_path / "bad.onnx"))


def test_subgraph_depth_cap(tmp_path: Path) -> None:
    path = _save(_if_model(3), tmp_path / "deep.onnx")
    assert "nested" in _unsupported(path, OnnxLimits(max_subgraph_depth=2)).message
    load_onnx_checked(path, OnnxLimits(max_subgraph_depth=3))


@pytest.mark.parametrize("location", ["weights.bin", "../etc/passwd", "/etc/passwd"])
def test_external_data(tmp_path: Path, location: str) -> None:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    error = _unsupported(_save(_tiny_model(weight=weight), tmp_path / "m.onnx"))
    assert "external data" in error.message
    assert location in error.message


def test_unknown_domain_in_opset_import(tmp_path: Path) -> None:
    model = _tiny_model()
    model.opset_import.append(helper.make_opsetid("com.evil", 1))
    error = _unsupported(_save(model, tmp_path / "m.onnx"))
    assert "com.evil" in error.message
    assert error.metadata["domain"] == "com.evil"


def test_unknown_domain_on_a_node(tmp_path: Path) -> None:
    model = _tiny_model()
    model.graph.node.append(helper.make_node("Gelu", ["y0"], ["z"], domain="com.microsoft"))
    assert "com.microsoft" in _unsupported(_save(model, tmp_path / "m.onnx")).message


def test_contrib_domain_can_be_allowed(tmp_path: Path) -> None:
    model = _tiny_model()
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = _save(model, tmp_path / "m.onnx")
    _unsupported(path)
    load_onnx_checked(path, OnnxLimits(allowed_domains=frozenset({"", "ai.onnx", "com.microsoft"})))


@pytest.mark.parametrize("opset", [6, onnx.defs.onnx_opset_version() + 1])
def test_opset_out_of_range(tmp_path: Path, opset: int) -> None:
    error = _unsupported(_save(_tiny_model(opset=opset), tmp_path / "m.onnx"))
    assert f"opset {opset}" in error.message
    assert error.metadata["opset"] == str(opset)


def test_node_count_cap(tmp_path: Path) -> None:
    path = _save(_tiny_model(extra_nodes=3), tmp_path / "m.onnx")
    assert "nodes" in _too_large(path, OnnxLimits(caps=ModelCaps(max_nodes=3))).message
    load_onnx_checked(path, OnnxLimits(caps=ModelCaps(max_nodes=4)))


def test_rank_cap(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones([1] * 9, np.float32), "w")
    assert "rank 9" in _unsupported(_save(_tiny_model(weight=weight), tmp_path / "m.onnx")).message


def test_sparse_initializer(tmp_path: Path) -> None:
    model = _tiny_model()
    values = numpy_helper.from_array(np.ones(1, np.float32), "s")
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "s_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    _unsupported(_save(model, tmp_path / "m.onnx"))


def test_checker_errors_are_invalid_model(tmp_path: Path) -> None:
    model = _tiny_model()
    model.graph.node.append(helper.make_node("NoSuchOp", ["y0"], ["z"]))
    assert "NoSuchOp" in _invalid(_save(model, tmp_path / "m.onnx")).message


def test_missing_file_is_invalid(tmp_path: Path) -> None:
    _invalid(tmp_path / "absent.onnx")
