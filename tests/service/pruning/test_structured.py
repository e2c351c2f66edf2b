"""CHANNEL / NEURON behaviour: exact group handling, scope, rounding, caps, ignores, overrides, schedule."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pruning import (
    BatchNormRefresh,
    ChannelConfig,
    LayerPruneInfo,
    NeuronConfig,
    PruneContext,
    prune,
)
from tests.zoo import ZOO, export

from .structured_zoo import context, feeds, graph_input_names, load, rel_error, run_ort

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _out_widths(layers: list[LayerPruneInfo]) -> dict[str, tuple[int, int]]:
    """Layer name -> (output width before, after); ConvTranspose weights are [in, out/g, ...]."""
    index = {"ConvTranspose": 1}
    return {
        layer.name: (
            layer.shape_before[index.get(layer.op_type, 0)],
            layer.shape_after[index.get(layer.op_type, 0)],
        )
        for layer in layers
    }


def _kill_every_fourth_channel(model: nn.Module, keep: set[str]) -> None:
    """Make channels 0, 4, 8... of every hidden layer dead (zero weights, biases, BatchNorm scale, shift)."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name in keep:
                continue
            if isinstance(module, nn.ConvTranspose2d):
                module.weight[:, ::4] = 0
            elif isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
                module.weight[::4] = 0
            else:
                continue
            if module.bias is not None:
                module.bias[::4] = 0


DEAD = {"resnet": {"fc"}, "mobilenetv2": {"fc"}, "unet": {"out"}, "senet": {"fc"}, "mlp": {"fc3"}}


@pytest.mark.parametrize("name", sorted(DEAD))
def test_removing_dead_channels_changes_nothing(name: str) -> None:
    """Residual adds, depthwise convs, inverted residuals, concat skips, ConvTranspose and SE gates:
    every group loses exactly its dead quarter, and the outputs stay the same."""
    entry = ZOO[name]
    model = entry.build()
    _kill_every_fourth_channel(model, DEAD[name])
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = onnx.load(str(export(model, entry, Path(tmp) / "dead.onnx", "legacy", 17)))
    inputs = tuple(entry.inputs)
    config_type = NeuronConfig if name == "mlp" else ChannelConfig
    config = config_type(ratio=0.25, scope="per_layer", round_to=1, importance="activation")
    ctx = PruneContext(inputs=inputs, feeds=tuple(feeds(inputs)))
    result = prune(onnx_model, config, ctx)
    assert result.model is not None
    for layer_name, (before, after) in _out_widths(result.layers).items():
        if any(layer_name.startswith(f"/{k}/") for k in DEAD[name]):
            assert after == before, layer_name
        else:
            assert after == before - before // 4, layer_name
    for feed in feeds(inputs, 2, seed=9):
        for got, want in zip(run_ort(result.model, feed), run_ort(onnx_model, feed), strict=True):
            assert rel_error(got, want) < 1e-5


