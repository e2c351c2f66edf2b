"""Unstructured magnitude pruning on real exported models and small hand-built graphs."""

from __future__ import annotations

import json
import math
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
from prunekit_server.pruning import (
    PruneConfig,
    UnstructuredConfig,
    apply_tensors,
    prune,
    weighted_layers,
)
from prunekit_server.spec_check import prune_config_of
from tests.samples import write_sample_model


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=16, image_size=16)
    return onnx.load(str(path))


class _Mixed(nn.Module):
    """ConvTranspose, a bare MatMul with a parameter and a Linear: every eligible op type."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 2, stride=2)
        self.proj = nn.Parameter(torch.randn(8, 5))
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(x).mean(dim=(1, 2))
        out: torch.Tensor = self.head(y @ self.proj)
        return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("mixed") / "mixed.onnx"
    torch.onnx.export(_Mixed().eval(), (torch.randn(1, 4, 4, 4),), str(path), opset_version=17, dynamo=False)
    return onnx.load(str(path))


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    names = {layer.weight_name for layer in weighted_layers(model)}
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}


def _all_inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _matmul_model(
    weights: list[np.ndarray], *, dtype: int = TensorProto.FLOAT, shared: bool = False, identity: bool = False
) -> onnx.ModelProto:
    """x -> MatMul(w0) -> MatMul(w1) ...; ``shared`` reuses w0, ``identity`` routes w0 through Identity."""
    nodes, inits = [], []
    current = "x"
    for i, w in enumerate(weights):
        name = "w0" if shared else f"w{i}"
        if not shared or i == 0:
            inits.append(numpy_helper.from_array(w, name))
        source = name
        if identity and i == 0:
            nodes.append(helper.make_node("Identity", [name], ["w0_id"], name="id0"))
            source = "w0_id"
        nodes.append(helper.make_node("MatMul", [current, source], [f"h{i}"], name=f"mm{i}"))
        current = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", dtype, [1, weights[0].shape[0]])],
        [helper.make_tensor_value_info(current, dtype, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_global_ratio_is_exact_on_exported_cnn(cnn: onnx.ModelProto) -> None:
    before = cnn.SerializeToString()
    result = prune(cnn, UnstructuredConfig(ratio=0.37))
    assert cnn.SerializeToString() == before, "prune must not mutate its input"
    pruned = apply_tensors(cnn, result.tensors)
    weights = _weights(pruned)
    total = sum(w.size for w in weights.values())
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights.values())
    assert zeros == round(0.37 * total)
    assert len(result.layers) == len(weights) == 10
    assert sum(layer.parameters_after - layer.nonzero_after for layer in result.layers) == zeros
    assert all(not layer.skipped and layer.shape_before == layer.shape_after for layer in result.layers)
    # Global: one threshold, so the kept magnitudes all exceed the zeroed ones.
    original = _weights(cnn)
    cut = [np.abs(original[n][w == 0]) for n, w in weights.items()]
    kept = [np.abs(w[w != 0]) for w in weights.values()]
    assert max(float(c.max()) for c in cut if c.size) <= min(float(k.min()) for k in kept if k.size)


def test_per_layer_ratio_is_exact_for_every_layer(mixed: onnx.ModelProto) -> None:
    result = prune(mixed, UnstructuredConfig(ratio=0.4, scope="per_layer"))
    ops = {layer.op_type for layer in result.layers}
    assert ops == {"ConvTranspose", "MatMul", "Gemm"}
    pruned = apply_tensors(mixed, result.tensors)
    for name, w in _weights(pruned).items():
        assert int(np.count_nonzero(w == 0)) == round(0.4 * w.size), name
    for layer in result.layers:
        assert layer.nonzero_before - layer.nonzero_after == round(0.4 * layer.parameters_before)
        assert math.isclose(layer.sparsity, round(0.4 * layer.parameters_before) / layer.parameters_before)


def test_pruned_model_still_runs(cnn: onnx.ModelProto) -> None:
    pruned = apply_tensors(cnn, prune(cnn, UnstructuredConfig(ratio=0.5)).tensors)
    session = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": np.zeros((2, 3, 16, 16), np.float32)})
    assert out.shape == (2, 10)


def test_biases_and_other_initializers_are_untouched(cnn: onnx.ModelProto) -> None:
    result = prune(cnn, UnstructuredConfig(ratio=0.9))
    weights = set(_weights(cnn))
    assert set(result.tensors) <= weights
    pruned_inits = _all_inits(apply_tensors(cnn, result.tensors))
    for name, value in _all_inits(cnn).items():
        if name not in weights:
            np.testing.assert_array_equal(pruned_inits[name], value)


def test_ignore_globs_match_node_and_weight_names(cnn: onnx.ModelProto) -> None:
    config = UnstructuredConfig(ratio=0.5, ignore=("/layer3/*", "fc.weight"))
    result = prune(cnn, config)
    skipped = {layer.name for layer in result.layers if layer.skipped}
    assert skipped == {
        "/layer3/conv1/Conv",
        "/layer3/conv2/Conv",
        "/layer3/shortcut/shortcut.0/Conv",
        "/fc/Gemm",
    }
    for layer in result.layers:
        if layer.skipped:
            assert layer.weight_name not in result.tensors
            assert layer.nonzero_after == layer.nonzero_before
            assert "ignore pattern" in layer.skip_reason
    active = [layer for layer in result.layers if not layer.skipped]
    total = sum(layer.parameters_before for layer in active)
    assert sum(layer.nonzero_before - layer.nonzero_after for layer in active) == round(0.5 * total)


def test_ignoring_every_layer_is_a_spec_error(cnn: onnx.ModelProto) -> None:
    with pytest.raises(ServiceError) as err:
        prune(cnn, UnstructuredConfig(ratio=0.5, ignore=("*",)))
    assert err.value.reason == "INVALID_SPEC"
    assert err.value.violations[0].field == "spec.prune.ignore"


def test_ties_are_broken_by_position() -> None:
    w0 = np.array([[1, -1, 1], [-1, 1, -1]], np.float32)
    w1 = np.array([[1, 1], [-1, 2], [1, 0.5]], np.float32)
    model = _matmul_model([w0, w1])
    result = prune(model, UnstructuredConfig(ratio=0.5))  # 12 weights -> 6 zeroed
    # 0.5 is smallest, then the ten magnitudes of 1 in graph order, C order: w0's six minus one.
    np.testing.assert_array_equal(result.tensors["w1"], np.array([[1, 1], [-1, 2], [1, 0]], np.float32))
    np.testing.assert_array_equal(result.tensors["w0"], np.array([[0, 0, 0], [0, 0, -1]], np.float32))
    again = prune(model, UnstructuredConfig(ratio=0.5))
    for name, value in result.tensors.items():
        np.testing.assert_array_equal(again.tensors[name], value)


def test_float16_weights_stay_float16_and_exact() -> None:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((8, 16)).astype(np.float16)
    w1 = rng.standard_normal((16, 4)).astype(np.float16)
    model = _matmul_model([w0, w1], dtype=TensorProto.FLOAT16)
    result = prune(model, UnstructuredConfig(ratio=0.25, scope="per_layer"))
    assert all(v.dtype == np.float16 for v in result.tensors.values())
    pruned = apply_tensors(model, result.tensors)
    assert {t.data_type for t in pruned.graph.initializer} == {TensorProto.FLOAT16}
    assert int(np.count_nonzero(result.tensors["w0"] == 0)) == 32
    assert int(np.count_nonzero(result.tensors["w1"] == 0)) == 16
    kept = np.abs(result.tensors["w0"][result.tensors["w0"] != 0].astype(np.float32))
    assert kept.min() >= np.sort(np.abs(w0.astype(np.float32)).ravel())[31]
    session = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.ones((1, 8), np.float16)})
    assert out.dtype == np.float16


def test_bfloat16_weights_are_pruned_in_place() -> None:
    bf16 = onnx.helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16)
    w = np.arange(-6, 6, dtype=np.float32).reshape(3, 4).astype(bf16)
    model = _matmul_model([w], dtype=TensorProto.BFLOAT16)
    result = prune(model, UnstructuredConfig(ratio=0.25))
    assert result.tensors["w0"].dtype == bf16
    assert int(np.count_nonzero(result.tensors["w0"] == 0)) == 3
    pruned = apply_tensors(model, result.tensors)
    assert pruned.graph.initializer[0].data_type == TensorProto.BFLOAT16


def test_integer_weight_is_skipped_with_a_warning() -> None:
    floats = _matmul_model([np.ones((2, 2), np.float32)])
    ints = numpy_helper.from_array(np.ones((2, 2), np.int32), "wi")
    floats.graph.initializer.append(ints)
    floats.graph.node.append(helper.make_node("MatMul", ["xi", "wi"], ["yi"], name="int_mm"))
    floats.graph.input.append(helper.make_tensor_value_info("xi", TensorProto.INT32, [1, 2]))
    result = prune(floats, UnstructuredConfig(ratio=0.5))
    by_name = {layer.name: layer for layer in result.layers}
    assert by_name["int_mm"].skipped
    assert "wi" not in result.tensors
    assert any(w.startswith("WEIGHT_NOT_FLOAT:") and "int_mm" in w for w in result.warnings)
    assert int(np.count_nonzero(result.tensors["w0"] == 0)) == 2


def test_model_without_prunable_layers_is_unsupported() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(ServiceError) as err:
        prune(helper.make_model(graph), UnstructuredConfig(ratio=0.5))
    assert err.value.code.name == "FAILED_PRECONDITION"
    assert err.value.reason == "UNSUPPORTED_MODEL"


def test_identity_and_shared_weights() -> None:
    w = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    via_identity = prune(_matmul_model([w, w.copy()], identity=True), UnstructuredConfig(ratio=0.5))
    assert {layer.weight_name for layer in via_identity.layers} == {"w0", "w1"}
    shared_model = _matmul_model([w, w], shared=True)
    shared = prune(shared_model, UnstructuredConfig(ratio=0.5))
    (layer,) = shared.layers
    assert layer.shared_with == ("mm1",)
    assert int(np.count_nonzero(shared.tensors["w0"] == 0)) == 8
    with pytest.raises(ServiceError):
        prune(shared_model, UnstructuredConfig(ratio=0.5, ignore=("mm1",)))


def test_config_round_trips_through_json() -> None:
    config = UnstructuredConfig(ratio=0.3, scope="per_layer", ignore=("/fc/*", "*.bias"))
    data = json.loads(json.dumps(config.to_dict()))
    assert data == {
        "method": "unstructured",
        "ratio": 0.3,
        "scope": "per_layer",
        "ignore": ["/fc/*", "*.bias"],
        "importance": "magnitude",
    }
    assert PruneConfig.from_dict(data) == config
    assert UnstructuredConfig.from_dict(data) == config
    assert UnstructuredConfig.from_dict({"ratio": 0.5}) == UnstructuredConfig(ratio=0.5)
    with pytest.raises(ValueError, match="unknown"):
        PruneConfig.from_dict({"method": "nope", "ratio": 0.5})
    with pytest.raises(ValueError, match="unknown"):
        UnstructuredConfig.from_dict({"ratio": 0.5, "sparsity": 2})


def test_config_fields_describe_themselves() -> None:
    described = UnstructuredConfig.describe()
    assert set(described) == {"ratio", "scope", "ignore", "importance"}
    assert all(text for text in described.values())


@pytest.mark.parametrize("ratio", [1.5, -0.1, float("nan"), 0.0, 1.0, float("inf")])
def test_invalid_ratios_are_rejected(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        UnstructuredConfig(ratio=ratio)


def test_invalid_scope_and_patterns_are_rejected() -> None:
    with pytest.raises(ValueError, match="scope"):
        UnstructuredConfig(ratio=0.5, scope="everywhere")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ignore"):
        UnstructuredConfig(ratio=0.5, ignore="/fc/*")  # type: ignore[arg-type]


def test_config_from_spec() -> None:
    spec = spec_pb2.PruneSpec(
        method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED,
        ratio=0.25,
        scope=spec_pb2.PRUNE_SCOPE_PER_LAYER,
        ignore=["/fc/*"],
    )
    assert prune_config_of(spec) == UnstructuredConfig(ratio=0.25, scope="per_layer", ignore=("/fc/*",))
    spec.scope = spec_pb2.PRUNE_SCOPE_UNSPECIFIED
    assert prune_config_of(spec).to_dict()["scope"] == "global"
    spec.ratio = 1.5
    with pytest.raises(ServiceError) as err:
        prune_config_of(spec)
    assert [v.field for v in err.value.violations] == ["spec.prune.ratio"]
    with pytest.raises(ServiceError) as err:
        prune_config_of(spec_pb2.PruneSpec(ratio=0.5))
    assert err.value.reason == "INVALID_SPEC"
    assert err.value.violations[0].field == "spec.prune.method"


def test_unregistered_config_and_unknown_tensor(cnn: onnx.ModelProto) -> None:
    with pytest.raises(TypeError):
        prune(cnn, PruneConfig())
    with pytest.raises(KeyError):
        apply_tensors(cnn, {"not-there": np.zeros(1, np.float32)})


def test_exported_model_file_round_trip(cnn: onnx.ModelProto, tmp_path: Path) -> None:
    pruned = apply_tensors(cnn, prune(cnn, UnstructuredConfig(ratio=0.5)).tensors)
    onnx.save(pruned, str(tmp_path / "p.onnx"))
    onnx.checker.check_model(str(tmp_path / "p.onnx"))
    reloaded = _weights(onnx.load(str(tmp_path / "p.onnx")))
    total = sum(w.size for w in reloaded.values())
    assert sum(int(np.count_nonzero(w == 0)) for w in reloaded.values()) == round(0.5 * total)


def test_linear_weights_behind_transpose_are_pruned(tmp_path: Path) -> None:
    """The legacy exporter writes a Linear on 3-D inputs as Transpose(W) -> MatMul."""

    class _Seq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(16, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    path = tmp_path / "seq.onnx"
    torch.onnx.export(_Seq().eval(), (torch.randn(1, 4, 16),), str(path), opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    result = prune(model, UnstructuredConfig(ratio=0.5, scope="per_layer"))
    (layer,) = [info for info in result.layers if not info.skipped]
    assert layer.op_type == "MatMul"
    assert layer.nonzero_after == 16 * 32 // 2
