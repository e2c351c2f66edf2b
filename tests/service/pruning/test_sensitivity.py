"""Sensitivity curves (one group pruned alone) and the per-layer ratios derived from them."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from prunekit.spec.low_rank_configs import LowRankConfig
from prunekit.v1 import model_pb2
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.pruning.base import PruneContext
from prunekit_server.pruning.fx_tools import fidelity, origin, run_batches
from prunekit_server.pruning.low_rank import prune_low_rank
from prunekit_server.pruning.sensitivity import (
    DEFAULT_RATIOS,
    LayerCurve,
    auto_layer_ratios,
    check_ratios,
    graph_sensitivity,
    model_sensitivity,
)
from tests.samples import write_sample_model
from tests.zoo import ZOO, export

FRAMEWORKS = Path(__file__).resolve().parents[2] / "fixtures" / "frameworks"

IMAGE = model_pb2.InputSpec(name="image", shape=[2, 3, 8, 8])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Ordered(nn.Module):
    """conv1's channel c is scaled by 2**c on both sides, so the group's L1 order is the channel order."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)
        scale = 2.0 ** torch.arange(8.0)
        with torch.no_grad():
            self.conv1.weight.mul_(scale.view(8, 1, 1, 1))
            self.conv1.bias.mul_(scale)
            self.conv2.weight.div_(scale.view(1, 8, 1, 1)).mul_(scale.view(1, 8, 1, 1) ** 2 / 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(y.mean((2, 3)))


def _batches(count: int = 4) -> list[tuple[torch.Tensor, ...]]:
    feeds = synthetic_inputs([IMAGE], count, 0)
    return [(torch.from_numpy(feed["image"]),) for feed in feeds]


def test_a_curve_point_equals_removing_the_weakest_channels_by_hand(tmp_path: Path) -> None:
    module = _Ordered().eval()
    path = tmp_path / "ordered.onnx"
    torch.onnx.export(module, (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, input_names=["image"])
    feeds = synthetic_inputs([IMAGE], 4, 0)
    found = model_sensitivity(onnx.load(str(path)), [IMAGE], feeds, (0.25, 0.5))
    curve = next(c for c in found.curves if c.module == "conv1")
    assert (curve.layer, curve.channels, curve.kept) == ("/conv1/Conv", 8, (6, 4))
    batches = _batches()
    reference = run_batches(module, batches)
    for position, dropped in enumerate((2, 4)):
        by_hand = _Ordered().eval()
        with torch.no_grad():  # a channel whose filter and bias are zero adds nothing after the ReLU
            by_hand.conv1.weight[:dropped] = 0
            by_hand.conv1.bias[:dropped] = 0
        expected = fidelity(reference, run_batches(by_hand, batches))
        assert curve.cosine_similarity[position] == pytest.approx(expected.cosine_similarity, abs=1e-6)
        assert curve.top1_agreement[position] == pytest.approx(expected.top1_agreement)
    assert curve.cosine_similarity[1] < curve.cosine_similarity[0] < 1.0


def test_sample_cnn_every_group_but_the_head(tmp_path: Path) -> None:
    path = tmp_path / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=16, image_size=16)
    inputs = [model_pb2.InputSpec(name="input", shape=[1, 3, 16, 16])]
    started = time.monotonic()
    found = model_sensitivity(onnx.load(str(path)), inputs, synthetic_inputs(inputs, 8, 0))
    assert time.monotonic() - started < 20
    assert len(found.curves) == 6
    assert found.skipped == ["/fc/Gemm: output layer"]
    losses = [float(np.mean([1 - c for c in curve.cosine_similarity])) for curve in found.curves]
    assert losses == sorted(losses, reverse=True)  # most sensitive first
    for curve in found.curves:
        assert curve.ratios == DEFAULT_RATIOS
        assert list(curve.kept) == sorted(curve.kept, reverse=True)
        assert curve.kept[-1] < curve.channels
        assert all(-1.0 <= c <= 1.0 + 1e-9 for c in curve.cosine_similarity)
        assert all(0.0 <= t <= 1.0 for t in curve.top1_agreement)
    ignored = model_sensitivity(
        onnx.load(str(path)), inputs, synthetic_inputs(inputs, 2, 0), (0.5,), ignore=("*layer1*",)
    )
    assert {c.module for c in ignored.curves} == {
        "layer2.conv1",
        "layer2.conv2",
        "layer3.conv1",
        "layer3.conv2",
    }


def test_groups_torch_pruning_cannot_prune_alone_are_skipped_with_the_reason(tmp_path: Path) -> None:
    entry = ZOO["transformer"]
    model = onnx.load(str(export(entry.build(), entry, tmp_path / "t.onnx", "legacy", 17)))
    # 30 % of V's 16 features leaves 11: no longer two heads' worth, the reshape fails
    found = model_sensitivity(model, entry.inputs, synthetic_inputs(entry.inputs, 2, 0), (0.3,))
    assert {c.module for c in found.curves} >= {"ff1", "ff2"}
    assert any(s.startswith("/attn/v/MatMul: RuntimeError") for s in found.skipped)
    budget = graph_sensitivity(onnx_to_fx(model, inputs=list(entry.inputs)), [entry.sample()], budget_s=0.0)
    assert not budget.curves
    assert all("time budget" in s for s in budget.skipped if "output layer" not in s)


def test_known_curves_carry_over_by_node_name_width_shape_and_ratios(tmp_path: Path) -> None:
    entry = ZOO["transformer"]
    model = onnx.load(str(export(entry.build(), entry, tmp_path / "t.onnx", "legacy", 17)))
    gm = onnx_to_fx(model, inputs=list(entry.inputs))
    known: dict[str, LayerCurve] = {}
    first = graph_sensitivity(gm, [entry.sample()], (0.5,), known=known)
    assert len(known) == len(first.curves) > 0
    marked = {key: replace(curve, cosine_similarity=(-1.0,)) for key, curve in known.items()}
    again = graph_sensitivity(gm, [entry.sample()], (0.5,), known=marked)
    assert [c.cosine_similarity for c in again.curves] == [(-1.0,)] * len(first.curves)
    other_ratios = graph_sensitivity(gm, [entry.sample()], (0.3,), known=marked)
    assert all(c.cosine_similarity != (-1.0,) for c in other_ratios.curves)


def test_a_factorized_model_reuses_only_the_curves_of_unchanged_layers() -> None:
    model = onnx.load(str(FRAMEWORKS / "keras_cnn.onnx"))
    spec = model_pb2.InputSpec(name="image", shape=[1, 32, 32, 3])
    feed = (torch.randn(1, 32, 32, 3, generator=torch.Generator().manual_seed(0)),)
    known: dict[str, LayerCurve] = {}
    graph_sensitivity(onnx_to_fx(model, inputs=[spec]), [feed], (0.5,), known=known)
    marked = {key: replace(curve, cosine_similarity=(-1.0,)) for key, curve in known.items()}
    factorized = prune_low_rank(model, LowRankConfig(energy=0.6), PruneContext(inputs=(spec,)))
    assert factorized.model is not None
    split = {layer.name for layer in factorized.layers if layer.rank}
    assert split
    gm = onnx_to_fx(factorized.model, inputs=[spec])
    base = graph_sensitivity(gm, [feed], (0.5,), known=marked)
    reused = [c for c in base.curves if c.cosine_similarity == (-1.0,)]
    assert reused, "unchanged layers keep their curves"
    for curve in base.curves:
        assert curve.layer == origin(gm, curve.module).name
        if curve.layer in split or curve.layer.endswith("_low_rank"):
            assert curve not in reused, f"{curve.layer} changed and is measured again"


def _curve(name: str, losses: tuple[float, ...], channels: int = 16) -> LayerCurve:
    ratios = (0.1, 0.3, 0.5, 0.7)
    return LayerCurve(name, name, channels, ratios, tuple(1 - x for x in losses), (1.0,) * 4)


def test_auto_ratios_keep_the_target_and_prune_the_robust_layers_most() -> None:
    curves = [
        _curve("fragile", (0.05, 0.2, 0.4, 0.6)),
        _curve("middle", (0.01, 0.03, 0.08, 0.2)),
        _curve("robust", (0.0, 0.001, 0.002, 0.01), channels=32),
    ]
    ratios = auto_layer_ratios(curves, 0.4, 0.9)
    assert ratios["fragile"] < ratios["middle"] < ratios["robust"] <= 0.9
    weights = {"fragile": 16, "middle": 16, "robust": 32}
    mean = sum(ratios[k] * w for k, w in weights.items()) / sum(weights.values())
    assert mean == pytest.approx(0.4, abs=1e-6)
    equal = auto_layer_ratios(curves, 0.4, 0.9, weights=dict.fromkeys(weights, 1.0))
    assert sum(equal.values()) / 3 == pytest.approx(0.4, abs=1e-6)
    assert auto_layer_ratios(curves, 0.95, 0.6) == dict.fromkeys(
        weights, 0.6
    )  # unreachable: every layer capped
    capped = auto_layer_ratios(curves, 0.5, 0.7)
    assert max(capped.values()) <= 0.7 + 1e-12
    assert auto_layer_ratios([], 0.5) == {}
    with pytest.raises(ValueError, match="between 0 and 1"):
        auto_layer_ratios(curves, 1.5)


def test_ratio_lists_are_checked() -> None:
    assert check_ratios([0.5, 0.1, 0.5]) == (0.1, 0.5)
    for bad in ([], [0.0], [1.0], [float("nan")], [i / 20 for i in range(1, 19)]):
        with pytest.raises(ValueError, match=r"."):
            check_ratios(bad)