def test_per_layer_scope_takes_the_ratio_of_every_group() -> None:
    case = load("resnet", "legacy")
    result = prune(case.model, ChannelConfig(ratio=0.5, scope="per_layer", round_to=1), context(case))
    widths = _out_widths(result.layers)
    assert widths["/fc/Gemm"] == (10, 10)  # the output layer is kept
    assert all(after == before // 2 for name, (before, after) in widths.items() if name != "/fc/Gemm")


def test_global_scope_removes_the_ratio_of_all_channels_ranked_together() -> None:
    case = load("resnet18", "legacy")
    config = ChannelConfig(ratio=0.4, round_to=1, max_layer_ratio=0.95)
    result = prune(case.model, config, context(case))
    roots = [layer for layer in result.layers if layer.op_type == "Conv"]
    widths = _out_widths(roots)
    pruned = {before - after for before, after in widths.values()}
    assert len(pruned) > 2, "global ranking prunes groups by different amounts"
    assert result.model is not None
    assert run_ort(result.model, feeds(case.inputs, 1)[0])[0].shape == (2, 10)


def test_round_to_keeps_widths_multiples_and_max_layer_ratio_caps_them() -> None:
    case = load("resnet18", "legacy")
    result = prune(case.model, ChannelConfig(ratio=0.6, round_to=8, max_layer_ratio=0.5), context(case))
    widths = _out_widths(result.layers)
    changed = {name: w for name, w in widths.items() if w[0] != w[1]}
    assert changed
    for before, after in widths.values():
        assert after % 8 == 0 or after == before
        assert after >= math.ceil(before * 0.5)


def test_ignore_matches_module_paths_and_onnx_names_and_overrides_set_ratios() -> None:
    case = load("resnet", "legacy")
    config = ChannelConfig(
        ratio=0.5,
        scope="per_layer",
        round_to=1,
        ignore=("/layer1/layer1.0/conv1/Conv", "layer1.1.conv1"),
        overrides=(("stem.*", 0.75),),
    )
    result = prune(case.model, config, context(case))
    infos = {layer.name: layer for layer in result.layers}
    for name in ("/layer1/layer1.0/conv1/Conv", "/layer1/layer1.1/conv1/Conv"):
        assert infos[name].shape_after[0] == infos[name].shape_before[0]
        assert infos[name].skipped
        assert "ignore pattern" in infos[name].skip_reason
    assert infos["/stem/stem.0/Conv"].shape_after[0] == 2  # 8 channels, 75 % removed
    assert infos["/fc/Gemm"].skipped
    assert "output layer" in infos["/fc/Gemm"].skip_reason


def test_prune_output_layers_lets_the_output_width_change() -> None:
    case = load("mlp", "legacy")
    result = prune(case.model, NeuronConfig(ratio=0.5, round_to=1, prune_output_layers=True), context(case))
    assert result.model is not None
    assert run_ort(result.model, feeds(case.inputs, 1)[0])[0].shape == (2, 3)


def test_neuron_needs_linear_chains_and_ignores_that_cover_everything_are_spec_errors() -> None:
    case = load("resnet", "legacy")
    with pytest.raises(ServiceError) as caught:
        prune(case.model, NeuronConfig(ratio=0.5), context(case))
    assert caught.value.reason == "UNSUPPORTED_MODEL"
    assert "Linear" in caught.value.message
    with pytest.raises(ServiceError) as caught:
        prune(case.model, ChannelConfig(ratio=0.5, ignore=("*",)), context(case))
    assert caught.value.reason == "INVALID_SPEC"


def test_the_pruned_model_keeps_the_original_layer_names() -> None:
    case = load("resnet", "legacy")
    result = prune(case.model, ChannelConfig(ratio=0.3, round_to=1), context(case))
    assert result.model is not None

    def layer_names(model: onnx.ModelProto) -> set[str]:
        return {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}

    assert layer_names(result.model) == layer_names(case.model)
    assert graph_input_names(result.model) == graph_input_names(case.model)


@pytest.mark.parametrize("importance", ["l1", "l2", "fpgm", "bn_scale", "taylor", "activation", "random"])
def test_every_importance_criterion_ranks_and_says_when_data_was_synthetic(importance: str) -> None:
    case = load("resnet", "legacy")
    result = prune(case.model, ChannelConfig(ratio=0.5, round_to=1, importance=importance), context(case))
    assert result.model is not None
    synthetic = any(w.startswith("SYNTHETIC_IMPORTANCE") for w in result.warnings)
    assert synthetic == (importance in ("taylor", "activation"))
    again = prune(case.model, ChannelConfig(ratio=0.5, round_to=1, importance=importance), context(case))
    assert again.model is not None
    first = {t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer}
    second = {t.name: onnx.numpy_helper.to_array(t) for t in again.model.graph.initializer}
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first), "deterministic"


def test_criteria_rank_differently_and_bn_scale_falls_back_without_batchnorm() -> None:
    case = load("resnet18", "legacy")
    kept = {}
    for importance in ("l1", "random", "activation"):
        result = prune(case.model, ChannelConfig(ratio=0.5, round_to=1, importance=importance), context(case))
        assert result.model is not None
        kept[importance] = {
            t.name: onnx.numpy_helper.to_array(t).tobytes() for t in result.model.graph.initializer
        }
    assert kept["l1"] != kept["random"] != kept["activation"]
    mlp = load("mlp", "legacy")
    result = prune(mlp.model, ChannelConfig(ratio=0.5, round_to=1, importance="bn_scale"), context(mlp))
    assert any(w.startswith("IMPORTANCE_FALLBACK") for w in result.warnings)


