"""Progress fractions: the default table, and the prune stage weighed for fine-tuning and searches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from prunekit_server.pipeline.stages import FINETUNE_WEIGHT, STAGES, at, reweighted, span


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(
        self, stage: str, fraction: float, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        self.calls.append((stage, fraction))


def test_without_fine_tuning_or_search_nothing_moves() -> None:
    seen = Recorder()
    assert reweighted(seen, finetunes=False, searches=False) is seen


def test_fine_tuning_gets_most_of_the_bar() -> None:
    seen = Recorder()
    progress = reweighted(seen, finetunes=True, searches=False)
    points = [(name, at(name, part)) for name, _ in STAGES for part in (0, 1)]
    start, end = span("prune")
    points.insert(5, ("finetune", (start + end) / 2))
    for stage, fraction in points:
        progress(stage, fraction, "")
    fractions = [f for _, f in seen.calls]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0
    assert fractions[-1] == pytest.approx(1.0)
    total = sum(w for _, w in STAGES) + FINETUNE_WEIGHT
    prune_start = at("prune") * sum(w for _, w in STAGES) / total
    prune_end = prune_start + (1 + FINETUNE_WEIGHT) / total
    assert seen.calls[5] == ("finetune", pytest.approx((prune_start + prune_end) / 2))
    assert prune_end - prune_start > 0.6
