"""ATTENTION_HEAD inside the key/value groups of grouped-query attention.

A Qwen2-style decoder (8 query heads over 2 key/value heads, rotary embeddings): 25 % of its query
heads is one query head from each group, which whole groups cannot do (one group is 50 %). The
pruned model equals the original with those query heads' output columns zeroed, in every format;
the key/value projections and the group structure stay. Where neither way rounds to a head (4 query
heads over 2 at 25 %), the report says so.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunekit_server.pruning import HeadConfig, PruneContext, prune
from prunekit_server.pruning.fx_tools import propagate
from prunekit_server.pruning.graph import example_inputs, to_graph
from prunekit_server.pruning.heads import find_attentions, normalize
from prunekit_server.pruning.heads.grouped import per_group
from tests.service.pruning.structured_zoo import run_ort
from tests.zoo_hf import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_per_group_is_chosen_only_when_it_lands_closer_than_whole_groups() -> None:
    assert per_group(0.25, units=2, group=4, cap=0.9) == 1  # 2 of 8 query heads; a group would be 4
    assert per_group(0.5, units=2, group=4, cap=0.9) == 0  # one whole group is as close: it wins
    assert per_group(0.25, units=2, group=2, cap=0.9) == 0  # 1 of 4 wanted: neither way gets there
    assert per_group(0.3, units=8, group=2, cap=0.9) == 0  # 2 of 8 groups: 4.0 query heads of 4.8
    assert per_group(0.75, units=3, group=4, cap=0.5) == 2  # the cap holds each group to half
    assert per_group(0.5, units=4, group=1, cap=0.9) == 0  # no groups: plain heads


def _linear(module: nn.Module, path: str) -> nn.Linear:
    found = module.get_submodule(path)
    assert isinstance(found, nn.Linear)
    return found


@pytest.mark.parametrize("fmt", ["legacy", "dynamo", "trace"])
def test_query_heads_go_inside_each_group_exactly(fmt: str) -> None:
    model, inputs = load("qwen_gqa", fmt)
    context = PruneContext(inputs=inputs)
    result = prune(model, HeadConfig(ratio=0.25), context)
    assert result.module is not None
    assert result.model is not None
    summary = next(w for w in result.warnings if w.startswith("HEADS_PRUNED:"))
    assert summary.count("2->2 key/value groups of 3 query heads (4->3 per group)") == 2, summary

    original = to_graph(model, context)
    args = example_inputs(context)
    propagate(original, args)
    normalize(original, args)
    attentions, _ = find_attentions(original)
    assert len(attentions) == 2
    for att in attentions:
        assert tuple(_linear(result.module, att.q.path).weight.shape) == (24, 16)
        for path in (att.k.path, att.v.path):  # the key/value heads all stay
            assert tuple(_linear(result.module, path).weight.shape) == (8, 16)
        before = _linear(original, att.o_path).weight.detach()
        after = _linear(result.module, att.o_path).weight.detach()
        assert tuple(after.shape) == (16, 24)
        kept = [
            h
            for h in range(8)
            if any(torch.equal(before[:, 4 * h : 4 * h + 4], after[:, 4 * b : 4 * b + 4]) for b in range(6))
        ]
        removed = sorted(set(range(8)) - set(kept))
        assert [h // 4 for h in removed] == [0, 1], "one query head from each key/value group"
        with torch.no_grad():
            for h in removed:
                _linear(original, att.o_path).weight[:, 4 * h : 4 * h + 4] = 0
    with torch.no_grad():
        torch.testing.assert_close(result.module(*args), original(*args), rtol=1e-4, atol=1e-5)
        module_out = result.module(*args)
    feed = {inputs[0].name: args[0].numpy()}
    pruned = run_ort(result.model, feed)
    assert pruned[0].shape == tuple(module_out.shape)
    np.testing.assert_allclose(pruned[0], module_out.numpy(), rtol=1e-4, atol=1e-4)


def test_a_ratio_no_way_of_grouping_reaches_says_why() -> None:
    model, inputs = load("llama_gqa", "legacy")
    result = prune(model, HeadConfig(ratio=0.25), PruneContext(inputs=inputs))
    notes = [w for w in result.warnings if w.startswith("HEADS_ROUNDED:")]
    assert len(notes) == 2
    assert "0.25 of 4 query heads in 2 key/value groups of 2 is 1" in notes[0]
    assert "whole groups (2 query heads each)" in notes[0]
    assert "the same number from every group (2 at a time)" in notes[0]
    assert all(layer.skip_reason == "no head selected" for layer in result.layers)
