"""Module and tensor names derived from ONNX names: sanitised, unique, nested where possible."""

from __future__ import annotations

from onnx import helper

from prunekit_server.modelio.onnx_to_fx.naming import (
    Namespace,
    identifier,
    node_scope,
    sanitize_path,
    weight_scope,
)


def test_weight_scope() -> None:
    assert weight_scope("layer1.0.conv1.weight") == "layer1.0.conv1"
    assert weight_scope("fc.bias") == "fc"
    assert weight_scope("onnx::Conv_12") is None
    assert weight_scope("val_3") is None
    assert weight_scope(None) is None


def test_node_scope_from_exporter_names_and_metadata() -> None:
    assert (
        node_scope(helper.make_node("Conv", [], [], name="/layer1/layer1.0/conv1/Conv")) == "layer1.0.conv1"
    )
    assert node_scope(helper.make_node("MatMul", [], [], name="/q/MatMul")) == "q"
    assert node_scope(helper.make_node("Relu", [], [], name="relu_1")) is None
    node = helper.make_node("MatMul", [], [], name="node_MatMul_1")
    helper.set_metadata_props(node, {"pkg.torch.onnx.name_scopes": "['', 'attn', 'q', 'linear']"})
    assert node_scope(node) == "attn.q"


def test_sanitize_path() -> None:
    assert sanitize_path("layer1.0.conv-1") == "layer1.0.conv_1"
    assert sanitize_path("onnx::Mul_3") == "onnx_Mul_3"
    assert sanitize_path("graph.weight") == "graph_.weight"
    assert sanitize_path("...") == ""
    assert sanitize_path("class.if.0") == "class_.if_.0"


def test_identifier_is_a_forward_argument() -> None:
    assert identifier("0") == "input_0"
    assert identifier("in.put:0") == "in_put_0"
    assert identifier("class") == "class_"
    assert identifier("self") == "self_"
    assert identifier("torch") == "torch_"
    assert identifier("::") == "input"
    assert identifier("image") == "image"


def test_namespace_is_unique_and_never_nests_under_a_leaf() -> None:
    names = Namespace()
    assert names.claim("layer1.conv") == "layer1.conv"
    assert names.claim("layer1.conv") == "layer1.conv_1"
    assert names.claim("layer1.conv.extra") == "layer1_conv_extra"
    assert names.claim("layer1") == "layer1_1"
    assert names.claim("", "relu") == "relu"
