"""AUTO: which measured candidate is kept (numbers injected); the plan is tested in the spec room."""

from __future__ import annotations

import pytest

from prunekit_server.measure.quality import Quality, QualityRule
from prunekit_server.quantization import (
    Candidate,
    select_fastest,
)

GOOD = Quality(top1_agreement=1.0, cosine_similarity=0.9999, max_abs_error=0.01, samples=32)
BAD = Quality(top1_agreement=0.90, cosine_similarity=0.999, max_abs_error=0.3, samples=32)


def test_the_fastest_passing_candidate_is_kept() -> None:
    candidates = [
        Candidate("pruned", 10.0, GOOD),
        Candidate("pruned_int8", 4.0, GOOD),
        Candidate("pruned_int8_dynamic", 30.0, GOOD),
        Candidate("pruned_fp16", 12.0, GOOD),
    ]
    assert select_fastest(candidates, QualityRule()) == "pruned_int8"


def test_a_faster_candidate_that_misses_the_rule_is_not_kept() -> None:
    candidates = [
        Candidate("pruned", 10.0, GOOD),
        Candidate("pruned_int8", 3.0, BAD),
        Candidate("pruned_fp16", 8.0, GOOD),
    ]
    assert select_fastest(candidates, QualityRule()) == "pruned_fp16"
    loose = QualityRule(min_top1_agreement=0.85, min_cosine_similarity=0.99)
    assert select_fastest(candidates, loose) == "pruned_int8"


def test_the_unquantized_model_wins_when_quantization_does_not_pay() -> None:
    candidates = [
        Candidate("baseline", 5.0, GOOD),
        Candidate("original_int8_dynamic", 40.0, GOOD),
        Candidate("original_fp16", 5.0, GOOD),  # a tie goes to the earlier (unquantized) one
    ]
    assert select_fastest(candidates, QualityRule()) == "baseline"


@pytest.mark.parametrize(
    "candidates",
    [
        [],
        [Candidate("a", 1.0, BAD), Candidate("b", 2.0, BAD)],
        [Candidate("a", 0.0, GOOD)],  # never measured
    ],
)
def test_nothing_is_kept_when_nothing_qualifies(candidates: list[Candidate]) -> None:
    assert select_fastest(candidates, QualityRule()) is None


def test_quality_rule() -> None:
    rule = QualityRule(min_top1_agreement=0.95, min_cosine_similarity=0.99)
    assert rule.met_by(GOOD)
    assert not rule.met_by(BAD)
    assert rule.met_by(Quality(0.95, 0.99, 1.0, 1))  # the floors themselves pass
    assert "0.95" in rule.describe()
    assert "0.99" in rule.describe()
