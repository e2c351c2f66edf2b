"""ATTENTION_HEAD: detection in exported graphs, parity with an eager model pruned by hand."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import fx, nn

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.measure.analysis import analyze
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pruning import HeadConfig, PruneConfig, PruneContext, prune
from prunekit_server.pruning.fx_tools import propagate
from prunekit_server.pruning.graph import example_inputs, to_graph
from prunekit_server.pruning.heads import find_attentions, remove_heads
from prunekit_server.spec_check import prune_config_of
from tests.zoo import ZOO, Attention, export

TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], onnx.ModelProto]:
    root = tmp_path_factory.mktemp("heads")
    cache: dict[tuple[str, str], onnx.ModelProto] = {}

    def get(name: str, exporter: str) -> onnx.ModelProto:
        if (name, exporter) not in cache:
            entry = ZOO[name]
            path = export(entry.build(), entry, root / f"{name}-{exporter}.onnx", exporter, 18)
            cache[name, exporter] = onnx.load(str(path))
        return cache[name, exporter]

    return get


def _context(name: str, **kwargs: object) -> PruneContext:
    return PruneContext(inputs=ZOO[name].inputs, **kwargs)  # type: ignore[arg-type]


def _graph(model: onnx.ModelProto, name: str) -> fx.GraphModule:
    context = _context(name)
    gm = to_graph(model, context)
    propagate(gm, example_inputs(context))
    return gm


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _ort(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(ort.InferenceSession(model.SerializeToString()).run(None, feed)[0])


def _l1_drops(attn: Attention, count: int) -> list[int]:
    """The heads an independent L1 ranking drops: |Q, K, V rows| + |O columns| per head."""
    d = attn.q.out_features // attn.heads
    scores = []
    for h in range(attn.heads):
        rows = slice(h * d, (h + 1) * d)
        total = sum(float(m.weight.detach()[rows].abs().sum()) for m in (attn.q, attn.k, attn.v))
        scores.append(total + float(attn.o.weight.detach()[:, rows].abs().sum()))
    return sorted(np.argsort(scores, kind="stable")[:count].tolist())


def _drop_by_hand(attn: Attention, drop: list[int]) -> None:
    d = attn.q.out_features // attn.heads
    keep = torch.tensor([h * d + j for h in range(attn.heads) if h not in drop for j in range(d)])
    with torch.no_grad():
        for m in (attn.q, attn.k, attn.v):
            m.weight = nn.Parameter(m.weight[keep].clone())
            m.bias = nn.Parameter(m.bias[keep].clone())
            m.out_features = len(keep)
        attn.o.weight = nn.Parameter(attn.o.weight[:, keep].clone())
        attn.o.in_features = len(keep)
    attn.heads -= len(drop)


@pytest.mark.parametrize(
    ("name", "exporter", "count", "heads", "head_dim"),
    [
        ("bert", "legacy", 2, 4, 8),
        ("bert", "dynamo", 2, 4, 8),
        ("transformer", "dynamo-batch", 1, 2, 8),
        ("vit", "legacy", 2, 4, 8),
    ],
)
def test_attentions_are_found_in_legacy_and_dynamo_exports(
    exported: Callable[[str, str], onnx.ModelProto],
    name: str,
    exporter: str,
    count: int,
    heads: int,
    head_dim: int,
) -> None:
    attentions, misses = find_attentions(_graph(exported(name, exporter), name))
    assert len(attentions) == count, misses
    assert {(a.heads, a.head_dim) for a in attentions} == {(heads, head_dim)}
    for att in attentions:
        assert att.paths == [f"{att.name}.q", f"{att.name}.k", f"{att.name}.v", f"{att.name}.o"]


def test_no_head_removed_is_the_identity(exported: Callable[[str, str], onnx.ModelProto]) -> None:
    model = exported("bert", "legacy")
    gm = _graph(model, "bert")
    args = example_inputs(_context("bert"))
    with torch.no_grad():
        before = gm(*args)
        for att in find_attentions(gm)[0]:
            remove_heads(gm, att, [])
        gm.recompile()
        torch.testing.assert_close(gm(*args), before, rtol=0, atol=0)
    # a ratio that rounds to no head at all leaves the exported model's outputs as they were
    result = prune(model, HeadConfig(ratio=0.1), _context("bert"))
    assert all(layer.skipped and layer.shape_after == layer.shape_before for layer in result.layers)
    assert result.model is not None
    feed = {"ids": ZOO["bert"].sample()[0].numpy()}
    assert _rel(_ort(result.model, feed), _ort(model, feed)) < 1e-5


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_pruned_heads_match_an_eager_model_pruned_by_hand(
    exported: Callable[[str, str], onnx.ModelProto], exporter: str
) -> None:
    model = exported("bert", exporter)
    result = prune(model, HeadConfig(ratio=0.5), _context("bert"))
    reference = ZOO["bert"].build()
    for layer in reference.layers:  # type: ignore[union-attr]
        _drop_by_hand(layer.attn, _l1_drops(layer.attn, 2))
    ids = ZOO["bert"].sample(batch=3, seed=7)
    with torch.no_grad():
        expected = reference(*ids).numpy()
        actual = result.module(*ids).numpy()
    assert _rel(actual, expected) < TOLERANCE
    assert result.model is not None
    assert _rel(_ort(result.model, {"ids": ids[0].numpy()}), expected) < TOLERANCE
    widths = {(layer.shape_before, layer.shape_after) for layer in result.layers}
    assert widths == {((32, 32), (16, 32)), ((32, 32), (32, 16))}
    assert not any(layer.skipped for layer in result.layers)
    assert "HEADS_PRUNED: heads per attention layers.0.attn: 4->2, layers.1.attn: 4->2" in result.warnings


def test_overrides_ignore_and_the_last_head(exported: Callable[[str, str], onnx.ModelProto]) -> None:
    model = exported("bert", "legacy")

    def kept(config: HeadConfig) -> list[int]:
        result = prune(model, config, _context("bert"))
        return [layer.shape_after[0] // 8 for layer in result.layers if layer.name.endswith("q/MatMul")]

    assert kept(HeadConfig(ratio=0.25, overrides=(("layers.1.*", 0.75),))) == [3, 1]
    assert kept(HeadConfig(ratio=0.5, ignore=("*layers.0*",))) == [4, 2]
    assert kept(HeadConfig(ratio=0.99, max_layer_ratio=0.99)) == [1, 1]  # one head always stays
    assert kept(HeadConfig(ratio=0.75, max_layer_ratio=0.5)) == [2, 2]
    assert sum(kept(HeadConfig(ratio=0.5, scope="global"))) == 4
    # an override holds in global scope and under a MACs target too
    assert kept(HeadConfig(ratio=0.5, scope="global", overrides=(("layers.0.*", 0.25),)))[0] == 3
    assert kept(HeadConfig(target_macs_reduction=1.05, overrides=(("layers.1.*", 0.75),)))[1] == 1
    with pytest.raises(ServiceError) as caught:
        prune(model, HeadConfig(ratio=0.5, ignore=("*attn*",)), _context("bert"))
    assert caught.value.reason == "INVALID_SPEC"


@pytest.mark.parametrize("importance", ["taylor", "activation", "random", "l2"])
def test_every_importance_gives_a_consistent_model(
    exported: Callable[[str, str], onnx.ModelProto], importance: str
) -> None:
    model = exported("bert", "legacy")
    feeds = tuple(synthetic_inputs(ZOO["bert"].inputs, 2, 0))
    result = prune(model, HeadConfig(ratio=0.5, importance=importance), _context("bert", feeds=feeds))  # type: ignore[arg-type]
    assert result.model is not None
    ids = ZOO["bert"].sample()
    with torch.no_grad():
        assert _rel(_ort(result.model, {"ids": ids[0].numpy()}), result.module(*ids).numpy()) < TOLERANCE
    synthetic = any(w.startswith("SYNTHETIC_IMPORTANCE:") for w in result.warnings)
    assert synthetic == (importance in ("taylor", "activation"))


def test_iterative_schedule_calls_the_recovery_hook(exported: Callable[[str, str], onnx.ModelProto]) -> None:
    calls: list[int] = []

    def recover(gm: object) -> None:
        assert isinstance(gm, fx.GraphModule)
        calls.append(sum(p.numel() for p in gm.parameters()))

    context = _context("bert", recover=recover)
    result = prune(exported("bert", "legacy"), HeadConfig(ratio=0.75, steps=3), context)
    assert len(calls) == 2
    assert calls[0] > calls[1]
    assert "HEADS_PRUNED: heads per attention layers.0.attn: 4->1, layers.1.attn: 4->1" in result.warnings


def test_macs_target_is_reached_within_five_percent(exported: Callable[[str, str], onnx.ModelProto]) -> None:
    model = exported("bert", "legacy")
    inputs = list(ZOO["bert"].inputs)
    result = prune(model, HeadConfig(target_macs_reduction=1.1), _context("bert"))
    assert result.model is not None
    onnx_format = model_pb2.MODEL_FORMAT_ONNX
    before = analyze(model, inputs, source_format=onnx_format, size_bytes=0).macs
    reached = before / analyze(result.model, inputs, source_format=onnx_format, size_bytes=0).macs
    assert reached == pytest.approx(1.1, rel=0.05)
    assert not any(w.startswith("TARGET_NOT_REACHED") for w in result.warnings)


def test_model_without_attention_is_unsupported(exported: Callable[[str, str], onnx.ModelProto]) -> None:
    with pytest.raises(ServiceError) as caught:
        prune(exported("mlp", "legacy"), HeadConfig(ratio=0.5), _context("mlp"))
    assert caught.value.reason == "UNSUPPORTED_MODEL"
    assert "no multi-head attention" in caught.value.message


def test_config_round_trip_and_spec(tmp_path: Path) -> None:
    config = HeadConfig(ratio=0.5, importance="taylor", overrides=(("a*", 0.25),), steps=2, ignore=("b",))
    data = json.loads(json.dumps(config.to_dict()))
    assert PruneConfig.from_dict(data) == config
    assert all(HeadConfig.describe().values())
    spec = spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_ATTENTION_HEAD, ratio=0.5)
    assert prune_config_of(spec) == HeadConfig(ratio=0.5, scope="per_layer")
    spec.schedule = spec_pb2.PRUNE_SCHEDULE_ITERATIVE
    spec.overrides.add(pattern="x*", ratio=0.2)
    assert prune_config_of(spec) == HeadConfig(ratio=0.5, steps=5, overrides=(("x*", 0.2),))
    bad = spec_pb2.PruneSpec(
        method=spec_pb2.PRUNE_METHOD_ATTENTION_HEAD, importance=spec_pb2.IMPORTANCE_FPGM, round_to=8, n=2
    )
    with pytest.raises(ServiceError) as caught:
        prune_config_of(bad)
    fields = {v.field for v in caught.value.violations}
    assert fields == {"spec.prune.ratio", "spec.prune.importance", "spec.prune.round_to", "spec.prune.n"}
    for kwargs in ({"ratio": 0.0}, {"ratio": 0.5, "target_macs_reduction": 2.0}, {"ratio": 0.5, "steps": 0}):
        with pytest.raises(ValueError, match=r"."):
            HeadConfig(**kwargs)  # type: ignore[arg-type]
    assert copy.copy(config) == config
