"""N:M semi-structured sparsity on exported models and small hand-built graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from prunekit.v1 import spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pruning import NMConfig, PruneConfig, apply_tensors, prune
from prunekit_server.pruning.n_m import nm_mask, output_layers
from prunekit_server.spec_check import prune_config_of
from tests.samples import write_sample_model
from tests.zoo import ZOO, export


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _groups(value: np.ndarray, axis: int, m: int) -> np.ndarray:
    """The weight cut into groups of ``m`` consecutive entries along ``axis``: shape (groups, m)."""
    return np.moveaxis(value, axis, -1).reshape(-1, m)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=16, image_size=16)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    entry = ZOO["bert"]
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    export(entry.build(), entry, path, "legacy", 17)
    return onnx.load(str(path))


def test_conv_groups_run_along_input_channels_with_exactly_n_kept(cnn: onnx.ModelProto) -> None:
    result = prune(cnn, NMConfig())
    before, after = _inits(cnn), _inits(apply_tensors(cnn, result.tensors))
    pruned = [layer for layer in result.layers if not layer.skipped]
    assert {layer.op_type for layer in pruned} == {"Conv"}
    for layer in pruned:
        weight = after[layer.weight_name]
        assert weight.shape == before[layer.weight_name].shape
        groups = _groups(weight, 1, 4)  # C_in of each (output channel, kernel position)
        assert (np.count_nonzero(groups, axis=1) == 2).all(), layer.name
        # the survivors are the two largest magnitudes of each group of the original
        original = _groups(before[layer.weight_name], 1, 4)
        top2 = np.sort(np.abs(original), axis=1)[:, 2:]
        np.testing.assert_array_equal(np.sort(np.abs(groups), axis=1)[:, 2:], top2)
        assert layer.sparsity == pytest.approx(0.5)
        assert layer.nonzero_after == layer.parameters_after // 2


def test_stem_with_three_input_channels_and_the_output_layer_are_skipped(cnn: onnx.ModelProto) -> None:
    result = prune(cnn, NMConfig())
    skipped = {layer.name: layer.skip_reason for layer in result.layers if layer.skipped}
    stem = next(layer for layer in result.layers if layer.shape_before[1:2] == (3,))
    assert "reduction size 3 is not a multiple of m=4" in skipped[stem.name]
    head = next(layer for layer in result.layers if layer.op_type == "Gemm")
    assert "output layer" in skipped[head.name]
    assert head.weight_name not in result.tensors
    assert stem.weight_name not in result.tensors
    assert any(w.startswith("N_M_LAYERS_SKIPPED:") and stem.name in w for w in result.warnings)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (2, 8)])
def test_linear_weights_behind_transpose_group_along_input_features(
    transformer: onnx.ModelProto, n: int, m: int
) -> None:
    result = prune(transformer, NMConfig(n=n, m=m, prune_output_layers=True))
    after = _inits(apply_tensors(transformer, result.tensors))
    pruned = [layer for layer in result.layers if not layer.skipped]
    assert len(pruned) == 14  # 2 layers x (q, k, v, o, ff1, ff2) + pooler + classifier
    for layer in pruned:
        weight = after[layer.weight_name]
        # torch keeps Linear weights as [out, in]; the exporter reads them through Transpose
        assert (np.count_nonzero(_groups(weight, 1, m), axis=1) == n).all(), layer.name
        assert layer.sparsity == pytest.approx(1 - n / m)
    total = sum(layer.parameters_after for layer in pruned)
    nonzero = sum(layer.nonzero_after for layer in pruned)
    assert nonzero / total == pytest.approx(n / m)


def test_gemm_without_transb_and_matmul_group_along_axis_0() -> None:
    rng = np.random.default_rng(0)
    w_gemm = rng.standard_normal((8, 6)).astype(np.float32)  # Y = X @ W: reduction over rows
    w_mm = rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "wg"], ["h"], name="gemm"),
        helper.make_node("MatMul", ["h", "wm"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w_gemm, "wg"), numpy_helper.from_array(w_mm, "wm")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = prune(model, NMConfig(prune_output_layers=True))
    gemm = result.tensors["wg"]
    assert (np.count_nonzero(_groups(gemm, 0, 4), axis=1) == 2).all()
    assert not (np.count_nonzero(_groups(gemm, 1, 2), axis=1) == 1).all()  # not grouped along outputs
    reasons = {layer.name: layer.skip_reason for layer in result.layers}
    assert reasons["mm"] == "reduction size 6 is not a multiple of m=4"


def test_conv_transpose_groups_run_along_its_input_channels() -> None:
    rng = np.random.default_rng(1)
    w_up = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)  # [C_in, C_out, k, k]
    w_grouped = rng.standard_normal((4, 2, 2, 2)).astype(np.float32)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wu"], ["h"], name="up", strides=[2, 2]),
        helper.make_node("ConvTranspose", ["h", "wg"], ["y"], name="grouped", group=2),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w_up, "wu"), numpy_helper.from_array(w_grouped, "wg")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = prune(model, NMConfig(prune_output_layers=True))
    up = result.tensors["wu"]
    assert (np.count_nonzero(_groups(up, 0, 4), axis=1) == 2).all()
    np.testing.assert_array_equal(up != 0, nm_mask(w_up, 0, 2, 4))
    reasons = {layer.name: layer.skip_reason for layer in result.layers}
    assert reasons == {"up": "", "grouped": "a grouped ConvTranspose is left dense"}
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    session = ort.InferenceSession(apply_tensors(model, result.tensors).SerializeToString())
    assert session.run(None, {"x": x})[0].shape == (1, 4, 12, 12)


def test_mask_breaks_ties_by_position_and_keeps_nan() -> None:
    value = np.asarray([[1.0, 1.0, 1.0, 1.0], [np.nan, 0.5, -3.0, 0.1]], dtype=np.float32)
    keep = nm_mask(value, 1, 2, 4)
    np.testing.assert_array_equal(keep, [[True, True, False, False], [True, False, True, False]])


def test_ignore_and_prune_output_layers(cnn: onnx.ModelProto) -> None:
    conv = next(layer for layer in prune(cnn, NMConfig()).layers if not layer.skipped)
    result = prune(cnn, NMConfig(ignore=(conv.name,), prune_output_layers=True))
    by_name = {layer.name: layer for layer in result.layers}
    assert by_name[conv.name].skip_reason == f"matches ignore pattern {conv.name!r}"
    assert conv.weight_name not in result.tensors
    head = next(layer for layer in result.layers if layer.op_type == "Gemm")
    assert not head.skipped
    assert head.weight_name in result.tensors
    assert output_layers(cnn) == {head.name}


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(8, 16)
        self.left = nn.Linear(16, 4)
        self.right = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.shared(x))
        return self.left(h), self.right(h)


def test_outputs_of_untouched_layers_are_bit_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "two.onnx"
    torch.onnx.export(_TwoHeads().eval(), (torch.randn(3, 8),), str(path), dynamo=False, opset_version=17)
    model = onnx.load(str(path))
    layers = prune(model, NMConfig(prune_output_layers=True)).layers
    left = next(layer.name for layer in layers if "left" in layer.name)
    right = next(layer.name for layer in layers if "right" in layer.name)
    # `shared` feeds both heads and is left dense: the left head's output must not move at all
    result = prune(model, NMConfig(ignore=("*shared*", left), prune_output_layers=True))
    assert {layer.name for layer in result.layers if not layer.skipped} == {right}
    pruned = apply_tensors(model, result.tensors)
    feed = {model.graph.input[0].name: np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feed)
    after = ort.InferenceSession(pruned.SerializeToString()).run(None, feed)
    np.testing.assert_array_equal(before[0], after[0])
    assert not np.array_equal(before[1], after[1])


def test_runtime_support_warning_names_runtimes(cnn: onnx.ModelProto) -> None:
    warning = next(w for w in prune(cnn, NMConfig()).warnings if w.startswith("N_M_RUNTIME_SUPPORT:"))
    for needle in ("TensorRT", "Ampere", "cuSPARSELt", "ONNX Runtime on CPU", "no speed-up"):
        assert needle in warning
    other = next(w for w in prune(cnn, NMConfig(n=1, m=8)).warnings if w.startswith("N_M_RUNTIME_SUPPORT:"))
    assert "1:8 is not 2:4" in other


def test_config_round_trips_through_json_and_describes_itself() -> None:
    config = NMConfig(n=1, m=8, ignore=("*fc*",), prune_output_layers=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["method"] == "n_m"
    assert PruneConfig.from_dict(data) == config
    assert NMConfig.from_dict(data) == config
    assert config.ratio == pytest.approx(0.875)
    assert set(NMConfig.describe()) == {"n", "m", "ignore", "prune_output_layers", "importance"}
    assert all(NMConfig.describe().values())


@pytest.mark.parametrize(
    "kwargs", [{"n": 4, "m": 4}, {"n": 0}, {"m": 1}, {"m": 65, "n": 2}, {"n": 1.5}, {"ignore": "*"}]
)
def test_invalid_configs_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        NMConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_spec_defaults_and_violations() -> None:
    spec = spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_N_M, ignore=["a*"])
    spec.overrides.add(pattern="b*", ignore=True)
    assert prune_config_of(spec) == NMConfig(n=2, m=4, ignore=("a*", "b*"))
    assert prune_config_of(spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_N_M, ratio=0.5)) == NMConfig()
    bad = spec_pb2.PruneSpec(
        method=spec_pb2.PRUNE_METHOD_N_M, ratio=0.3, round_to=8, importance=spec_pb2.IMPORTANCE_TAYLOR
    )
    bad.overrides.add(pattern="c*", ratio=0.2)
    with pytest.raises(ServiceError) as caught:
        prune_config_of(bad)
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "spec.prune.ratio",
        "spec.prune.round_to",
        "spec.prune.importance",
        "spec.prune.overrides[0]",
    }
    with pytest.raises(ServiceError) as caught:
        prune_config_of(spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_N_M, n=4, m=4))
    assert [v.field for v in caught.value.violations] == ["spec.prune.n"]


def test_no_eligible_layer_is_unsupported_and_ignoring_all_is_a_spec_error(cnn: onnx.ModelProto) -> None:
    w = numpy_helper.from_array(np.ones((3, 5), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ServiceError) as caught:
        prune(model, NMConfig(prune_output_layers=True))
    assert caught.value.reason == "UNSUPPORTED_MODEL"
    assert "not a multiple of m=4" in caught.value.message
    with pytest.raises(ServiceError) as caught:
        prune(cnn, NMConfig(ignore=("*",)))
    assert caught.value.reason == "INVALID_SPEC"


def test_pruned_model_runs_and_keeps_its_outputs_close(cnn: onnx.ModelProto) -> None:
    pruned = apply_tensors(cnn, prune(cnn, NMConfig()).tensors)
    feed = {"input": np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    before = ort.InferenceSession(cnn.SerializeToString()).run(None, feed)[0]
    after = ort.InferenceSession(pruned.SerializeToString()).run(None, feed)[0]
    assert after.shape == before.shape
    assert np.isfinite(after).all()
    assert not np.array_equal(before, after)
