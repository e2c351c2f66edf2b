"""LAYER: residual blocks and identity-shaped layers removed, checked against eager models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.measure.analysis import analyze
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pruning import LayerConfig, PruneConfig, PruneContext, prune
from prunekit_server.pruning.fx_tools import propagate
from prunekit_server.pruning.graph import example_inputs, to_graph
from prunekit_server.pruning.layer import find_blocks, find_units
from prunekit_server.spec_check import prune_config_of
from tests.zoo import ZOO, export

IMAGE = model_pb2.InputSpec(name="image", shape=[2, 3, 16, 16])
FEATURES = model_pb2.InputSpec(name="features", shape=[2, 8])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Block(nn.Module):
    def __init__(self, scale: float, tail: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        with torch.no_grad():
            self.conv1.weight.mul_(scale)
            self.conv2.weight.mul_(scale * tail)
            self.conv2.bias.mul_(tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class _DeepResidual(nn.Module):
    """A stem, four identity residual blocks of known weight norms, pooling, a Linear head."""

    def __init__(
        self, scales: tuple[float, ...] = (1.0, 0.4, 0.7, 0.2), tails: tuple[float, ...] = ()
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        tails = tails or (1.0,) * len(scales)
        self.blocks = nn.Sequential(*(_Block(s, t) for s, t in zip(scales, tails, strict=True)))
        self.fc = nn.Linear(8, 5)
        self.skip: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.stem(x))
        for i, block in enumerate(self.blocks):
            y = F.relu(y) if i in self.skip else block(y)
        return self.fc(y.mean((2, 3)))


class _PlainMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, 16)
        self.mid1 = nn.Linear(16, 16)
        self.mid2 = nn.Linear(16, 16)
        self.out = nn.Linear(16, 4)
        with torch.no_grad():
            self.mid2.weight.mul_(0.1)
        self.skip = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.mid1(F.relu(self.inp(x))))
        return self.out(y if self.skip else F.relu(self.mid2(y)))


def _export(module: nn.Module, spec: model_pb2.InputSpec, path: Path) -> onnx.ModelProto:
    args = (torch.randn(*spec.shape),)
    torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=17, input_names=[spec.name])
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    return _export(_DeepResidual(), IMAGE, tmp_path_factory.mktemp("deep") / "deep.onnx")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _image(seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _removed(result_warnings: list[str]) -> str:
    return next(w for w in result_warnings if w.startswith("LAYERS_REMOVED:"))


def test_blocks_of_zoo_models(tmp_path: Path) -> None:
    found = {}
    for name in ("resnet", "transformer"):
        entry = ZOO[name]
        model = onnx.load(str(export(entry.build(), entry, tmp_path / f"{name}.onnx", "legacy", 17)))
        context = PruneContext(inputs=entry.inputs)
        gm = to_graph(model, context)
        propagate(gm, example_inputs(context))
        found[name] = [block.name for block in find_blocks(gm)]
    # the strided block with a projection shortcut is not removable: only the identity one is
    assert found["resnet"] == ["layer1.0.{conv1,conv2}"]
    assert found["transformer"] == ["attn.{k,o,q,v}", "{ff1,ff2}"]


def test_smallest_blocks_go_and_the_graph_matches_the_eager_model(deep: onnx.ModelProto) -> None:
    result = prune(deep, LayerConfig(ratio=0.5), PruneContext(inputs=(IMAGE,)))
    reference = _DeepResidual().eval()
    reference.skip = {1, 3}  # the two smallest weight norms (scales 0.4 and 0.2)
    x = _image()
    with torch.no_grad():
        expected = reference(x).numpy()
        actual = result.module(x).numpy()
    assert _rel(actual, expected) < 1e-5
    assert result.model is not None
    onnx_out = ort.InferenceSession(result.model.SerializeToString()).run(None, {"image": x.numpy()})[0]
    assert _rel(onnx_out, expected) < 1e-5
    assert _removed(result.warnings) == (
        "LAYERS_REMOVED: 2 of 4 residual block(s) removed: blocks.3.{conv1,conv2}, blocks.1.{conv1,conv2}"
    )
    modules = {name for name, _ in result.module.named_modules()}
    assert not any(m.startswith(("blocks.1", "blocks.3")) for m in modules)
    assert {"blocks.0.conv1", "blocks.2.conv2", "stem", "fc"} <= modules
    removed = sorted(layer.name for layer in result.layers)
    assert len(removed) == 4
    assert all(not layer.skipped and layer.shape_after == () for layer in result.layers)
    assert all(
        layer.parameters_before == 8 * 8 * 9 and layer.parameters_after == 0 for layer in result.layers
    )


@pytest.mark.parametrize("importance", ["sensitivity", "activation", "taylor"])
def test_measured_criteria_find_the_negligible_block(tmp_path: Path, importance: str) -> None:
    # block 0 has the largest weights but an almost-zero output: weight norms keep it, data remove it
    module = _DeepResidual(scales=(3.0, 1.0, 1.0, 1.0), tails=(1e-4, 1.0, 1.0, 1.0))
    model = _export(module, IMAGE, tmp_path / "m.onnx")
    feeds = tuple(synthetic_inputs([IMAGE], 2, 0))
    context = PruneContext(inputs=(IMAGE,), feeds=feeds, synthetic=False)
    result = prune(model, LayerConfig(ratio=0.25, importance=importance), context)  # type: ignore[arg-type]
    assert _removed(result.warnings).endswith(": blocks.0.{conv1,conv2}")
    assert not any(w.startswith("SYNTHETIC_IMPORTANCE") for w in result.warnings)
    if importance == "sensitivity":  # the measured bypasses go to the report: one point per block
        curves = {c.layer: c.values[0] for c in result.sensitivity}
        assert len(curves) == 4
        assert max(curves, key=curves.__getitem__) == "blocks.0.{conv1,conv2}"
        assert all(c.metric == "cosine_similarity" and c.ratios == (1.0,) for c in result.sensitivity)
    else:
        assert not result.sensitivity
    by_norm = prune(model, LayerConfig(ratio=0.25), context)
    assert not _removed(by_norm.warnings).endswith(": blocks.0.{conv1,conv2}")


def test_identity_shaped_layers_when_there_is_no_block(tmp_path: Path) -> None:
    model = _export(_PlainMLP(), FEATURES, tmp_path / "mlp.onnx")
    result = prune(model, LayerConfig(ratio=0.5), PruneContext(inputs=(FEATURES,)))
    assert _removed(result.warnings) == "LAYERS_REMOVED: 1 of 2 identity-shaped layer(s) removed: mid2"
    reference = _PlainMLP().eval()
    reference.skip = True
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _rel(result.module(x).numpy(), reference(x).numpy()) < 1e-5
    # the exporter named the output with a number; the pruned model keeps that name
    assert result.model is not None
    names = [o.name for o in model.graph.output]
    assert names[0].isdigit()
    assert [o.name for o in result.model.graph.output] == names
    onnx_out = ort.InferenceSession(result.model.SerializeToString()).run(None, {"features": x.numpy()})[0]
    assert _rel(onnx_out, reference(x).detach().numpy()) < 1e-5


def test_ignore_and_macs_targets(deep: onnx.ModelProto) -> None:
    context = PruneContext(inputs=(IMAGE,))
    result = prune(deep, LayerConfig(ratio=0.5, ignore=("blocks.3.*",)), context)
    assert _removed(result.warnings).endswith(": blocks.1.{conv1,conv2}, blocks.2.{conv1,conv2}")
    ignored = [layer for layer in result.layers if layer.skipped]
    assert len(ignored) == 2
    assert all("blocks.3.*" in layer.skip_reason for layer in ignored)

    def reached(pruned: onnx.ModelProto) -> float:
        macs = [analyze(m, [IMAGE], source_format=1, size_bytes=0).macs for m in (deep, pruned)]
        return macs[0] / macs[1]

    # 4 blocks of 294,912 MACs over 1,234,984: removing two divides the MACs by 1.914
    two = prune(deep, LayerConfig(target_macs_reduction=1.9), context)
    assert two.model is not None
    assert reached(two.model) == pytest.approx(1.914, rel=1e-3)
    assert not any(w.startswith("TARGET_NOT_REACHED") for w in two.warnings)
    three = prune(deep, LayerConfig(target_macs_reduction=3.0), context)
    assert three.model is not None
    assert reached(three.model) == pytest.approx(3.53, rel=1e-2)
    assert any(w.startswith("TARGET_NOT_REACHED: MACs divided by 3.526, not 3") for w in three.warnings)


def test_models_without_units_and_ignoring_every_unit(tmp_path: Path, deep: onnx.ModelProto) -> None:
    entry = ZOO["mlp"]
    mlp = onnx.load(str(export(entry.build(), entry, tmp_path / "mlp.onnx", "legacy", 17)))
    with pytest.raises(ServiceError) as caught:
        prune(mlp, LayerConfig(ratio=0.5), PruneContext(inputs=entry.inputs))
    assert caught.value.reason == "UNSUPPORTED_MODEL"
    with pytest.raises(ServiceError) as caught:
        prune(deep, LayerConfig(ratio=0.5, ignore=("blocks.*",)), PruneContext(inputs=(IMAGE,)))
    assert caught.value.reason == "INVALID_SPEC"


def test_output_layers_stay_out_of_units(tmp_path: Path) -> None:
    class _Tail(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    model = _export(_Tail(), FEATURES, tmp_path / "tail.onnx")
    context = PruneContext(inputs=(FEATURES,))
    gm = to_graph(model, context)
    propagate(gm, example_inputs(context))
    units = {u.name: u.skip_reason for u in find_units(gm, LayerConfig(ratio=0.5))}
    assert units == {"a": "", "b": "contains an output layer (set prune_output_layers)"}
    assert all(
        not r
        for r in (u.skip_reason for u in find_units(gm, LayerConfig(ratio=0.5, prune_output_layers=True)))
    )


def test_config_round_trip_and_spec() -> None:
    config = LayerConfig(target_macs_reduction=2.0, importance="sensitivity", ignore=("x*",))
    assert PruneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert all(LayerConfig.describe().values())
    spec = spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_LAYER, ratio=0.25, auto_ratios=True)
    spec.overrides.add(pattern="keep*", ignore=True)
    assert prune_config_of(spec) == LayerConfig(ratio=0.25, importance="sensitivity", ignore=("keep*",))
    bad = spec_pb2.PruneSpec(
        method=spec_pb2.PRUNE_METHOD_LAYER,
        ratio=0.5,
        scope=spec_pb2.PRUNE_SCOPE_PER_LAYER,
        importance=spec_pb2.IMPORTANCE_BN_SCALE,
    )
    bad.overrides.add(pattern="x*", ratio=0.3)
    with pytest.raises(ServiceError) as caught:
        prune_config_of(bad)
    fields = {v.field for v in caught.value.violations}
    assert fields == {"spec.prune.scope", "spec.prune.importance", "spec.prune.overrides[0]"}
    for kwargs in ({}, {"ratio": 1.0}, {"ratio": 0.5, "importance": "fpgm"}, {"target_macs_reduction": 0.5}):
        with pytest.raises(ValueError, match=r"."):
            LayerConfig(**kwargs)  # type: ignore[arg-type]
