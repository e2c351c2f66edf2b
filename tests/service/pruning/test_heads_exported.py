"""ATTENTION_HEAD on Hugging Face models as users export them (legacy ONNX, dynamo ONNX, TorchScript).

Fused q|k|v projections (GPT-2), grouped-query attention with rotary embeddings
(a LLaMA-style decoder), a relative position bias per head (T5), SDPA
decompositions (their no-op reshapes, 3-D round trips and NaN guards): every
family is found in every format, a unit whose weights are zero goes without
changing the outputs, and a pruned model runs in ONNX Runtime with outputs of
the original's shape and dtype and fewer MACs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import fx, nn

from prunekit.v1 import model_pb2
from prunekit_server.measure.analysis import analyze
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pruning import HeadConfig, PruneContext, prune
from prunekit_server.pruning.fx_tools import fidelity, propagate
from prunekit_server.pruning.graph import example_inputs, to_graph
from prunekit_server.pruning.heads import Attention, Projection, find_attentions, normalize, remove_heads
from tests.service.pruning.structured_zoo import load as load_zoo
from tests.service.pruning.structured_zoo import run_ort
from tests.zoo_hf import cases, load

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPECTED = {  # (units, head width, query heads per unit, per-head biases)
    "bert": (4, 4, 1, False),
    "distilbert": (4, 4, 1, False),
    "vit": (4, 4, 1, False),
    "gpt2": (4, 4, 1, False),
    "llama_gqa": (2, 4, 2, False),
    "qwen_gqa": (2, 4, 4, False),
    "whisper_encoder": (4, 4, 1, False),
    "t5_encoder": (4, 4, 1, True),
    "swin": (4, 4, 1, True),
}
ATTENTIONS = {"swin": 3}
"""Attentions per family (2 unless listed); Swin's second stage has heads twice as wide."""
WIDER = {"swin": 8}
CASES = cases()


def _graph(name: str, fmt: str) -> tuple[fx.GraphModule, tuple[torch.Tensor, ...]]:
    model, inputs = load(name, fmt)
    context = PruneContext(inputs=inputs)
    gm = to_graph(model, context)
    args = example_inputs(context)
    propagate(gm, args)
    return gm, args


def _silence(gm: fx.GraphModule, att: Attention, unit: int) -> None:
    """Zero everything unit ``unit`` of ``att`` contributes: its Q/K/V rows and biases, its O columns."""
    q_width = att.group * att.head_dim

    def zero_rows(projection: Projection, width: int) -> None:
        linear = gm.get_submodule(projection.path)
        assert isinstance(linear, nn.Linear)
        start = projection.part * att.heads * width + unit * width
        with torch.no_grad():
            linear.weight[start : start + width] = 0
            if linear.bias is not None:
                linear.bias[start : start + width] = 0

    zero_rows(att.q, q_width)
    zero_rows(att.k, att.head_dim)
    zero_rows(att.v, att.head_dim)
    out = gm.get_submodule(att.o_path)
    assert isinstance(out, nn.Linear)
    with torch.no_grad():
        out.weight[:, unit * q_width : (unit + 1) * q_width] = 0


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_found_in_every_format_and_a_silent_unit_goes_without_a_trace(name: str, fmt: str) -> None:
    gm, args = _graph(name, fmt)
    attentions, misses = find_attentions(gm)
    units, width, group, biased = EXPECTED[name]
    assert len(attentions) == ATTENTIONS.get(name, 2), misses
    assert {(a.heads, a.head_dim, a.group, bool(a.biases)) for a in attentions} == {
        (units, w, group, biased) for w in (width, WIDER.get(name, width))
    }
    for att in attentions:
        _silence(gm, att, 0)
    with torch.no_grad():
        before = gm(*args)
        parameters = sum(p.numel() for p in gm.parameters())
        for att in attentions:
            remove_heads(gm, att, [0])
        gm.recompile()
        after = gm(*args)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in gm.parameters()) < parameters


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_pruned_model_runs_with_the_same_outputs_shape_and_fewer_macs(name: str, fmt: str) -> None:
    model, inputs = load(name, fmt)
    feeds = synthetic_inputs(list(inputs), 2, 5)
    result = prune(model, HeadConfig(ratio=0.5), PruneContext(inputs=inputs))
    assert result.model is not None
    units, _, group, _ = EXPECTED[name]
    left = f"{units}->{units // 2}" + (f" key/value groups of {group} query heads" if group > 1 else "")
    summary = next(w for w in result.warnings if w.startswith("HEADS_PRUNED:"))
    assert summary.count(left) == ATTENTIONS.get(name, 2), summary
    reference = [run_ort(model, feed) for feed in feeds]
    pruned = [run_ort(result.model, feed) for feed in feeds]
    for ref, out in zip(reference, pruned, strict=True):
        assert out[0].shape == ref[0].shape
        assert out[0].dtype == ref[0].dtype
        assert np.isfinite(out[0]).all()
    quality = fidelity(
        [[torch.from_numpy(r[0])] for r in reference], [[torch.from_numpy(p[0])] for p in pruned]
    )
    assert -1.0 <= quality.cosine_similarity <= 1.0
    with torch.no_grad():
        module_out = result.module(*(torch.from_numpy(feeds[0][s.name]) for s in inputs))
    np.testing.assert_allclose(pruned[0][0], module_out.numpy(), rtol=1e-4, atol=1e-4)
    onnx_format = model_pb2.MODEL_FORMAT_ONNX
    before = analyze(model, list(inputs), source_format=onnx_format, size_bytes=0).macs
    after = analyze(result.model, list(inputs), source_format=onnx_format, size_bytes=0).macs
    assert after < before
    onnx.checker.check_model(result.model)


