"""TOKEN_SKIP built on the zoo's encoders and run with real ONNX Runtime sessions.

With the attention scorer and frozen layers, keeping every token gives the original's outputs exactly;
keeping fewer still gives the original's output shape and dtype, and the later layer's attention really
runs on fewer tokens. The learned scorer and the distilled layers are in the graph and change only the
later layers' weights. An encoder with one attention layer has no layer to score with:
``DYNAMIC_NOT_APPLICABLE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from prunekit.spec.dynamic_configs import DynamicConfig
from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pruning.dynamic import CalibrationRule, Split, token_skip, with_keep
from prunekit_server.pruning.dynamic.torchscript import write_traced_torchscript
from tests.zoo import ZOO, export

FROZEN = {"frozen_layers": True, "token_scorer": "attention"}


def _model(name: str, tmp: Path) -> tuple[onnx.ModelProto, list[model_pb2.InputSpec], dict[str, np.ndarray]]:
    entry = ZOO[name]
    path = export(entry.build(), entry, tmp / f"{name}.onnx", "legacy", 17)
    inputs = list(entry.inputs)
    feeds = synthetic_inputs(inputs, 16, 0)
    arrays = {i.name: np.concatenate([f[i.name] for f in feeds]) for i in inputs}
    return onnx.load(str(path)), inputs, arrays


def _split(inputs: list[model_pb2.InputSpec], seed: int) -> Split:
    feeds = synthetic_inputs(inputs, 24, seed)
    return Split({i.name: np.concatenate([f[i.name] for f in feeds]) for i in inputs})


def _run(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = int(session.get_inputs()[0].shape[0]) if isinstance(session.get_inputs()[0].shape[0], int) else 2
    n = len(next(iter(arrays.values())))
    return np.concatenate(
        [session.run(None, {k: v[i : i + batch] for k, v in arrays.items()})[0] for i in range(0, n, batch)]
    )


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_every_token_kept_is_the_original_and_fewer_keep_its_shape(name: str, tmp_path: Path) -> None:
    model, inputs, arrays = _model(name, tmp_path)
    rule = CalibrationRule("top1_agreement", min_agreement=0.5)
    config = DynamicConfig(form="token_skip", keep_ratio=0.5, **FROZEN)  # type: ignore[arg-type]
    built = token_skip(model, inputs, config, _split(inputs, 1), Split(arrays), rule, tmp_path)
    assert not built.calibrated
    assert built.distill_steps == 0
    assert built.keep_tokens == -(-built.tokens // 2)
    assert built.layer_tokens == [built.tokens, built.keep_tokens]
    assert any(n.op_type == "TopK" for n in built.model.graph.node)
    want = _run(model, arrays)
    np.testing.assert_allclose(_run(with_keep(built.model, built.tokens), arrays), want, rtol=1e-4, atol=1e-5)
    fewer = _run(built.model, arrays)
    assert (fewer.shape, fewer.dtype) == (want.shape, want.dtype)
    assert [p.keep_tokens for p in built.sweep] == sorted(p.keep_tokens for p in built.sweep)


def test_calibration_keeps_the_fewest_tokens_meeting_the_rule(tmp_path: Path) -> None:
    model, inputs, arrays = _model("bert", tmp_path)
    rule = CalibrationRule("top1_agreement", min_agreement=0.75)
    config = DynamicConfig(form="token_skip", **FROZEN)  # type: ignore[arg-type]
    built = token_skip(model, inputs, config, _split(inputs, 1), Split(arrays), rule, tmp_path)
    assert built.calibrated
    good = [p.keep_tokens for p in built.sweep if p.metric >= 0.75]
    assert built.keep_tokens == (min(good) if good else built.tokens)


def test_one_attention_layer_is_not_enough(tmp_path: Path) -> None:
    model, inputs, arrays = _model("transformer", tmp_path)
    rule = CalibrationRule("top1_agreement")
    with pytest.raises(ServiceError) as caught:
        token_skip(
            model, inputs, DynamicConfig(form="token_skip"), Split(arrays), Split(arrays), rule, tmp_path
        )
    assert caught.value.reason == "DYNAMIC_NOT_APPLICABLE"
    assert "at least two attention layers (found 1)" in caught.value.message


def test_the_token_skipping_model_traces_to_torchscript(tmp_path: Path) -> None:
    model, inputs, arrays = _model("bert", tmp_path)
    rule = CalibrationRule("top1_agreement", min_agreement=0.5)
    config = DynamicConfig(form="token_skip", keep_tokens=6, steps=4)
    built = token_skip(model, inputs, config, _split(inputs, 1), Split(arrays), rule, tmp_path)
    assert any(t.name == "dyn_scorer_w" for t in built.model.graph.initializer)
    out = tmp_path / "dynamic.pt"
    assert write_traced_torchscript(built.model, inputs, out) == []
    scripted = torch.jit.load(str(out))
    ids = arrays["ids"][:2]
    np.testing.assert_allclose(
        scripted(torch.from_numpy(ids)).detach().numpy(),
        _run(built.model, {"ids": ids}),
        rtol=1e-4,
        atol=1e-5,
    )


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def test_the_learned_scorer_and_distilled_layers_change_only_the_later_layers(tmp_path: Path) -> None:
    model, inputs, arrays = _model("vit", tmp_path)
    rule = CalibrationRule("top1_agreement", min_agreement=0.5)
    config = DynamicConfig(form="token_skip", keep_ratio=0.5, steps=6)
    built = token_skip(model, inputs, config, _split(inputs, 1), Split(arrays), rule, tmp_path)
    assert built.distill_steps == 6
    ops = [n.op_type for n in built.model.graph.node]
    assert {"TopK", "GatherElements", "Log"} <= set(ops)
    before, after = _initializers(model), _initializers(built.model)
    changed = sorted(n for n in before if not np.array_equal(before[n], after[n]))
    readers = {n: [node.name for node in model.graph.node if n in node.input] for n in changed}
    later = ("/layers/layers.1/", "/norm/", "/head/")
    assert changed
    assert all(r.startswith(later) for names in readers.values() for r in names)
    fewer = _run(built.model, arrays)
    assert fewer.shape == _run(model, arrays).shape


def test_a_rule_no_count_meets_gives_the_original_back(tmp_path: Path) -> None:
    model, inputs, arrays = _model("vit", tmp_path)
    impossible = CalibrationRule("top1_agreement", min_agreement=1.5)
    config = DynamicConfig(form="token_skip", steps=6)  # the count calibrated
    built = token_skip(model, inputs, config, _split(inputs, 1), Split(arrays), impossible, tmp_path)
    assert built.keep_tokens == built.tokens
    assert built.distill_steps == 0  # the distilled layers are not shipped
    assert any(w.startswith("DYNAMIC_RULE_NOT_MET") for w in built.warnings)
    np.testing.assert_allclose(_run(built.model, arrays), _run(model, arrays), rtol=1e-4, atol=1e-5)
