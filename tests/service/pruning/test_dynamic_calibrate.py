"""Routing inputs through exits at a threshold, batch by batch, and choosing the cheapest good threshold."""

from __future__ import annotations

import numpy as np

from prunekit_server.pruning.dynamic.calibrate import CalibrationRule, Routing, choose, route, sweep


def _routing(batch: int = 1) -> Routing:
    return Routing(
        confidence=np.array([[0.95, 0.40, 0.99, 0.60], [0.99, 0.97, 0.50, 0.99]]),
        predictions=np.array([[1, 0, 2, 0], [1, 1, 0, 3], [1, 1, 2, 3]]),
        costs=np.array([0.1, 0.5, 1.0]),
        reference=np.array([1, 1, 2, 3]),
        batch=batch,
    )


def test_each_input_leaves_at_the_first_confident_exit() -> None:
    assert route(_routing(), 0.9).tolist() == [0, 1, 0, 1]
    assert route(_routing(), 1.5).tolist() == [2, 2, 2, 2]
    assert route(_routing(), 0.0).tolist() == [0, 0, 0, 0]


def test_a_batch_leaves_only_when_every_item_is_confident() -> None:
    assert route(_routing(batch=2), 0.9).tolist() == [1, 1, 2, 2]


def test_the_cheapest_threshold_meeting_the_rule_is_chosen() -> None:
    points = sweep(_routing(), (0.0, 0.9, 0.98, 1.5))
    assert [p.metric for p in points] == [0.5, 1.0, 1.0, 1.0]
    assert points[1].shares == (0.5, 0.5, 0.0)
    assert abs(points[1].macs_fraction - 0.3) < 1e-12
    assert abs(points[2].macs_fraction - 0.525) < 1e-12
    loose = CalibrationRule("accuracy", max_drop=0.5)
    assert choose(points, loose, original_metric=1.0) == points[0]
    strict = CalibrationRule("top1_agreement", min_agreement=0.99)
    assert choose(points, strict, 1.0) == points[1]
    assert choose(points[:1], strict, 1.0) is None
