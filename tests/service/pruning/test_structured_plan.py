"""The CHANNEL / NEURON width planner: rounding, caps, chunks, global ranking and own ratios."""

from __future__ import annotations

import torch

from prunekit_server.pruning import ChannelConfig, NeuronConfig, registered_methods
from prunekit_server.pruning.structured.groups import Group
from prunekit_server.pruning.structured.targets import plan


def test_both_methods_have_handlers() -> None:
    methods = registered_methods()
    assert methods["channel"] is ChannelConfig
    assert methods["neuron"] is NeuronConfig


def _group(key: str, width: int, chunks: int = 1) -> Group:
    return Group(key, width, chunks, (key,), ())


def test_plan_rounds_to_the_nearest_multiple_within_the_cap() -> None:
    groups = [_group("a", 64), _group("b", 20), _group("c", 6)]
    scores = {g.key: torch.arange(g.chunk_width, dtype=torch.float32) for g in groups}
    original = {g.key: g.chunk_width for g in groups}
    result = plan(
        groups, scores, original, 0.3, scope="per_layer", round_to=8, max_layer_ratio=0.9, own_ratios={}
    )
    # a: 64 - 19 = 45 -> 48 kept; b: 20 - 6 = 14 -> 16 kept; c: 6 - 2 = 4 -> 8 > 6: untouched
    assert {k: len(v) for k, v in result.remove.items()} == {"a": 16, "b": 4}
    assert result.remove["a"] == list(range(16)), "the lowest scores go"
    capped = plan(
        groups, scores, original, 0.95, scope="per_layer", round_to=1, max_layer_ratio=0.5, own_ratios={}
    )
    assert {k: len(v) for k, v in capped.remove.items()} == {"a": 32, "b": 10, "c": 3}


def test_plan_prunes_chunks_alike_and_ranks_globally() -> None:
    grouped = _group("g", 16, chunks=4)
    other = _group("o", 8)
    scores = {"g": torch.tensor([5.0, 0.1, 6.0, 7.0]), "o": torch.arange(8, dtype=torch.float32) + 1}
    original = {"g": 4, "o": 8}
    result = plan(
        [grouped, other],
        scores,
        original,
        0.25,
        scope="global",
        round_to=1,
        max_layer_ratio=0.9,
        own_ratios={},
    )
    # 24 channels, 6 go: position 1 of each of g's 4 chunks (4 channels), then o's two lowest
    assert result.remove == {"g": [1, 5, 9, 13], "o": [0, 1]}
    own = plan(
        [grouped, other],
        scores,
        original,
        0.25,
        scope="global",
        round_to=1,
        max_layer_ratio=0.9,
        own_ratios={"o": 0.5},
    )
    assert own.remove["o"] == [0, 1, 2, 3]
