"""The search's choice among measured candidates: the target and the quality rule, then fidelity."""

from __future__ import annotations

from prunekit_server.measure.quality import Quality
from prunekit_server.search.outcome import CandidateRecord
from prunekit_server.search.run import choose


def _c(name: str, speedup: float, cosine: float, *, meets: bool, faithful: bool = True) -> CandidateRecord:
    return CandidateRecord(
        name=name,
        quantization="none",
        predicted_ms=1.0,
        table_ms=1.0,
        measured_ms=1.0 / speedup,
        measured_speedup=speedup,
        macs=1,
        size_bytes=1,
        quality=Quality(1.0, cosine, 0.0, 8),
        widths=(),
        meets_target=meets,
        faithful=faithful,
    )


def test_the_most_faithful_candidate_meeting_target_and_rule_is_chosen() -> None:
    candidates = [
        _c("fast", 2.6, 0.95, meets=True),
        _c("light", 2.05, 0.99, meets=True),
        _c("slow", 1.5, 0.999, meets=False),
        _c("unfaithful", 2.2, 0.999, meets=True, faithful=False),
    ]
    chosen, met = choose(candidates)
    assert (chosen.name, met) == ("light", True)
    assert [c.name for c in candidates if c.pareto] == ["fast", "unfaithful"]


def test_without_a_hit_the_fastest_faithful_point_is_the_best_found() -> None:
    candidates = [
        _c("a", 1.4, 0.999, meets=False),
        _c("b", 1.7, 0.995, meets=False),
        _c("c", 2.1, 0.5, meets=True, faithful=False),
    ]
    chosen, met = choose(candidates)
    assert (chosen.name, met) == ("b", False)


def test_with_nothing_faithful_the_most_faithful_is_kept() -> None:
    chosen, met = choose(
        [_c("a", 2.0, 0.4, meets=True, faithful=False), _c("b", 1.2, 0.6, meets=False, faithful=False)]
    )
    assert (chosen.name, met) == ("b", False)
    assert chosen.selected


def test_when_fine_tuning_follows_the_candidate_keeping_most_macs_is_chosen() -> None:
    big = _c("big", 2.05, 0.2, meets=True)
    big.macs = 500
    small = _c("small", 2.3, 0.9, meets=True)
    small.macs = 100
    slow = _c("slow", 1.2, 0.99, meets=False)
    slow.macs = 900
    chosen, met = choose([big, small, slow], recovers=True)
    assert (chosen.name, met) == ("big", True)
    assert choose([_c("big", 2.05, 0.2, meets=True), _c("small", 2.3, 0.9, meets=True)])[0].name == "small"
