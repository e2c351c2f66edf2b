"""WANDA and SPARSEGPT: exact sparsity, the choices they make, and output error against magnitude pruning."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from prunekit.spec.prune_configs import NMConfig, UnstructuredConfig
from prunekit_server.modelio.torchscript import random_input
from prunekit_server.pruning import PruneContext, apply_tensors, prune
from prunekit_server.pruning.calibrated.solvers import Sparsity, sparsegpt, wanda
from tests.zoo import ZOO, ZooEntry, export


def _linear_with_loud_feature(
    scale: float = 100.0,
) -> tuple[onnx.ModelProto, tuple[dict[str, np.ndarray], ...]]:
    """x (16, 8) -> MatMul (8 -> 6): input feature 0 is ``scale`` times louder than the others."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 6)).astype(np.float32)
    weight[0] = 0.2 * np.sign(
        weight[0]
    )  # small weights on the loud feature: magnitude drops them, Wanda keeps them
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], "mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 6])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = []
    for _ in range(4):
        x = rng.standard_normal((16, 8)).astype(np.float32)
        x[:, 0] *= scale
        feeds.append({"x": x})
    return model, tuple(feeds)


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def test_wanda_keeps_small_weights_on_loud_inputs_that_magnitude_drops() -> None:
    model, feeds = _linear_with_loud_feature()
    context = PruneContext(feeds=feeds, synthetic=False)
    magnitude = prune(model, UnstructuredConfig(ratio=0.5, scope="per_layer"), context).tensors["w"]
    chosen = prune(model, UnstructuredConfig(ratio=0.5, scope="per_layer", importance="wanda"), context)
    weights = chosen.tensors["w"]
    assert (magnitude[0] == 0).sum() > (weights[0] == 0).sum()
    assert (weights[0] != 0).all()
    assert ((weights == 0).sum(axis=0) == 4).all()  # half of each output's 8 inputs, compared per output
    assert not chosen.warnings  # real data: no synthetic warning
    original = numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_array_equal(weights[weights != 0], original[weights != 0])  # Wanda only zeroes


def test_sparsegpt_layer_error_is_below_magnitudes_and_wandas_at_the_same_sparsity() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 64)) @ rng.standard_normal((64, 64))  # correlated inputs
    w = rng.standard_normal((32, 64))
    hessian = x.T @ x
    half = Sparsity(ratio=0.5)
    from_wanda = wanda(w, (x**2).sum(axis=0), half)
    from_gpt = sparsegpt(w, hessian, half)
    magnitude = np.where(np.abs(w) < np.median(np.abs(w), axis=1, keepdims=True), 0.0, w)

    def error(pruned: np.ndarray) -> float:
        return float(np.linalg.norm(x @ (pruned - w).T))

    assert np.count_nonzero(from_gpt == 0) == w.size // 2
    assert error(from_gpt) < error(from_wanda) < error(magnitude)
    two_four = sparsegpt(w, hessian, Sparsity(n=2, m=4))
    assert (np.count_nonzero(two_four.reshape(32, 16, 4), axis=2) == 2).all()
    assert error(two_four) < error(np.where(_nm_keep(w), w, 0.0))


def _nm_keep(w: np.ndarray) -> np.ndarray:
    groups = np.abs(w).reshape(w.shape[0], -1, 4)
    order = np.argsort(-groups, axis=2)
    keep = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep, order[:, :, :2], True, axis=2)
    return keep.reshape(w.shape)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, ZooEntry]:
    entry = ZOO["resnet"]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("resnet") / "resnet.onnx"
    export(entry.build(), entry, path, "legacy", 17)
    return onnx.load(str(path)), entry


@pytest.mark.parametrize("importance", ["wanda", "sparsegpt"])
def test_conv_model_n_m_groups_along_input_channels_and_beat_magnitude(
    resnet: tuple[onnx.ModelProto, ZooEntry], importance: str
) -> None:
    model, entry = resnet
    generator = torch.Generator().manual_seed(0)
    feeds = tuple({s.name: random_input(s, generator).numpy() for s in entry.inputs} for _ in range(6))
    test = {s.name: random_input(s, generator).numpy() for s in entry.inputs}
    context = PruneContext(inputs=tuple(entry.inputs), feeds=feeds, synthetic=True)
    original = _run(model, test)

    def cosine(config: NMConfig) -> tuple[float, dict[str, np.ndarray]]:
        tensors = prune(model, config, context).tensors
        out = _run(apply_tensors(model, tensors), test)
        return float((out * original).sum() / (np.linalg.norm(out) * np.linalg.norm(original))), tensors

    base, _ = cosine(NMConfig())
    better, tensors = cosine(NMConfig(importance=importance))  # type: ignore[arg-type]
    assert better > base
    for value in tensors.values():
        groups = np.moveaxis(value, 1, -1).reshape(-1, 4)
        assert (np.count_nonzero(groups, axis=1) <= 2).all()
    warnings = prune(model, NMConfig(importance=importance), context).warnings  # type: ignore[arg-type]
    assert any(w.startswith("SYNTHETIC_CALIBRATION:") for w in warnings)