@pytest.mark.parametrize("fmt", ["legacy", "dynamo"])
def test_torch_multihead_attention_exports_are_rewritten_and_pruned(fmt: str) -> None:
    """``nn.MultiheadAttention`` exported by torch: a packed in-projection split by ``select`` and heads
    merged with the batch, rewritten (same outputs), then found, and a silent head goes without a trace."""
    case = load_zoo("torchvit", fmt)
    context = PruneContext(inputs=case.inputs)
    gm = to_graph(case.model, context)
    args = example_inputs(context)
    propagate(gm, args)
    with torch.no_grad():
        original = gm(*args)
    assert normalize(gm, args)
    attentions, misses = find_attentions(gm)
    assert len(attentions) == 3, misses
    assert {(a.heads, a.head_dim, a.q.parts) for a in attentions} == {(4, 8, 3)}
    for att in attentions:
        _silence(gm, att, 2)
    with torch.no_grad():
        silenced = gm(*args)
        for att in attentions:
            remove_heads(gm, att, [2])
        gm.recompile()
        torch.testing.assert_close(gm(*args), silenced, rtol=1e-4, atol=1e-5)
    result = prune(case.model, HeadConfig(ratio=0.5), context)
    assert result.model is not None
    assert next(w for w in result.warnings if w.startswith("HEADS_PRUNED:")).count("4->2") == 3
    feed = synthetic_inputs(list(case.inputs), 1, 2)[0]
    pruned, reference = run_ort(result.model, feed), run_ort(case.model, feed)
    assert pruned[0].shape == reference[0].shape
    with torch.no_grad():
        module_out = result.module(*(torch.from_numpy(feed[s.name]) for s in case.inputs))
    np.testing.assert_allclose(pruned[0], module_out.numpy(), rtol=1e-4, atol=1e-4)
    assert original.shape == module_out.shape


@pytest.mark.parametrize(
    ("name", "importance"), [("llama_gqa", "activation"), ("gpt2", "taylor"), ("t5_encoder", "l2")]
)
def test_data_driven_importance_and_rounds_on_grouped_fused_and_biased_attention(
    name: str, importance: str
) -> None:
    model, inputs = load(name, "legacy")
    feeds = synthetic_inputs(list(inputs), 2, 6)
    context = PruneContext(inputs=inputs, feeds=tuple(feeds), synthetic=True)
    result = prune(model, HeadConfig(ratio=0.5, importance=importance, steps=2), context)  # type: ignore[arg-type]
    assert result.model is not None
    units = EXPECTED[name][0]
    assert (
        next(w for w in result.warnings if w.startswith("HEADS_PRUNED:")).count(f"{units}->{units // 2}") == 2
    )
    with torch.no_grad():
        module_out = result.module(*(torch.from_numpy(feeds[0][s.name]) for s in inputs))
    np.testing.assert_allclose(run_ort(result.model, feeds[0])[0], module_out.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["legacy", "dynamo", "trace"])
def test_grouped_query_attention_keeps_its_group_size_so_a_config_still_describes_it(fmt: str) -> None:
    """4 query heads over 2 key/value heads, width 4: one group goes, leaving 2 over 1, shapes a
    ``num_attention_heads=2, num_key_value_heads=1`` config of the same family loads."""
    model, inputs = load("llama_gqa", fmt)
    result = prune(model, HeadConfig(ratio=0.5), PruneContext(inputs=inputs))
    assert result.module is not None
    for layer in range(2):
        prefix = next(
            p for p, _ in result.module.named_modules() if p.endswith(f"layers.{layer}.self_attn.q_proj")
        ).rsplit(".", 1)[0]
        shapes = {
            name: tuple(result.module.get_submodule(f"{prefix}.{name}").weight.shape)
            for name in ("q_proj", "k_proj", "v_proj", "o_proj")
        }
        assert shapes == {"q_proj": (8, 16), "k_proj": (4, 16), "v_proj": (4, 16), "o_proj": (16, 8)}
