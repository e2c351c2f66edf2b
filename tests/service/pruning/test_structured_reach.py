"""A MACs target the ratio search misses because rounding makes its MACs jump: reached step by step,
or the miss explained (the most every group at its floor reaches, and where the other MACs are)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from prunekit_server.pruning import ChannelConfig, PruneContext, prune
from prunekit_server.pruning.structured.groups import Group
from prunekit_server.pruning.structured.reach import Steps, reach
from prunekit_server.pruning.structured.targets import Plan, SearchResult, keeping, plan, search_ratio
from tests.service.pruning.structured_zoo import feeds, macs, run_ort
from tests.zoo_hf import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A residual width of 16 costing 64 MACs a channel, two hidden widths of 64 costing 8 each.
COST = {"residual": 64, "fc0": 8, "fc1": 8}
WIDTH = {"residual": 16, "fc0": 64, "fc1": 64}
BASE = sum(COST[k] * WIDTH[k] for k in COST)


def _macs(candidate: Plan) -> int:
    return BASE - sum(COST[k] * len(v) for k, v in candidate.remove.items())


def test_reach_spends_the_rest_on_the_groups_that_can_still_lose_a_step() -> None:
    groups = [Group(k, w, 1, (k,), ()) for k, w in WIDTH.items()]
    scores = {k: torch.arange(w, dtype=torch.float32) / w for k, w in WIDTH.items()}
    original = dict(WIDTH)
    target = BASE / 1.5
    # the residual's first 8-channel step alone removes 512 of 2048 MACs: past the target
    start = SearchResult(0.1, keeping(groups, scores, {"fc0": 32, "fc1": 32}), 0)
    start = SearchResult(0.1, start.plan, _macs(start.plan))
    assert abs(target / start.macs - 1) > 0.05
    steps = Steps(groups, scores, original, fixed=(), round_to=8, cap=0.9)
    found = reach(steps, start, _macs, target)
    assert abs(target / found.macs - 1) <= 0.05
    assert "residual" not in found.plan.remove, "a step past the target is not taken"
    assert all(len(v) % 8 == 0 for v in found.plan.remove.values()), "kept widths stay multiples of 8"


def test_reach_gives_channels_back_when_the_search_removed_too_many_and_leaves_fixed_groups() -> None:
    groups = [Group(k, w, 1, (k,), ()) for k, w in WIDTH.items()]
    scores = {k: torch.arange(w, dtype=torch.float32) / w for k, w in WIDTH.items()}
    target = BASE / 1.5
    over = keeping(groups, scores, {"residual": 8, "fc0": 8, "fc1": 8})
    steps = Steps(groups, scores, dict(WIDTH), fixed=("residual",), round_to=8, cap=0.9)
    found = reach(steps, SearchResult(0.5, over, _macs(over)), _macs, target)
    assert abs(target / found.macs - 1) <= 0.05
    assert len(found.plan.remove["residual"]) == 8, "a group with its own ratio is never moved"


def test_the_search_alone_misses_where_reach_does_not() -> None:
    """The residual ranks first, its one step overshoots: the search keeps it; reach walks back and
    spends the cut on the hidden widths instead."""
    groups = [Group(k, w, 1, (k,), ()) for k, w in WIDTH.items()]
    scores = {"residual": torch.zeros(16), "fc0": torch.ones(64), "fc1": torch.ones(64)}

    def make(ratio: float) -> Plan:
        return plan(
            groups,
            scores,
            dict(WIDTH),
            ratio,
            scope="global",
            round_to=8,
            max_layer_ratio=0.9,
            own_ratios={},
        )

    target = BASE / 1.15  # the residual's step alone reaches 1.33x
    searched = search_ratio(make, _macs, target, 0.9)
    assert abs(target / searched.macs - 1) > 0.05
    steps = Steps(groups, scores, dict(WIDTH), fixed=(), round_to=8, cap=0.9)
    reached = reach(steps, searched, _macs, target)
    assert abs(target / reached.macs - 1) <= 0.05
    assert "residual" not in reached.plan.remove


@pytest.mark.parametrize("fmt", ["legacy", "dynamo", "trace"])
def test_gpt2_reaches_the_target_at_the_default_rounding(fmt: str) -> None:
    model, inputs = load("gpt2", fmt)
    result = prune(model, ChannelConfig(target_macs_reduction=1.5), PruneContext(inputs=inputs))
    assert result.model is not None
    before, _ = macs(model, inputs)
    after, _ = macs(result.model, inputs)
    assert before / after == pytest.approx(1.5, rel=0.05)
    assert not any(w.startswith("MACS_TARGET_MISSED") for w in result.warnings)
    feed = feeds(inputs, 1, seed=2)[0]
    original, pruned = run_ort(model, feed), run_ort(result.model, feed)
    assert pruned[0].shape == original[0].shape
    assert np.isfinite(pruned[0]).all()


def test_vit_miss_names_the_limit_and_where_the_macs_are() -> None:
    model, inputs = load("vit", "legacy")
    result = prune(model, ChannelConfig(target_macs_reduction=1.5), PruneContext(inputs=inputs))
    missed = [w for w in result.warnings if w.startswith("MACS_TARGET_MISSED")]
    assert len(missed) == 1
    assert result.model is not None
    before, _ = macs(model, inputs)
    after, _ = macs(result.model, inputs)
    floor = re.search(r"at its floor reaches ([0-9.]+)x \(([0-9.]+)x at round_to 1\)", missed[0])
    assert floor is not None, missed[0]
    assert float(floor.group(1)) == pytest.approx(before / after, rel=0.01), "the floor is what was reached"
    assert float(floor.group(1)) < float(floor.group(2)) < 1.5 * 0.95
    held = missed[0].split("shrinks: ")[1]
    shares = {m.group(2): int(m.group(1)) for m in re.finditer(r"(\d+)% ([^;]+)", held)}
    assert any("output layer" in reason for reason in shares), shares
    assert any("attention projection" in reason for reason in shares), shares
    assert any("products of two activations" in reason for reason in shares), shares
    assert 50 <= sum(shares.values()) <= 100
