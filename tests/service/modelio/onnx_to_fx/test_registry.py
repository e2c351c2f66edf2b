"""The converter table: opset-aware lookup and registration rules."""

from __future__ import annotations

import pytest

from prunekit_server.modelio.onnx_to_fx import supported_ops
from prunekit_server.modelio.onnx_to_fx.registry import converter, lookup


def test_lookup_picks_the_newest_form_not_newer_than_the_opset() -> None:
    assert lookup("Squeeze", 11) is not lookup("Squeeze", 13)
    assert lookup("Squeeze", 13) is lookup("Squeeze", 21)
    assert lookup("ReduceMean", 17) is not lookup("ReduceMean", 18)
    assert lookup("ReduceSum", 13) is lookup("ReduceMean", 18)
    assert lookup("Gelu", 19) is None
    assert lookup("NoSuchOp", 17) is None


def test_supported_ops_lists_the_required_coverage() -> None:
    ops = supported_ops()
    for op in (
        "Conv",
        "ConvTranspose",
        "BatchNormalization",
        "Gemm",
        "MatMul",
        "LayerNormalization",
        "Resize",
        "Split",
        "Slice",
        "Pad",
        "Clip",
        "Shape",
        "Gather",
        "Expand",
        "Where",
        "ConstantOfShape",
        "Range",
    ):
        assert op in ops
    assert ops["Split"] == [1, 13]


def test_registering_the_same_opset_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="already has a converter"):
        converter("Relu")(lambda cx: None)
