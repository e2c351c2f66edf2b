"""Convolution, normalisation and pooling converters against ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from torch import nn

from .helpers import modules_of, op_parity, randn

X = randn(2, 4, 9, 8)


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"pads": [0, 1, 2, 1]},
        {"dilations": [2, 1], "pads": [2, 1, 2, 1]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER", "strides": [2, 3]},
        {"auto_pad": "VALID"},
    ],
)
def test_conv2d(attrs: dict[str, Any]) -> None:
    gm, _ = op_parity("Conv", {"x": X}, {"w": randn(6, 4, 3, 3, seed=1), "b": randn(6, seed=2)}, **attrs)
    assert modules_of(gm, nn.Conv2d)


@pytest.mark.parametrize(("groups", "cout"), [(2, 6), (4, 4), (4, 8)])
def test_grouped_and_depthwise_conv(groups: int, cout: int) -> None:
    w = randn(cout, 4 // groups, 3, 3, seed=3)
    op_parity("Conv", {"x": X}, {"w": w}, group=groups, pads=[1, 1, 1, 1])


def test_conv1d_conv3d_and_graph_weights() -> None:
    gm, _ = op_parity("Conv", {"x": randn(2, 3, 10)}, {"w": randn(5, 3, 3, seed=1)}, pads=[2, 0])
    assert modules_of(gm, nn.Conv1d)
    gm, _ = op_parity(
        "Conv", {"x": randn(1, 2, 4, 5, 6)}, {"w": randn(3, 2, 2, 3, 2, seed=1)}, strides=[1, 2, 1]
    )
    assert modules_of(gm, nn.Conv3d)
    gm, _ = op_parity("Conv", {"x": X, "w": randn(3, 4, 1, 1, seed=5)})
    assert not modules_of(gm, nn.Conv2d)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2]},
        {"strides": [2, 2], "output_padding": [1, 0], "pads": [1, 1, 1, 1]},
        {"strides": [2, 2], "pads": [0, 1, 2, 0]},
        {"strides": [3, 2], "group": 2, "dilations": [1, 2]},
        {"strides": [2, 2], "output_shape": [18, 17]},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
    ],
)
def test_conv_transpose(attrs: dict[str, Any]) -> None:
    groups = int(attrs.get("group", 1))
    w = randn(4, 6 // groups, 3, 3, seed=1)
    gm, _ = op_parity("ConvTranspose", {"x": X}, {"w": w, "b": randn(6, seed=2)}, **attrs)
    assert modules_of(gm, nn.ConvTranspose2d)


def test_conv_transpose_1d() -> None:
    gm, _ = op_parity("ConvTranspose", {"x": randn(2, 3, 7)}, {"w": randn(3, 2, 4, seed=1)}, strides=[2])
    assert modules_of(gm, nn.ConvTranspose1d)


@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        ((2, 4), nn.BatchNorm1d),
        ((2, 4, 7), nn.BatchNorm1d),
        ((2, 4, 3, 5), nn.BatchNorm2d),
        ((2, 4, 2, 3, 2), nn.BatchNorm3d),
    ],
)
def test_batch_norm(shape: tuple[int, ...], kind: type[nn.Module]) -> None:
    stats = {
        "scale": randn(4, seed=1),
        "bias": randn(4, seed=2),
        "mean": randn(4, seed=3),
        "var": np.abs(randn(4, seed=4)) + 0.5,
    }
    gm, _ = op_parity("BatchNormalization", {"x": randn(*shape)}, stats, epsilon=1e-3)
    assert modules_of(gm, kind)
    assert gm.meta["prunekit_training_mode_batchnorm"] == []


def test_instance_norm() -> None:
    gm, _ = op_parity("InstanceNormalization", {"x": X}, {"s": randn(4, seed=1), "b": randn(4, seed=2)})
    assert modules_of(gm, nn.InstanceNorm2d)


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [3, 2], "pads": [0, 1, 2, 0]},
        {"kernel_shape": [2, 2], "dilations": [2, 2]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2]},
    ],
)
def test_max_pool(attrs: dict[str, Any]) -> None:
    op_parity("MaxPool", {"x": X}, opset=12, **attrs)


def test_max_pool_1d() -> None:
    op_parity("MaxPool", {"x": randn(2, 3, 11)}, kernel_shape=[3], strides=[2])


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        {"kernel_shape": [2, 3], "pads": [1, 0, 0, 2]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    ],
)
def test_average_pool(include: int, attrs: dict[str, Any]) -> None:
    op_parity("AveragePool", {"x": X}, count_include_pad=include, **attrs)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op: str) -> None:
    op_parity(op, {"x": X})
    op_parity(op, {"x": randn(2, 3, 5)})
