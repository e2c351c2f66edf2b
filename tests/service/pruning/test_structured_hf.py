"""CHANNEL on the Hugging Face fixtures: attention projections are held for ATTENTION_HEAD, the rest is
pruned to the MACs target, quickly (the dependency search no longer wanders into rotary embeddings and
grouped-query repetition, where it used to exceed its bound on the LLaMA-style decoder)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from prunekit_server.pruning import ChannelConfig, PruneContext, prune
from prunekit_server.pruning.structured.attention import HEADS_REASON
from tests.service.pruning.structured_zoo import feeds, macs, run_ort
from tests.zoo_hf import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [("llama_gqa", "legacy"), ("llama_gqa", "dynamo"), ("gpt2", "trace"), ("t5_encoder", "legacy")]


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_channel_holds_the_attention_projections_and_reaches_the_target(name: str, fmt: str) -> None:
    model, inputs = load(name, fmt)
    feed = feeds(inputs, 1, seed=4)[0]
    started = time.monotonic()
    result = prune(model, ChannelConfig(target_macs_reduction=1.4, round_to=1), PruneContext(inputs=inputs))
    assert time.monotonic() - started < 120  # the search's own bound is 300 s
    assert result.model is not None
    held = [w for w in result.warnings if w.startswith("GROUP_SKIPPED") and HEADS_REASON in w]
    assert len(held) >= 2 * (1 if name == "gpt2" else 3)  # q, k, v (or one fused q|k|v) per attention
    before, _ = macs(model, inputs)
    after, _ = macs(result.model, inputs)
    assert before / after == pytest.approx(1.4, rel=0.05)
    original, pruned = run_ort(model, feed), run_ort(result.model, feed)
    assert pruned[0].shape == original[0].shape
    assert np.isfinite(pruned[0]).all()


@pytest.mark.parametrize("fmt", ["legacy", "trace"])
def test_swin_channels_at_30_percent(fmt: str) -> None:
    """Swin (shifted windows, window padding from the input's size, patch merging): its feed-forward
    widths go at ``ratio: 0.3``; the pruned model runs in ONNX Runtime as its GraphModule does."""
    model, inputs = load("swin", fmt)
    feed = feeds(inputs, 1, seed=4)[0]
    result = prune(model, ChannelConfig(ratio=0.3, round_to=1), PruneContext(inputs=inputs))
    assert result.model is not None
    assert result.module is not None
    before, _ = macs(model, inputs)
    after, _ = macs(result.model, inputs)
    assert before / after > 1.1
    narrower = [layer for layer in result.layers if layer.shape_after[0] < layer.shape_before[0]]
    assert len(narrower) >= 3, "each block's first feed-forward layer"
    original, pruned = run_ort(model, feed), run_ort(result.model, feed)
    assert pruned[0].shape == original[0].shape
    assert pruned[0].dtype == original[0].dtype
    with torch.no_grad():
        module_out = result.module(*(torch.from_numpy(feed[s.name]) for s in inputs))
    np.testing.assert_allclose(pruned[0], module_out.numpy(), rtol=1e-4, atol=1e-4)
