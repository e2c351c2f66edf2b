"""Resize, Upsample, Pad, DepthToSpace and SpaceToDepth against ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from onnx import helper

from prunekit_server.errors import Code, ServiceError
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx

from .helpers import assert_parity, graph_model, ints, op_parity, randn

X = randn(2, 3, 6, 5)
EMPTY = np.zeros(0, dtype=np.float32)


def _scales(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


@pytest.mark.parametrize(
    ("mode", "ctm", "nearest", "scales"),
    [
        ("nearest", "asymmetric", "floor", (1, 1, 2, 2)),
        ("nearest", "half_pixel", "round_prefer_floor", (1, 1, 2, 3)),
        ("nearest", "half_pixel", "round_prefer_ceil", (1, 1, 0.5, 0.6)),
        ("nearest", "align_corners", "round_prefer_floor", (1, 1, 1.5, 2)),
        ("nearest", "tf_half_pixel_for_nn", "ceil", (1, 1, 2, 2)),
        ("nearest", "pytorch_half_pixel", "floor", (1, 1, 3, 0.5)),
        ("linear", "half_pixel", "", (1, 1, 2, 2)),
        ("linear", "pytorch_half_pixel", "", (1, 1, 0.5, 1.5)),
        ("linear", "align_corners", "", (1, 1, 2, 3)),
        ("cubic", "half_pixel", "", (1, 1, 2, 2)),
        ("cubic", "align_corners", "", (1, 1, 1.5, 2)),
    ],
)
def test_resize_with_scales(mode: str, ctm: str, nearest: str, scales: tuple[float, ...]) -> None:
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": ctm}
    if nearest:
        attrs["nearest_mode"] = nearest
    op_parity("Resize", {"x": X}, {"roi": EMPTY, "scales": _scales(*scales)}, opset=13, **attrs)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_with_sizes_and_axes(mode: str) -> None:
    op_parity("Resize", {"x": X}, {"sizes": ints(2, 3, 9, 10)}, inputs=["x", "", "", "sizes"], mode=mode)
    op_parity(
        "Resize",
        {"x": X},
        {"sizes": ints(12, 3)},
        inputs=["x", "", "", "sizes"],
        opset=18,
        mode=mode,
        axes=[2, 3],
    )
    op_parity(
        "Resize",
        {"x": X},
        {"scales": _scales(2, 2)},
        inputs=["x", "", "scales"],
        opset=18,
        mode=mode,
        axes=[2, 3],
    )


def test_resize_opset_10_and_upsample_opset_9() -> None:
    op_parity("Resize", {"x": X}, {"scales": _scales(1, 1, 2, 3)}, opset=10)
    op_parity("Upsample", {"x": X}, {"scales": _scales(1, 1, 2, 2)}, opset=9)
    op_parity("Upsample", {"x": X}, opset=7, scales=[1.0, 1.0, 3.0, 2.0])


def test_resize_sizes_computed_from_the_input_shape() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
    ]
    model = graph_model(nodes, {"x": X}, {"zero": ints(0), "two": ints(2), "hw": ints(12, 10)}, opset=13)
    assert_parity(model, {"x": X})


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, "asymmetric"),
        ({"mode": "cubic", "cubic_coeff_a": -0.5}, "cubic_coeff_a"),
        ({"mode": "linear", "antialias": 1}, "antialias"),
        ({"mode": "nearest", "coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
    ],
)
def test_unsupported_resize_modes_fail_by_name(attrs: dict[str, Any], match: str) -> None:
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)
    model = graph_model([node], {"x": X}, {"scales": _scales(1, 1, 0.5, 0.5)}, opset=18)
    with pytest.raises(ServiceError, match=match) as info:
        onnx_to_fx(model)
    assert info.value.code == Code.FAILED_PRECONDITION
    assert info.value.metadata["node"] == "up"


@pytest.mark.parametrize(
    ("mode", "pads"),
    [
        ("constant", (0, 1, 2, 0, 0, 0, 1, 3)),
        ("constant", (0, 0, -1, 1, 0, 0, 1, -2)),
        ("constant", (1, 0, 0, 0, 0, 1, 0, 0)),
        ("reflect", (0, 0, 2, 1, 0, 0, 1, 3)),
        ("edge", (0, 0, 0, 1, 0, 0, 0, 2)),
        ("edge", (0, 1, 1, 0, 0, 2, 0, 1)),
        ("wrap", (0, 0, 1, 2, 0, 0, 2, 1)),
    ],
)
def test_pad(mode: str, pads: tuple[int, ...]) -> None:
    consts: dict[str, np.ndarray] = {"pads": ints(*pads)}
    if mode == "constant":
        consts["value"] = np.float32(0.5)
    op_parity("Pad", {"x": X}, consts, opset=19, mode=mode)


def test_pad_attribute_form_and_axes_input() -> None:
    op_parity("Pad", {"x": X}, opset=2, pads=[0, 0, 1, 1, 0, 0, 2, 0], value=-1.0)
    op_parity(
        "Pad", {"x": X}, {"pads": ints(1, 2, 3, 0), "value": np.float32(0), "axes": ints(2, -1)}, opset=18
    )


def test_pad_to_a_window_multiple_with_pads_computed_from_the_sizes() -> None:
    """Swin's ``F.pad`` as torch's legacy exporter writes it: ``(window - size) mod window`` from the
    input's shape, torch's last-axis-first pairs reshaped to 2-D, reversed, transposed, flattened."""
    x = randn(1, 5, 6, 3)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i1"], ["h"], axis=0),
        helper.make_node("Gather", ["s", "i2"], ["w"], axis=0),
        helper.make_node("Sub", ["window", "h"], ["h_short"]),
        helper.make_node("Mod", ["h_short", "window"], ["ph"]),
        helper.make_node("Sub", ["window", "w"], ["w_short"]),
        helper.make_node("Mod", ["w_short", "window"], ["pw"]),
        helper.make_node("Unsqueeze", ["ph", "axes"], ["ph1"]),
        helper.make_node("Unsqueeze", ["pw", "axes"], ["pw1"]),
        helper.make_node("Concat", ["zeros2", "zero", "pw1", "zero", "ph1", "zeros2"], ["pairs_"], axis=0),
        helper.make_node("Reshape", ["pairs_", "pairs"], ["paired"]),
        helper.make_node("Slice", ["paired", "start", "end", "axes", "back"], ["ordered"]),
        helper.make_node("Transpose", ["ordered"], ["split"], perm=[1, 0]),
        helper.make_node("Reshape", ["split", "flat"], ["flat_pads"]),
        helper.make_node("Cast", ["flat_pads"], ["pads"], to=7),
        helper.make_node("Pad", ["x", "pads"], ["y"]),
    ]
    consts = {
        "i1": np.int64(1),
        "i2": np.int64(2),
        "window": np.int64(4),
        "axes": ints(0),
        "zero": ints(0),
        "zeros2": ints(0, 0),
        "pairs": ints(-1, 2),
        "start": ints(-1),
        "end": ints(-(2**62)),
        "back": ints(-1),
        "flat": ints(-1),
    }
    gm, _ = assert_parity(graph_model(nodes, {"x": x}, consts, opset=17, dynamic_batch=True), {"x": x})
    out = gm(torch.from_numpy(x))
    assert tuple(out.shape) == (1, 8, 8, 3)


def test_depth_to_space_and_space_to_depth() -> None:
    x = randn(2, 8, 3, 4)
    op_parity("DepthToSpace", {"x": x}, blocksize=2, mode="DCR")
    op_parity("DepthToSpace", {"x": x}, blocksize=2, mode="CRD")
    op_parity("SpaceToDepth", {"x": randn(2, 3, 4, 6)}, blocksize=2)
