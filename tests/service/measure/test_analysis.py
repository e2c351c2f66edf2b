"""analyze / layer_table / count_parameters against hand computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from prunekit.v1 import model_pb2
from prunekit_server.measure import analyze, count_parameters, layer_table
from prunekit_server.modelio import ingest, load_onnx_checked
from prunekit_server.modelio.ingest import graph_inputs
from tests.samples import write_sample_model
from tests.zoo import ZOO, cached

F32 = model_pb2.DATA_TYPE_FLOAT32


def _spec(name: str, shape: list[int]) -> model_pb2.InputSpec:
    return model_pb2.InputSpec(name=name, shape=shape, dtype=F32)


def _cnn_macs(w: int, size: int) -> dict[str, int]:
    """MACs per layer of the sample CNN (width ``w``, ``size`` px, batch 1)."""
    s1, s2, s3 = size * size, (size // 2) ** 2, (size // 4) ** 2
    return {
        "stem": s1 * w * 3 * 9,
        "layer1.conv1": s1 * w * w * 9,
        "layer1.conv2": s1 * w * w * 9,
        "layer2.conv1": s2 * 2 * w * w * 9,
        "layer2.conv2": s2 * 2 * w * 2 * w * 9,
        "layer2.shortcut": s2 * 2 * w * w,
        "layer3.conv1": s3 * 4 * w * 2 * w * 9,
        "layer3.conv2": s3 * 4 * w * 4 * w * 9,
        "layer3.shortcut": s3 * 4 * w * 2 * w,
        "fc": 4 * w * 10,
    }


def test_sample_cnn_macs_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=8, image_size=32)
    model = load_onnx_checked(path)
    layers = layer_table(model, [_spec("input", [2, 3, 32, 32])])
    expected = _cnn_macs(8, 32)
    assert [layer.op_type for layer in layers] == ["Conv"] * 9 + ["Gemm"]
    assert [layer.macs for layer in layers] == [2 * v for v in expected.values()]
    fc = layers[-1]
    assert (fc.name, fc.weight_name, list(fc.weight_shape), fc.parameters) == (
        "/fc/Gemm",
        "fc.weight",
        [10, 32],
        330,
    )
    stem = layers[0]
    assert list(stem.weight_shape) == [8, 3, 3, 3]
    assert stem.parameters == 8 * 27 + 8
    assert stem.weight_name in {t.name for t in model.graph.initializer}


def test_sample_mlp_macs_and_parameters(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    write_sample_model(path, "onnx", "mlp")
    model = load_onnx_checked(path)
    analysis = analyze(
        model, [_spec("input", [3, 64])], source_format=model_pb2.MODEL_FORMAT_ONNX, size_bytes=123
    )
    assert [layer.macs for layer in analysis.layers] == [3 * 64 * 256, 3 * 256 * 256, 3 * 256 * 10]
    assert analysis.macs == 3 * (64 * 256 + 256 * 256 + 256 * 10)
    params = 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert analysis.parameters == params
    assert count_parameters(model) == (params, params)
    assert [layer.weight_name for layer in analysis.layers] == [
        "net.0.weight",
        "net.2.weight",
        "net.4.weight",
    ]
    assert [layer.parameters for layer in analysis.layers] == [64 * 256 + 256, 256 * 256 + 256, 2570]
    assert analysis.format == model_pb2.MODEL_FORMAT_ONNX
    assert analysis.opset == 17
    assert analysis.producer.startswith("pytorch")
    assert analysis.size_bytes == 123
    assert analysis.node_count == 5
    assert [(d.size, d.symbol) for d in analysis.inputs[0].shape] == [(0, "batch"), (64, "")]
    assert analysis.inputs[0].dtype == F32
    assert analysis.outputs[0].name == "logits"
    assert [(d.size, d.symbol) for d in analysis.outputs[0].shape] == [(0, "batch"), (10, "")]
    assert list(analysis.analyzed_inputs[0].shape) == [3, 64]
    assert list(analysis.warnings) == []


def _model(
    nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], output: str, inits: dict[str, np.ndarray]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _x(shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)


def test_grouped_dilated_conv_and_conv_transpose() -> None:
    nodes = [
        helper.make_node(
            "Conv", ["x", "dw"], ["a"], group=4, dilations=[2, 2], pads=[2, 2, 2, 2], strides=[2, 2]
        ),
        helper.make_node("ConvTranspose", ["a", "up", "up_b"], ["y"], group=2, strides=[2, 2], name="up"),
    ]
    inits = {"dw": np.ones((8, 1, 3, 3)), "up": np.ones((8, 3, 2, 2)), "up_b": np.ones(6)}
    model = _model(nodes, [_x(["n", 4, 10, 10])], "y", inits)
    conv, convt = layer_table(model, [_spec("x", [1, 4, 10, 10])])
    assert conv.macs == 8 * 5 * 5 * 1 * 9
    assert (conv.name, conv.weight_name) == ("dw", "dw")
    assert convt.macs == 8 * 5 * 5 * 3 * 4
    assert convt.parameters == 8 * 3 * 4 + 6


def test_gemm_transposes_and_batched_matmul() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], transA=1, transB=1, name="gemm"),
        helper.make_node("Reshape", ["a", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["r_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["r", "r_t"], ["y"], name="bmm"),
    ]
    model = _model(nodes, [_x([5, 4])], "y", {"w": np.ones((6, 5))})
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 12, 1], np.int64), "shape"))
    gemm, bmm = layer_table(model, [_spec("x", [5, 4])])
    assert gemm.macs == 4 * 6 * 5
    assert list(gemm.weight_shape) == [6, 5]
    assert bmm.macs == 2 * 12 * 12 * 1
    assert (bmm.weight_name, list(bmm.weight_shape), bmm.parameters) == ("", [], 0)


def test_weights_through_identity_transpose_and_constant() -> None:
    const = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4), "cval")
    nodes = [
        helper.make_node("Identity", ["shared"], ["shared_alias"]),
        helper.make_node("Transpose", ["shared_alias"], ["w_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w_t"], ["a"]),
        helper.make_node("Add", ["bias", "a"], ["b"]),
        helper.make_node("Constant", [], ["c"], value=const),
        helper.make_node("MatMul", ["c", "b"], ["y"], name="left"),
    ]
    inits = {"shared": np.ones((3, 4)), "bias": np.array([0, 1, 0])}
    model = _model(nodes, [_x(["n", 4])], "y", inits)
    first, second = layer_table(model, [_spec("x", [4, 4])])
    assert (first.name, first.weight_name, list(first.weight_shape)) == ("shared", "shared", [3, 4])
    assert first.parameters == 12 + 3
    assert first.macs == 4 * 3 * 4
    assert (second.name, second.weight_name, list(second.weight_shape)) == ("left", "c", [2, 4])
    assert second.macs == 2 * 3 * 4
    assert count_parameters(model) == (12 + 3 + 8, 12 + 1 + 7)


def test_unknown_shapes_give_zero_and_a_warning() -> None:
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"], name="mm"),
    ]
    model = _model(
        nodes,
        [_x([6]), helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        "y",
        {"w": np.ones((3, 2))},
    )
    analysis = analyze(
        model,
        [_spec("x", [6]), model_pb2.InputSpec(name="shape", shape=[2], dtype=model_pb2.DATA_TYPE_INT64)],
        source_format=model_pb2.MODEL_FORMAT_ONNX,
        size_bytes=1,
    )
    assert analysis.layers[0].macs == 0
    assert analysis.layers[0].parameters == 6
    assert any(w.startswith("MACS_UNKNOWN") and "'mm'" in w for w in analysis.warnings)


def _split_then_conv(op: str = "Split", domain: str = "") -> onnx.ModelProto:
    """``x`` split in two halves along C with sizes computed at run time, a 3x3 Conv on the second."""
    nodes = [
        helper.make_node("Shape", ["x"], ["c"], start=1, end=2),
        helper.make_node("Cast", ["c"], ["c_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["c_f", "two"], ["half_f"]),
        helper.make_node("Cast", ["half_f"], ["half"], to=TensorProto.INT64),
        helper.make_node("Concat", ["half", "half"], ["sizes"], axis=0),
        helper.make_node(op, ["x", "sizes"], ["a", "b"], axis=1, domain=domain),
        helper.make_node("Conv", ["b", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    model = _model(nodes, [_x(["n", 8, 6, 6])], "y", {"w": np.ones((5, 4, 3, 3)), "two": np.array(2.0)})
    model.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, None))
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def test_shapes_inference_misses_are_measured() -> None:
    model = _split_then_conv()
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    (b,) = [v for v in inferred.graph.value_info if v.name == "b"]
    assert not b.type.tensor_type.HasField("shape")  # what the fallback is for
    analysis = analyze(model, [_spec("x", [2, 8, 6, 6])], source_format=1, size_bytes=0)
    (conv,) = analysis.layers
    assert conv.macs == 2 * 5 * 6 * 6 * 4 * 9
    assert analysis.macs == conv.macs
    assert list(analysis.warnings) == []


def test_shapes_neither_inferred_nor_measured_give_zero_and_a_warning() -> None:
    model = _split_then_conv("Mystery", "test.unknown")  # ONNX Runtime cannot load it
    analysis = analyze(model, [_spec("x", [2, 8, 6, 6])], source_format=1, size_bytes=0)
    assert analysis.layers[0].macs == 0
    assert any(w.startswith("MACS_UNKNOWN") and "'conv'" in w for w in analysis.warnings)


def _zoo_analysis(name: str, fmt: str) -> model_pb2.ModelAnalysis:
    model = onnx.load(str(cached(name, fmt)))
    inputs = [
        model_pb2.InputSpec(name=value.name, shape=spec.shape, dtype=spec.dtype)
        for value, spec in zip(graph_inputs(model), ZOO[name].inputs, strict=True)
    ]
    return analyze(model, inputs, source_format=model_pb2.MODEL_FORMAT_ONNX, size_bytes=0)


def test_shufflenet_legacy_export_macs_match_dynamo_and_hand() -> None:
    legacy = _zoo_analysis("shufflenet", "legacy")
    dynamo = _zoo_analysis("shufflenet", "dynamo")
    px16, px8 = 2 * 16 * 16, 2 * 8 * 8  # batch 2 at 16x16 and 8x8
    by_hand = sum(
        [
            px16 * 16 * 27,  # stem 3->16, stride 2
            px8 * 16 * 9 + px8 * 16 * 16,  # down.left: depthwise stride 2, 1x1 16->16
            px16 * 16 * 16 + px8 * 16 * 9 + px8 * 16 * 16,  # down.right: 1x1, depthwise stride 2, 1x1
            px8 * 16 * 16 + px8 * 16 * 9 + px8 * 16 * 16,  # unit.branch on 16 of the 32 channels
            px8 * 64 * 32,  # last 32->64
            2 * 10 * 64,  # fc
        ]
    )
    assert by_hand == 802_048
    assert legacy.macs == dynamo.macs == by_hand
    assert [layer.macs for layer in legacy.layers] == [layer.macs for layer in dynamo.layers]
    assert not [w for w in legacy.warnings if w.startswith("MACS_UNKNOWN")]


class _Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 6)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.proj(x))
        return out


def test_torchscript_export_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "seq.pt"
    torch.jit.save(torch.jit.trace(_Seq().eval(), torch.randn(2, 3, 8)), str(path))  # type: ignore[no-untyped-call]
    result = ingest(path, model_pb2.MODEL_FORMAT_TORCHSCRIPT, [_spec("x", [2, 3, 8])], tmp_path / "w")
    analysis = analyze(
        result.onnx_model, result.inputs, source_format=result.source_format, size_bytes=path.stat().st_size
    )
    (layer,) = analysis.layers
    assert (layer.op_type, layer.weight_name, list(layer.weight_shape)) == ("MatMul", "proj.weight", [6, 8])
    assert layer.parameters == 48 + 6
    assert layer.macs == 2 * 3 * 6 * 8
    assert analysis.parameters == 48 + 6 + 4 * 3
    assert analysis.format == model_pb2.MODEL_FORMAT_TORCHSCRIPT


@pytest.mark.parametrize("batch", [1, 4])
def test_macs_scale_with_batch(tmp_path: Path, batch: int) -> None:
    path = tmp_path / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=8, image_size=16)
    model = load_onnx_checked(path)
    one = sum(_cnn_macs(8, 16).values())
    analysis = analyze(model, [_spec("input", [batch, 3, 16, 16])], source_format=1, size_bytes=0)
    assert analysis.macs == batch * one
