"""LOW_RANK: SVD factorization of Gemm, MatMul and Conv layers on exported models and hand-built graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from prunekit.spec.low_rank_configs import LowRankConfig
from prunekit_server.errors import ServiceError
from prunekit_server.measure.analysis import layer_table
from prunekit_server.modelio.torchscript import random_input
from prunekit_server.pruning import PruneContext, prune
from tests.zoo import ZOO, ZooEntry, export


def _exported(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[onnx.ModelProto, ZooEntry]:
    entry = ZOO[name]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    export(entry.build(), entry, path, "legacy", 17)
    return onnx.load(str(path)), entry


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, ZooEntry]:
    return _exported(tmp_path_factory, "resnet")


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, ZooEntry]:
    return _exported(tmp_path_factory, "transformer")


def _feeds(entry: ZooEntry) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(1)
    return {spec.name: random_input(spec, generator).numpy() for spec in entry.inputs}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def _macs(model: onnx.ModelProto, entry: ZooEntry) -> int:
    return sum(int(layer.macs) for layer in layer_table(model, list(entry.inputs)))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def _low_rank_gemm(rank: int, out: int = 24, fan_in: int = 32) -> onnx.ModelProto:
    """x (4, fan_in) -> Gemm (transB=1) with an exactly rank-``rank`` weight -> Relu."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((out, rank)) @ rng.standard_normal((rank, fan_in))).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["y"], "fc", transB=1),
            helper.make_node("Relu", ["y"], ["z"], "act"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, fan_in])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, out])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_exactly_low_rank_weight_is_recovered_bit_for_bit_at_its_rank() -> None:
    model = _low_rank_gemm(rank=3)
    result = prune(model, LowRankConfig(energy=0.999, prune_output_layers=True))
    assert result.model is not None
    (layer,) = result.layers
    assert layer.rank == 3
    assert not layer.skipped
    assert layer.parameters_after == 3 * (24 + 32) < layer.parameters_before
    assert layer.split_into == ("fc_low_rank", "fc")
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)}
    np.testing.assert_allclose(_run(result.model, feeds), _run(model, feeds), rtol=1e-4, atol=1e-4)
    assert {t.name for t in result.model.graph.initializer} == {"w_lr_a", "w_lr_b", "b"}
    onnx.checker.check_model(result.model, full_check=True)


def test_a_full_rank_weight_keeping_all_energy_is_skipped_as_no_cheaper() -> None:
    model = _low_rank_gemm(rank=24)
    result = prune(model, LowRankConfig(energy=0.99999, prune_output_layers=True))
    assert result.model is None
    assert result.layers[0].skipped
    assert "would not lower its MACs" in result.layers[0].skip_reason
    assert any(w.startswith("LOW_RANK_NOTHING_FACTORIZED") for w in result.warnings)


def test_conv_macs_target_halves_the_analysed_macs_and_keeps_outputs_close(
    resnet: tuple[onnx.ModelProto, ZooEntry],
) -> None:
    model, entry = resnet
    context = PruneContext(inputs=tuple(entry.inputs))
    result = prune(model, LowRankConfig(target_macs_reduction=2.0), context)
    assert result.model is not None
    assert result.module is not None
    before, after = _macs(model, entry), _macs(result.model, entry)
    assert after <= before / 2
    assert after > before / 3  # the bisection stops near the goal, not at rank 1 everywhere
    factored = [layer for layer in result.layers if layer.rank]
    assert factored
    assert all(layer.op_type == "Conv" for layer in factored)
    convs = {n.name: n for n in result.model.graph.node if n.op_type == "Conv"}
    for layer in factored:
        first = numpy_helper.to_array(
            next(t for t in result.model.graph.initializer if t.name == f"{layer.weight_name}_lr_a")
        )
        assert first.shape == (layer.rank, *layer.shape_before[1:])  # k x k conv to r channels
        assert convs[layer.name].input[0] == convs[f"{layer.name}_low_rank"].output[0]
    feeds = _feeds(entry)
    assert _cosine(_run(result.model, feeds), _run(model, feeds)) > 0.8
    with torch.no_grad():
        traced = result.module(*(torch.from_numpy(v) for v in feeds.values()))
    traced = traced[0] if isinstance(traced, tuple | list) else traced
    np.testing.assert_allclose(traced.numpy(), _run(result.model, feeds), rtol=1e-3, atol=1e-3)


def test_matmul_weights_behind_transpose_factorize_and_ratio_counts_eligible_macs(
    transformer: tuple[onnx.ModelProto, ZooEntry],
) -> None:
    model, entry = transformer
    context = PruneContext(inputs=tuple(entry.inputs))
    result = prune(model, LowRankConfig(ratio=0.4), context)
    assert result.model is not None
    table_before = {layer.name: int(layer.macs) for layer in layer_table(model, list(entry.inputs))}
    table_after = {layer.name: int(layer.macs) for layer in layer_table(result.model, list(entry.inputs))}
    eligible = [layer for layer in result.layers if not layer.skip_reason.startswith("output layer")]
    eligible_before = sum(table_before[layer.name] for layer in eligible)
    eligible_after = sum(
        sum(table_after.get(n, 0) for n in layer.split_into) or table_before[layer.name] for layer in eligible
    )
    assert eligible_after <= 0.6 * eligible_before
    assert {layer.op_type for layer in result.layers if layer.rank} == {"MatMul"}
    feeds = _feeds(entry)
    assert _cosine(_run(result.model, feeds), _run(model, feeds)) > 0.9


