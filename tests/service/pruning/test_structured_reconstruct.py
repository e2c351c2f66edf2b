"""Structured reconstruction (SPARSEGPT with CHANNEL / NEURON): exact where a removed channel is redundant,
never worse than plain removal on the calibration inputs, and the channel scores it picks by."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import fx, nn

from prunekit.spec.structured_configs import ChannelConfig, NeuronConfig
from prunekit.v1 import model_pb2
from prunekit_server.modelio.torchscript import random_input
from prunekit_server.pruning import PruneContext, prune
from prunekit_server.pruning.structured import layer_inputs
from prunekit_server.pruning.structured.calibrated import CalibratedImportance
from prunekit_server.pruning.structured.groups import dependency_graph, root_group
from prunekit_server.pruning.structured.reconstruct import Survivors, reconstruct
from prunekit_server.pruning.structured.targets import Plan, apply
from tests.zoo import ZOO, export


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # type: ignore[no-any-return]


class _Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))  # type: ignore[no-any-return]


def _twin(first: nn.Module, copy_of: int, into: int) -> None:
    """Make output channel ``into`` of ``first`` an exact copy of channel ``copy_of``."""
    with torch.no_grad():
        first.weight[into] = first.weight[copy_of]
        first.bias[into] = first.bias[copy_of]


def _batches(shape: tuple[int, ...], count: int = 4) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(shape, generator=generator),) for _ in range(count)]


def _error(gm: nn.Module, reference: nn.Module, batches: list[tuple[torch.Tensor, ...]]) -> float:
    """Relative squared error of ``gm``'s outputs against ``reference``'s over ``batches``."""
    with torch.no_grad():
        pairs = [(gm(*b), reference(*b)) for b in batches]
    return float(sum(((a - e) ** 2).sum() for a, e in pairs) / sum((e**2).sum() for _, e in pairs))


def _remove(
    model: nn.Module, root: str, channels: list[int], batches: list[tuple[torch.Tensor, ...]]
) -> tuple[fx.GraphModule, fx.GraphModule, Survivors]:
    """``model`` traced, with ``channels`` of ``root`` removed: (pruned, before, survivors)."""
    gm = fx.symbolic_trace(model).eval()
    before = copy.deepcopy(gm)
    survivors = Survivors(gm)
    apply(gm, dependency_graph(gm, batches[0]), Plan({root: channels}), survivors.record)
    return gm, before, survivors


def test_a_redundant_hidden_unit_is_removed_exactly_with_reconstruction_and_not_without() -> None:
    torch.manual_seed(0)
    model = _Mlp()
    _twin(model.fc1, copy_of=3, into=5)
    batches = _batches((32, 8))
    gm, before, survivors = _remove(model, "fc1", [5], batches)
    assert survivors.kept("fc2") == ([0, 1, 2, 3], [i for i in range(16) if i != 5])
    assert survivors.kept("fc1")[0] == [i for i in range(16) if i != 5]
    plain = _error(gm, before, batches)
    assert plain > 1e-3  # unit 5's contribution is simply gone
    assert reconstruct(before, gm, survivors, batches) == []
    assert _error(gm, before, batches) < 1e-6 * plain  # exact but for the damping's pull (1e-4)
    assert _error(gm, before, _batches((32, 8), 2)) < 1e-6 * plain  # off the calibration inputs too
    with torch.no_grad():  # the twin's outgoing weights now carry both
        expected = before.fc2.weight[:, 3] + before.fc2.weight[:, 5]
        torch.testing.assert_close(gm.fc2.weight[:, 3], expected, rtol=5e-3, atol=1e-3)


def test_a_redundant_conv_channel_is_removed_exactly_and_other_removals_improve() -> None:
    torch.manual_seed(0)
    model = _Convs()
    _twin(model.conv1, copy_of=2, into=6)
    batches = _batches((2, 3, 10, 10))
    gm, before, survivors = _remove(model, "conv1", [6], batches)
    plain = _error(gm, before, batches)
    assert plain > 1e-3
    assert reconstruct(before, gm, survivors, batches) == []
    assert _error(gm, before, batches) < 1e-6 * plain
    # channels without a twin: least squares on the kept ones never does worse on its calibration inputs
    gm, before, survivors = _remove(_Convs(), "conv1", [0, 4, 7], batches)
    plain = _error(gm, before, batches)
    reconstruct(before, gm, survivors, batches)
    assert _error(gm, before, batches) < 0.9 * plain


def test_a_conv_read_in_several_blocks_is_refit_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers whose inputs do not fit one block: the pruned and original layer split a batch alike
    (each block's rows pair with the same samples) though their weights differ in size."""
    torch.manual_seed(0)
    model = _Convs()
    _twin(model.conv1, copy_of=2, into=6)
    batches = _batches((6, 3, 10, 10))
    # one sample per block for conv2 before pruning (8 x 9 x 100 elements), two after (6 x 9 x 100)
    monkeypatch.setattr(layer_inputs, "ROW_ELEMENTS", 8 * 9 * 100 * 3 // 2)
    gm, before, survivors = _remove(model, "conv1", [6, 7], batches)
    plain = _error(gm, before, batches)
    assert reconstruct(before, gm, survivors, batches) == []
    assert _error(gm, before, batches) < 0.9 * plain


def test_a_weight_that_is_not_the_kept_slice_is_left_alone_with_a_warning() -> None:
    batches = _batches((8, 8))
    gm, before, survivors = _remove(_Mlp(), "fc1", [2, 9], batches)
    survivors.inputs["fc2"] = [i for i in range(16) if i not in (3, 9)]  # a wrong record
    kept = gm.fc2.weight.detach().clone()
    warnings = reconstruct(before, gm, survivors, batches)
    assert len(warnings) == 1
    assert warnings[0].startswith("RECONSTRUCTION_SKIPPED: fc2: its pruned weight is not the original's")
    assert torch.equal(gm.fc2.weight.detach(), kept)


def test_sparsegpt_scores_a_redundant_unit_lowest_and_wanda_scores_loud_inputs_high() -> None:
    torch.manual_seed(0)
    model = _Mlp()
    _twin(model.fc1, copy_of=3, into=5)
    with torch.no_grad():
        model.fc1.weight[7] *= 20.0  # a loud unit
    gm = fx.symbolic_trace(model).eval()
    batches = _batches((32, 8))
    group = root_group(dependency_graph(gm, batches[0]), gm.fc1, range(16))
    sparsegpt = CalibratedImportance("sparsegpt", gm, batches)(group)
    assert set(torch.argsort(sparsegpt)[:2].tolist()) == {3, 5}  # either twin can go at no cost
    assert float(sparsegpt[[3, 5]].max()) < 0.1 * float(sparsegpt.median())
    wanda = CalibratedImportance("wanda", gm, batches)(group)
    assert int(torch.argmax(wanda)) == 7


def _onnx_mlp(path: Path) -> tuple[onnx.ModelProto, PruneContext, list[dict[str, np.ndarray]]]:
    """The MLP with a redundant hidden unit as ONNX, a calibration context and two held-out feeds."""
    torch.manual_seed(0)
    model = _Mlp().eval()
    _twin(model.fc1, copy_of=3, into=5)
    inputs = (model_pb2.InputSpec(name="x", shape=[32, 8]),)
    torch.onnx.export(model, (torch.randn(32, 8),), str(path), input_names=["x"], dynamo=False)
    generator = torch.Generator().manual_seed(0)
    feeds = [{"x": random_input(inputs[0], generator).numpy()} for _ in range(6)]
    context = PruneContext(inputs=inputs, feeds=tuple(feeds[:4]), synthetic=False)
    return onnx.load(str(path)), context, feeds[4:]


def _outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([np.asarray(session.run(None, feed)[0]) for feed in feeds])


def test_neuron_sparsegpt_removes_the_redundant_unit_without_output_error(tmp_path: Path) -> None:
    model, context, held_out = _onnx_mlp(tmp_path / "mlp.onnx")
    dense = _outputs(model, held_out)
    refitted = prune(model, NeuronConfig(ratio=1 / 16, round_to=1, importance="sparsegpt"), context)
    assert [layer.shape_after for layer in refitted.layers] == [(15, 8), (4, 15)]
    assert refitted.model is not None
    assert np.abs(_outputs(refitted.model, held_out) - dense).max() < 1e-4 * np.abs(dense).max()
    plain = prune(model, NeuronConfig(ratio=1 / 16, round_to=1, importance="l1"), context)
    assert plain.model is not None
    assert np.abs(_outputs(plain.model, held_out) - dense).max() > 1e-2 * np.abs(dense).max()


def test_channel_sparsegpt_on_the_zoo_resnet_beats_l1_and_wanda_on_held_out_inputs(tmp_path: Path) -> None:
    entry = ZOO["resnet"]
    torch.manual_seed(0)
    path = tmp_path / "resnet.onnx"
    export(entry.build(), entry, path, "legacy", 17)
    model = onnx.load(str(path))
    generator = torch.Generator().manual_seed(0)
    feeds = [{s.name: random_input(s, generator).numpy() for s in entry.inputs} for _ in range(8)]
    context = PruneContext(inputs=tuple(entry.inputs), feeds=tuple(feeds[:6]), synthetic=True)
    dense = _outputs(model, feeds[6:])
    errors = {}
    for importance in ("l1", "wanda", "sparsegpt"):
        result = prune(model, ChannelConfig(ratio=0.3, importance=importance), context)
        assert result.model is not None
        if importance != "l1":
            assert f"SYNTHETIC_IMPORTANCE: {importance} importance" in result.warnings[0]
        assert not any(w.startswith("RECONSTRUCTION_SKIPPED") for w in result.warnings)
        errors[importance] = float(
            ((_outputs(result.model, feeds[6:]) - dense) ** 2).sum() / (dense**2).sum()
        )
    assert errors["sparsegpt"] < errors["wanda"] < errors["l1"], errors


def test_iterative_sparsegpt_refits_after_every_round(tmp_path: Path) -> None:
    model, context, held_out = _onnx_mlp(tmp_path / "mlp.onnx")
    dense = _outputs(model, held_out)
    errors = {}
    for importance in ("l1", "sparsegpt"):
        config = NeuronConfig(ratio=0.5, steps=2, round_to=1, importance=importance)
        result = prune(model, config, context)
        assert result.model is not None
        assert [layer.shape_after for layer in result.layers] == [(8, 8), (4, 8)]
        assert [step.step for step in result.schedule] == [1, 2]
        errors[importance] = float(((_outputs(result.model, held_out) - dense) ** 2).sum() / (dense**2).sum())
    assert errors["sparsegpt"] < 0.2 * errors["l1"], errors