def test_iterative_schedule_recovers_between_rounds_and_reaches_the_one_shot_widths() -> None:
    case = load("resnet", "legacy")
    calls: list[int] = []

    def recover(module: object) -> None:
        assert isinstance(module, torch.fx.GraphModule)
        calls.append(sum(p.numel() for p in module.parameters()))

    base = context(case)
    ctx = PruneContext(inputs=base.inputs, feeds=base.feeds, synthetic=True, recover=recover)
    config = ChannelConfig(ratio=0.5, scope="per_layer", round_to=1, steps=3)
    iterative = prune(case.model, config, ctx)
    assert len(calls) == 2
    assert calls[0] > calls[1], "each round removed more"
    one_shot = prune(case.model, ChannelConfig(ratio=0.5, scope="per_layer", round_to=1), base)
    assert _out_widths(iterative.layers) == _out_widths(one_shot.layers)
    assert [s.step for s in iterative.schedule] == [1, 2, 3]
    assert [s.ratio for s in iterative.schedule] == pytest.approx([1 / 3, 2 / 3, 1.0])
    macs = [s.macs for s in iterative.schedule]
    assert macs == sorted(macs, reverse=True)
    assert macs[0] > macs[-1]
    assert all(s.metric == "cosine_similarity" and -1.0 <= s.value <= 1.0 for s in iterative.schedule)
    assert not one_shot.schedule


def test_iterative_macs_target_with_the_batchnorm_refresh() -> None:
    case = load("resnet18", "legacy")
    base = context(case)
    refresh = BatchNormRefresh(case.inputs, base.feeds)
    ctx = PruneContext(inputs=base.inputs, feeds=base.feeds, synthetic=True, recover=refresh)
    result = prune(case.model, ChannelConfig(target_macs_reduction=2.0, steps=2, round_to=1), ctx)
    assert refresh.calls == 1
    assert any(w.startswith("SYNTHETIC_RECOVERY") for w in result.warnings)
    assert not any(w.startswith("MACS_TARGET_MISSED") for w in result.warnings)


def test_batchnorm_refresh_measures_the_statistics_of_the_feeds() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).eval()
    spec = model_pb2.InputSpec(name="x", shape=[4, 3, 8, 8])
    batches = feeds([spec], 3, seed=5)
    BatchNormRefresh([spec], batches)(model)
    assert not model.training
    assert model[1].momentum == 0.1
    with torch.no_grad():
        outputs = torch.cat([model[0](torch.from_numpy(f["x"])) for f in batches])
    expected_means = outputs.mean((0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected_means, atol=1e-5)


def test_sizes_that_do_not_follow_the_batch_are_frozen_for_export() -> None:
    from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
    from prunekit_server.pruning.structured.export import freeze_static_sizes

    case = load("shufflenet", "dynamo")
    gm = onnx_to_fx(case.model, inputs=list(case.inputs))
    before = [n for n in gm.graph.nodes if n.op == "call_method" and n.target == "size"]
    assert freeze_static_sizes(gm, case.inputs) > 0
    after = [n for n in gm.graph.nodes if n.op == "call_method" and n.target == "size"]
    assert 0 < len(after) < len(before), "the batch size is still read"
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch.chunk not in targets
    assert torch.split in targets
    feed = feeds([model_pb2.InputSpec(name=s.name, shape=[5, *s.shape[1:]]) for s in case.inputs], 1)[0]
    reference = onnx_to_fx(case.model, inputs=list(case.inputs))  # sizes read from the data
    args = [torch.from_numpy(feed[s.name]) for s in case.inputs]
    with torch.no_grad():
        assert rel_error(gm(*args).numpy(), reference(*args).numpy()) < 1e-6


def test_auto_ratios_spread_a_macs_target_by_measured_sensitivity() -> None:
    case = load("resnet18", "legacy")
    config = ChannelConfig(target_macs_reduction=2.0, auto_ratios=True, round_to=1)
    result = prune(case.model, config, context(case))
    assert result.model is not None
    assert any(w.startswith("SYNTHETIC_IMPORTANCE: sensitivity analysis") for w in result.warnings)
    assert not any(w.startswith("MACS_TARGET_MISSED") for w in result.warnings)
    shares = {
        (before - after) / before for before, after in _out_widths(result.layers).values() if after != before
    }
    assert len({round(s, 2) for s in shares}) > 3, "layers get different ratios"