def test_energy_picks_each_layers_smallest_rank_and_higher_energy_keeps_more(
    resnet: tuple[onnx.ModelProto, ZooEntry],
) -> None:
    model, entry = resnet
    context = PruneContext(inputs=tuple(entry.inputs))
    low = {layer.name: layer.rank for layer in prune(model, LowRankConfig(energy=0.5), context).layers}
    high = {layer.name: layer.rank for layer in prune(model, LowRankConfig(energy=0.8), context).layers}
    assert any(low.values())
    assert all(high[name] >= rank or high[name] == 0 for name, rank in low.items())


def test_depthwise_convs_are_skipped_and_ignore_everything_is_a_spec_error(tmp_path: Path) -> None:
    model, entry = _exported_mobile(tmp_path)
    result = prune(model, LowRankConfig(energy=0.5), PruneContext(inputs=tuple(entry.inputs)))
    reasons = {layer.skip_reason for layer in result.layers if layer.skipped}
    assert "grouped or depthwise convolution" in reasons
    with pytest.raises(ServiceError) as caught:
        prune(model, LowRankConfig(energy=0.5, ignore=("*",)), PruneContext(inputs=tuple(entry.inputs)))
    assert "spec.prune.ignore" in str(caught.value.violations)


def _exported_mobile(tmp_path: Path) -> tuple[onnx.ModelProto, ZooEntry]:
    entry = ZOO["mobile"]
    torch.manual_seed(0)
    path = export(entry.build(), entry, tmp_path / "mobile.onnx", "legacy", 17)
    return onnx.load(str(path)), entry


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "set exactly one of ratio, target_macs_reduction and low_rank.energy"),
        ({"ratio": 0.5, "energy": 0.9}, "not several"),
        ({"energy": 1.0}, "0 < energy < 1"),
        ({"target_macs_reduction": 0.5}, "1 < x <= 100"),
    ],
)
def test_config_refuses_a_missing_double_or_out_of_range_goal(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LowRankConfig(**kwargs)


def _separable_conv(spatial_rank: int, *, channel_rank: int = 0) -> onnx.ModelProto:
    """x (1, 8, 17, 19) -> a 3 x 3 Conv (stride 1 x 2, dilation 2 x 1, uneven pads, bias) whose weight is
    exactly of rank ``spatial_rank`` in the spatial form (``channel_rank`` > 0: in the channel form)."""
    rng = np.random.default_rng(3)
    o, i, k = 12, 8, 3
    if channel_rank:
        weight = (
            rng.standard_normal((o, channel_rank)) @ rng.standard_normal((channel_rank, i * k * k))
        ).reshape(o, i, k, k)
    else:
        vertical = rng.standard_normal((i * k, spatial_rank))
        horizontal = rng.standard_normal((spatial_rank, o * k))
        weight = (vertical @ horizontal).reshape(i, k, o, k).transpose(2, 0, 1, 3)
    conv = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], "conv",
        kernel_shape=[k, k], strides=[1, 2], dilations=[2, 1], pads=[2, 1, 1, 0],
    )  # fmt: skip
    graph = helper.make_graph(
        [conv, helper.make_node("Relu", ["y"], ["z"], "act")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, i, 17, 19])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 12, 16, 9])],
        [
            numpy_helper.from_array(weight.astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(o).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _kernel(node: onnx.NodeProto) -> list[int]:
    return list(next(a.ints for a in node.attribute if a.name == "kernel_shape"))


def _conv_feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(4).standard_normal((1, 8, 17, 19)).astype(np.float32)}


def test_a_spatially_separable_conv_becomes_a_column_and_a_row_conv_exactly() -> None:
    model = _separable_conv(spatial_rank=2)
    result = prune(model, LowRankConfig(energy=0.999, prune_output_layers=True, conv="spatial"))
    assert result.model is not None
    (layer,) = result.layers
    assert (layer.rank, layer.shape_after) == (2, (2, 8, 3, 1))
    assert layer.parameters_after == 2 * (8 * 3 + 12 * 3) < layer.parameters_before
    kernels = {n.name: _kernel(n) for n in result.model.graph.node if n.op_type == "Conv"}
    assert kernels == {"conv_low_rank": [3, 1], "conv": [1, 3]}
    feeds = _conv_feeds()
    np.testing.assert_allclose(_run(result.model, feeds), _run(model, feeds), rtol=1e-4, atol=1e-4)
    onnx.checker.check_model(result.model, full_check=True)


def test_auto_takes_the_form_that_keeps_the_energy_at_fewer_macs() -> None:
    for model, form in (
        (_separable_conv(spatial_rank=2), [3, 1]),
        (_separable_conv(0, channel_rank=2), [3, 3]),
    ):
        result = prune(model, LowRankConfig(energy=0.999, prune_output_layers=True, conv="auto"))
        assert result.model is not None
        first = next(n for n in result.model.graph.node if n.name == "conv_low_rank")
        assert _kernel(first) == form
        feeds = _conv_feeds()
        np.testing.assert_allclose(_run(result.model, feeds), _run(model, feeds), rtol=1e-4, atol=1e-4)


def test_spatial_on_a_model_whose_convs_have_no_spatial_form_uses_the_channel_form(
    resnet: tuple[onnx.ModelProto, ZooEntry],
) -> None:
    model, entry = resnet
    context = PruneContext(inputs=tuple(entry.inputs))
    spatial = prune(model, LowRankConfig(target_macs_reduction=2.0, conv="spatial"), context)
    assert spatial.model is not None
    assert _macs(spatial.model, entry) <= _macs(model, entry) / 2
    shapes = [layer.shape_after for layer in spatial.layers if layer.rank]
    assert any(len(s) == 4 and s[2:] == (3, 1) for s in shapes), "3 x 3 convs split into columns and rows"
    feeds = _feeds(entry)
    assert _cosine(_run(spatial.model, feeds), _run(model, feeds)) > 0.8
